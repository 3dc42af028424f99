"""GPU fragmentation against a mix of pod shapes (FGD, Weng et al., ATC'23).

For one pod shape, a node's fragment is the free GPU milli that this shape could
not use there:

* the shape fits (GPU model allowed, enough GPUs with at least the shape's
  milli free, enough free CPU): the free milli on GPUs with less than the
  shape's milli free;
* otherwise, and always for a CPU-only shape: all of the node's free GPU milli.

That is FGD's measure, and it asks only whether *one* more pod of the shape
fits.  A GPU-sharing shape packs several copies onto one GPU, each with its own
CPU: a node whose GPUs hold twelve 0.3-GPU shares but whose CPU feeds three
passes that test, yet nine shares are as lost as dust.  With ``cpu_stranding``
(the fairpack policy's default) the fragment of a sharing shape that fits also
counts the GPU milli that copies of it could take but the node's CPU cannot
feed:

    copies_gpu = sum over GPUs of floor(free / milli)
    copies_cpu = floor(free CPU / the shape's CPU)
    stranded   = max(0, copies_gpu - copies_cpu) x milli

A shape that fits has CPU for at least one copy, so stranded never exceeds
the free milli less one copy's.  A placement that eats the CPU next to free
GPU capacity then shows the shares it strands.

Whole-GPU shapes keep FGD's measure.  A fully free GPU that the CPU cannot feed
for a whole-GPU pod still takes sharing pods (whose stranding is counted above),
so calling it lost counts it twice, and it steers placements: breaking such a
GPU with a sharing pod then seems to *remove* fragment, which favours opening
fresh GPUs (leaving slivers) over filling partly used ones, and CPU-heavy
whole-GPU pods are drawn to the idle nodes richest in CPU, which the rare shapes
needing that CPU cannot spare (measured on the Alibaba traces: every one of the
16 did better without it).

A node's fragment F is the popularity-weighted sum over shapes.  A placement is
good when it makes F grow little (or shrink).

Computing F from scratch costs O(shapes x GPUs) per node.  Scoring a placement
changes only the GPUs the pod takes, so :class:`FragmentAggregates` keeps, per
node and shape, the count of GPUs at or above the shape's milli, the free
milli below it and the copies a sharing shape's GPUs hold; the fragment after
a hypothetical placement follows from those in O(shapes), for every candidate
at once.
"""

from __future__ import annotations

import copy
import dataclasses
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
from numpy.typing import NDArray

from scoring.state import MILLI_PER_GPU, BoolArray, ClusterState, IntArray

FloatArray = NDArray[np.float64]


ShapeKey = tuple[int, int, int, frozenset[str], int]
"""A pod shape: ``(cpu_milli, milli_per_gpu, gpu_count, allowed_models, min_gpu_memory_mib)``."""
GrowthKey = tuple[int, int, int]
"""A placement for :meth:`FragmentAggregates.growth`: ``(gpu_count, milli_per_gpu, cpu_milli)``."""
_GROWTH_KEYS = 32
"""Placements whose growth per node is kept (least recently used beyond)."""
_GROWTH_KEYS_BY_SHAPE = 8
"""Of those, the ones whose fragments per shape are kept (``keep_growth_by_shape``)."""
_COLUMNS_PAY_PER_SHAPE = 200
"""Rows per shape from which a weighted row sum is faster a column at a time (measured)."""
_INT32_MAX = int(np.iinfo(np.int32).max)
_FLOAT_DIVISION_FROM = 4096
"""Cells (rows x shapes) from which dividing by reciprocals beats integer division (measured)."""


@dataclass(frozen=True)
class ShapeTable:
    """Pod shapes and their popularity.

    cpu_milli, milli_per_gpu, gpu_count : ndarray of shape (n_shapes,)
        ``milli_per_gpu`` is 0 for a CPU-only shape.
    allowed_models : tuple of frozenset, length n_shapes (empty = any model)
    weight : ndarray of shape (n_shapes,), summing to 1
    min_gpu_memory_mib : ndarray of shape (n_shapes,), the per-GPU memory a shape
        needs (0 = any): a 40 GiB shape never fits a 24 GiB GPU, so its free GPUs
        are fragment to it.
    """

    cpu_milli: IntArray
    milli_per_gpu: IntArray
    gpu_count: IntArray
    allowed_models: tuple[frozenset[str], ...]
    weight: FloatArray
    min_gpu_memory_mib: IntArray

    @classmethod
    def from_rows(
        cls,
        rows: Sequence[ShapeKey | tuple[int, int, int, frozenset[str]]],
        weights: Sequence[float],
    ) -> ShapeTable:
        """Build from :data:`ShapeKey` rows (without the memory minimum: 0)."""
        total = float(sum(weights))
        if not rows or total <= 0:
            raise ValueError("a shape table needs at least one shape with positive weight")
        return cls(
            cpu_milli=np.array([row[0] for row in rows], dtype=np.int64),
            milli_per_gpu=np.array([row[1] for row in rows], dtype=np.int64),
            # int32 like the counts it is compared with; a shape asking for more GPUs
            # than that (a pod's quantity may say 1e18) fits no node either way.
            gpu_count=np.array([min(row[2], _INT32_MAX) for row in rows], dtype=np.int32),
            allowed_models=tuple(row[3] for row in rows),
            weight=np.asarray(weights, dtype=np.float64) / total,
            min_gpu_memory_mib=np.array(
                [row[4] if len(row) > 4 else 0 for row in rows], dtype=np.int64
            ),
        )

    @property
    def n_shapes(self) -> int:
        return len(self.weight)

    def keys(self) -> list[ShapeKey]:
        """Each shape as a :data:`ShapeKey`."""
        return list(
            zip(
                self.cpu_milli.tolist(),
                self.milli_per_gpu.tolist(),
                self.gpu_count.tolist(),
                self.allowed_models,
                self.min_gpu_memory_mib.tolist(),
                strict=True,
            )
        )

    @cached_property
    def stranding_constants(self) -> tuple[IntArray, IntArray, IntArray]:
        """Per shape: CPU divisor, CPU bonus, milli per copy.

        Only a GPU-sharing shape with CPU can strand GPUs (see the module
        docstring); any other shape gets divisor 1 and a bonus of 2**40 copies, far
        above any GPU copies, so it is never short of CPU (its GPU copies are 0
        anyway: :func:`_copies_per_gpu`).  Computed once per table, not per decision.
        """
        cpu = self.cpu_milli
        strands = (cpu > 0) & (self.milli_per_gpu > 0) & (self.milli_per_gpu < MILLI_PER_GPU)
        return (
            np.where(strands, cpu, 1),
            np.where(strands, 0, 1 << 40),
            self.milli_per_gpu,
        )

    @cached_property
    def stranding_reciprocals(self) -> tuple[FloatArray, FloatArray, FloatArray]:
        """:attr:`stranding_constants` in float64: 1 / the CPU divisor, the bonus, milli."""
        cpu_divisor, cpu_bonus, milli = self.stranding_constants
        return (
            1.0 / cpu_divisor,
            cpu_bonus.astype(np.float64),
            milli.astype(np.float64),
        )

    def model_ok(self, state: ClusterState) -> BoolArray:
        """Whether each node's GPUs suit each shape (model and memory), shape (n_nodes, n_shapes)."""
        models = np.stack([state.model_mask(models) for models in self.allowed_models], axis=1)
        return models & (state.gpu_memory_mib[:, None] >= self.min_gpu_memory_mib[None, :])


def _copies_per_gpu(free_milli: IntArray, shape_milli: IntArray) -> IntArray:
    """Shares of each sharing shape that a GPU with ``free_milli`` free could hold.

    0 for whole-GPU and CPU-only shapes: their copies follow from the count of
    fully free GPUs.  Broadcasts ``free_milli[..., None]`` against the shapes.
    """
    sharing = (shape_milli > 0) & (shape_milli < MILLI_PER_GPU)
    return np.where(sharing, free_milli[..., None] // np.maximum(shape_milli, 1), 0)


def _aggregate(free_milli: IntArray, shape_milli: IntArray) -> tuple[IntArray, IntArray, IntArray]:
    """Per row and shape: GPUs with free >= shape milli, free milli below it, and copies.

    free_milli : ndarray of shape (n_rows, max_gpus)
    shape_milli : ndarray of shape (n_shapes,)
    Returns three ndarrays of shape (n_rows, n_shapes); copies as
    :func:`_copies_per_gpu`, summed over the row's GPUs.
    """
    at_least = free_milli[:, None, :] >= shape_milli[None, :, None]
    count = at_least.sum(axis=2)
    below = np.where(at_least, 0, free_milli[:, None, :]).sum(axis=2)
    copies = _copies_per_gpu(free_milli, shape_milli).sum(axis=1)
    return count, below, copies


def _floor_div(numerator: NDArray[np.integer], reciprocal: FloatArray) -> FloatArray:
    """``numerator // divisor`` for integers below 2**31, given ``1 / divisor``.

    Exact: the true quotient of ``numerator + 0.5`` lies at least ``0.5 / divisor``
    from an integer, far beyond float64's rounding of the product.  About twice as
    fast as integer division (which numpy does not vectorise) on large arrays;
    slower on small ones, where the extra calls dominate.
    """
    return np.floor((numerator + 0.5) * reciprocal)


def _stranded(
    shapes: ShapeTable, cpu_free_milli: IntArray, share_copies: IntArray
) -> IntArray | FloatArray:
    """max(0, shares the GPUs hold - copies the CPU feeds) x milli, per row and shape.

    0 for whole-GPU and CPU-only shapes.  Whole numbers either way: in int64
    below ``_FLOAT_DIVISION_FROM`` cells, in float64 (exact) from there on.
    """
    cpu_divisor, cpu_bonus, milli = shapes.stranding_constants
    if share_copies.size < _FLOAT_DIVISION_FROM:
        cpu_copies = cpu_free_milli[:, None] // cpu_divisor + cpu_bonus
        return np.maximum(share_copies - cpu_copies, 0) * milli
    cpu_reciprocal, float_bonus, float_milli = shapes.stranding_reciprocals
    by_cpu = _floor_div(cpu_free_milli[:, None], cpu_reciprocal)
    by_cpu += float_bonus
    stranded: FloatArray = np.subtract(share_copies, by_cpu, out=by_cpu)
    np.maximum(stranded, 0.0, out=stranded)
    stranded *= float_milli
    return stranded


def _weighted_row_sum(values: NDArray[Any], weight: FloatArray) -> FloatArray:
    """``(values * weight).sum(axis=1)``, bit for bit, a column at a time.

    numpy sums a short row left to right, and a row of 8 to 128 in eight
    interleaved partial sums combined pairwise; the same order over columns gives
    the same bits at a fraction of the cost (a reduction over a short axis is
    slow).  Not a matmul: BLAS may sum in another order for another batch size,
    and FGD's integer score flips on the last bit when a node's fragment does not
    change.
    """
    n_rows, n_shapes = values.shape
    # (numpy sums a Fortran-ordered array left to right instead; callers pass C order.)
    # Column by column pays for its calls only over many rows of few shapes; numpy
    # splits rows beyond 128 recursively.
    if n_rows < _COLUMNS_PAY_PER_SHAPE * n_shapes or n_shapes > 128 or n_shapes == 0:
        return (values * weight).sum(axis=1)  # type: ignore[no-any-return]
    columns = values.T
    total: FloatArray
    if n_shapes < 8:
        total = columns[0] * weight[0]
        for j in range(1, n_shapes):
            total += columns[j] * weight[j]
        return total
    partial = [columns[j] * weight[j] for j in range(8)]
    j = 8
    while j + 8 <= n_shapes:
        for k in range(8):
            partial[k] += columns[j + k] * weight[j + k]
        j += 8
    total = ((partial[0] + partial[1]) + (partial[2] + partial[3])) + (
        (partial[4] + partial[5]) + (partial[6] + partial[7])
    )
    for k in range(j, n_shapes):
        total += columns[k] * weight[k]
    return total


def _fragment(
    shapes: ShapeTable,
    gpu_shape_ok: BoolArray,
    cpu_free_milli: IntArray,
    count_at_least: IntArray,
    sum_below: IntArray,
    share_copies: IntArray | None,
    total_free: IntArray,
) -> FloatArray:
    """F per row from its aggregates; all arrays are per row (and per shape).

    ``gpu_shape_ok`` is the model check, already false for CPU-only shapes.
    ``share_copies`` None is FGD's measure; otherwise CPU-stranded GPUs count.
    Fragments are whole numbers of milli, exact in float64.
    """
    return _weighted_row_sum(
        _fragment_by_shape(
            shapes,
            gpu_shape_ok,
            cpu_free_milli,
            count_at_least,
            sum_below,
            share_copies,
            total_free,
        ),
        shapes.weight,
    )


def _fragment_by_shape(
    shapes: ShapeTable,
    gpu_shape_ok: BoolArray,
    cpu_free_milli: IntArray,
    count_at_least: IntArray,
    sum_below: IntArray,
    share_copies: IntArray | None,
    total_free: IntArray,
) -> IntArray | FloatArray:
    """Each row's fragment measured against each shape, unweighted (:func:`_fragment`
    weighs them by popularity): whole milli, as integers or as exact floats."""
    fits = count_at_least >= shapes.gpu_count
    fits &= gpu_shape_ok
    fits &= cpu_free_milli[:, None] >= shapes.cpu_milli
    if share_copies is None:
        return np.where(fits, sum_below, total_free[:, None])
    stranded = _stranded(shapes, cpu_free_milli, share_copies)
    stranded += sum_below
    return np.where(fits, stranded, total_free[:, None])


def node_fragment(
    state: ClusterState, rows: IntArray, shapes: ShapeTable, cpu_stranding: bool = False
) -> FloatArray:
    """F of each node in ``rows``, computed from scratch (the reference path)."""
    free = state.free_milli[rows]
    count, below, copies = _aggregate(free, shapes.milli_per_gpu)
    return _fragment(
        shapes,
        shapes.model_ok(state)[rows] & (shapes.milli_per_gpu > 0),
        state.cpu_free_milli[rows],
        count,
        below,
        copies if cpu_stranding else None,
        free.sum(axis=1),
    )


@dataclass
class _Growth:
    """One placement's growth per node (:meth:`FragmentAggregates.growth`): the values,
    the node versions they were taken at, the weights they were summed with, and (with
    ``keep_growth_by_shape``) each node's fragment per shape after the placement."""

    values: FloatArray
    versions: IntArray
    after: IntArray | None
    epoch: int


@dataclass
class FragmentAggregates:
    """Per-node fragment aggregates for one shape table, refreshed lazily.

    Rows are recomputed only when their ``row_version`` in the state moved, so a
    simulator or a live view pays O(changed rows) per decision.  ``cpu_stranding``
    adds the GPUs that the node's CPU cannot feed (see the module docstring);
    without it, F is FGD's.
    """

    shapes: ShapeTable
    cpu_stranding: bool = False
    keep_growth_by_shape: bool = False
    """Also keep each placement's fragments per shape after it, so that new weights for
    the same shapes only take sums again (:meth:`reweighted`).  Costs a (nodes x shapes)
    table per placement kept: worth it in a service that sees a few shapes over and
    over, not in a trace replay where most placements come once."""
    gpu_shape_ok: BoolArray = field(init=False)
    count_at_least: IntArray = field(init=False)
    sum_below: IntArray = field(init=False)
    share_copies: IntArray = field(init=False)
    total_free: IntArray = field(init=False)
    fragment_by_shape: IntArray = field(init=False)
    """Each row's fragment against each shape, unweighted (whole milli, int32): a table
    of the same shapes with new weights sums these again instead of recomputing them."""
    fragment: FloatArray = field(init=False)
    _at_least_table: IntArray = field(init=False)
    _below_table: IntArray = field(init=False)
    _copies_table: IntArray = field(init=False)
    _row_tables: IntArray = field(init=False)
    _versions: IntArray = field(init=False)
    _state_uid: int = field(init=False, default=-1)
    _fragment_stale: bool = field(init=False, default=False)
    _weights_epoch: int = field(init=False, default=0)
    _growths: OrderedDict[GrowthKey, _Growth] = field(init=False, default_factory=OrderedDict)

    def __post_init__(self) -> None:
        # Per free-milli value v and shape s: whether v >= the shape's milli, and
        # what v adds to the free milli below it, and the shares it holds.  A
        # hypothetical change of one GPU is then row lookups instead of
        # comparisons per candidate.
        free = np.arange(MILLI_PER_GPU + 1, dtype=np.int64)
        values = free[:, None]
        at_least = values >= self.shapes.milli_per_gpu[None, :]
        self._at_least_table = at_least.astype(np.int32)
        self._below_table = np.where(at_least, 0, values).astype(np.int32)
        self._copies_table = _copies_per_gpu(free, self.shapes.milli_per_gpu).astype(np.int32)
        # All three per value, for recomputing whole rows with one gather.
        self._row_tables = np.stack(
            [self._at_least_table, self._below_table, self._copies_table], axis=1
        )

    def refresh(self, state: ClusterState) -> None:
        if self._state_uid != state.uid or len(self._versions) != state.n_nodes:
            self._state_uid = state.uid
            self.gpu_shape_ok = self.shapes.model_ok(state) & (self.shapes.milli_per_gpu > 0)
            # int32 (GPU milli per node fits easily): the per-candidate arrays are
            # (candidates x shapes), and halving their width halves the hot path.
            self.count_at_least = np.zeros((state.n_nodes, self.shapes.n_shapes), np.int32)
            self.sum_below = np.zeros_like(self.count_at_least)
            self.share_copies = np.zeros_like(self.count_at_least)
            self.total_free = np.zeros(state.n_nodes, np.int32)
            self.fragment_by_shape = np.zeros_like(self.count_at_least)
            self.fragment = np.zeros(state.n_nodes)
            self._versions = np.full(state.n_nodes, -1, dtype=np.int64)
            self._growths = OrderedDict()
        stale = np.flatnonzero(self._versions != state.row_version)
        if len(stale):
            self._refresh_rows(state, stale)
        if self._fragment_stale:
            # The same sums of the same numbers as computing them anew: the same bits.
            self.fragment = _weighted_row_sum(self.fragment_by_shape, self.shapes.weight)
            self._fragment_stale = False

    def reweighted(self, table: ShapeTable) -> FragmentAggregates | None:
        """These aggregates under ``table``'s weights, if it has the same shapes.

        An online shape mix changes its weights far more often than its set of
        shapes; the per-node counts and fragments per shape stay valid then (and
        those after each placement, with ``keep_growth_by_shape``), and only their
        weighted sums are taken again.  None when the shapes differ (build anew).
        """
        weight_of = dict(zip(table.keys(), table.weight.tolist(), strict=True))
        keys = self.shapes.keys()
        if len(weight_of) != len(keys) or any(key not in weight_of for key in keys):
            return None
        clone = copy.copy(self)
        clone.shapes = dataclasses.replace(
            self.shapes, weight=np.array([weight_of[key] for key in keys])
        )
        clone._fragment_stale = True
        clone._weights_epoch = self._weights_epoch + 1
        if self._state_uid >= 0:
            # Both may be refreshed from here on (the service builds the next table while
            # this one is in force): the per-node counts they share are the same numbers
            # for the same row version, written again by whichever is behind, but F and
            # which rows are current are each their own.
            clone._versions = self._versions.copy()
            clone.fragment = self.fragment.copy()
        # Growths move with F: summed again on their next use where kept per shape, else
        # computed again. Each its own values and versions (the fragments per shape after
        # a placement are the same numbers for both): the two may serve in turn.
        clone._growths = OrderedDict(
            (key, _Growth(growth.values.copy(), growth.versions.copy(), growth.after, growth.epoch))
            for key, growth in self._growths.items()
            if growth.after is not None
        )
        return clone

    def _refresh_rows(self, state: ClusterState, stale: IntArray) -> None:
        free = state.free_milli[stale]
        # (rows, GPUs, 3, shapes) summed over GPUs: the same sums as _aggregate.  The
        # tables are indexed by free milli, which ClusterState.place/release keep in
        # 0..MILLI_PER_GPU (they refuse anything else).
        count, below, copies = self._row_tables[free].sum(axis=1, dtype=np.int32).transpose(1, 0, 2)
        self.count_at_least[stale] = count
        self.sum_below[stale] = below
        self.share_copies[stale] = copies
        self.total_free[stale] = free.sum(axis=1)
        by_shape = _fragment_by_shape(
            self.shapes,
            self.gpu_shape_ok[stale],
            state.cpu_free_milli[stale],
            count,
            below,
            copies if self.cpu_stranding else None,
            self.total_free[stale],
        )
        self.fragment_by_shape[stale] = by_shape
        self.fragment[stale] = _weighted_row_sum(by_shape, self.shapes.weight)
        self._versions[stale] = state.row_version[stale]

    def fragment_after(
        self,
        state: ClusterState,
        rows: IntArray,
        free_before: IntArray | int,
        free_after: IntArray | int,
        gpus_changed: int,
        cpu_milli: int,
    ) -> FloatArray:
        """F of each candidate after a hypothetical placement.

        Candidate ``i`` takes ``gpus_changed`` GPUs of node ``rows[i]`` from
        ``free_before`` to ``free_after`` milli each (per candidate arrays, or one
        value for all), and ``cpu_milli`` CPU.  Call :meth:`refresh` first.

        rows : ndarray of shape (n_candidates,)
        """
        return _weighted_row_sum(
            self._fragment_after_by_shape(
                state, rows, free_before, free_after, gpus_changed, cpu_milli
            ),
            self.shapes.weight,
        )

    def _fragment_after_by_shape(
        self,
        state: ClusterState,
        rows: IntArray,
        free_before: IntArray | int,
        free_after: IntArray | int,
        gpus_changed: int,
        cpu_milli: int,
    ) -> IntArray | FloatArray:
        """:meth:`fragment_after` per shape, unweighted."""
        # np.take: several times faster than fancy indexing for rows of a 2-d array.
        count = np.take(self.count_at_least, rows, axis=0)
        below = np.take(self.sum_below, rows, axis=0)
        copies = np.take(self.share_copies, rows, axis=0) if self.cpu_stranding else None
        total = self.total_free[rows]
        if gpus_changed:
            count = count + gpus_changed * (
                self._at_least_table[free_after] - self._at_least_table[free_before]
            )
            below = below + gpus_changed * (
                self._below_table[free_after] - self._below_table[free_before]
            )
            if copies is not None:
                copies = copies + gpus_changed * (
                    self._copies_table[free_after] - self._copies_table[free_before]
                )
            taken = gpus_changed * (np.asarray(free_before) - np.asarray(free_after))
            total = total - np.asarray(taken, dtype=np.int32)
        return _fragment_by_shape(
            self.shapes,
            np.take(self.gpu_shape_ok, rows, axis=0),
            state.cpu_free_milli[rows] - cpu_milli,
            count,
            below,
            copies,
            total,
        )

    def growth(
        self,
        state: ClusterState,
        rows: IntArray,
        key: GrowthKey,
        free_before: IntArray | int,
        free_after: IntArray | int,
        gpus_changed: int,
        cpu_milli: int,
    ) -> FloatArray:
        """F after minus F before of each candidate, as :meth:`fragment_after` takes it.

        ``key`` names the placement: every argument but ``rows`` must follow from
        it and from each row's state.  A node's growth for a pod shape changes only
        with the node, so it is kept per key and recomputed for the rows whose
        version moved; kube-scheduler sees the same few shapes (a Deployment's
        replicas, a Job's workers) over a cluster where a decision changes one node.
        Row by row the same arithmetic, so the same bits.  Call :meth:`refresh` first.
        """
        cached = self._growths.get(key)
        if cached is None:
            cached = _Growth(
                np.zeros(state.n_nodes),
                np.full(state.n_nodes, -1, dtype=np.int64),
                np.zeros((state.n_nodes, self.shapes.n_shapes), dtype=np.int32)
                if self.keep_growth_by_shape
                else None,
                self._weights_epoch,
            )
            self._growths[key] = cached
            if len(self._growths) > _GROWTH_KEYS:
                self._growths.popitem(last=False)
            if self.keep_growth_by_shape:
                kept = [g for g in self._growths.values() if g.after is not None]
                for growth in kept[: max(0, len(kept) - _GROWTH_KEYS_BY_SHAPE)]:
                    growth.after = None  # the least recently used: memory stays bounded
        else:
            self._growths.move_to_end(key)
        values, versions, after = cached.values, cached.versions, cached.after
        if cached.epoch != self._weights_epoch:
            # New weights for the same shapes: every node known here is summed again, or
            # computed again where the fragments per shape were not kept.
            if after is None:
                versions[:] = -1
            else:
                known = np.flatnonzero(versions >= 0)
                values[known] = _weighted_row_sum(after[known], self.shapes.weight)
                values[known] -= self.fragment[known]
            cached.epoch = self._weights_epoch
        stale = np.flatnonzero(versions[rows] != state.row_version[rows])
        if len(stale) == len(rows):
            stale_rows, before, after_free = rows, free_before, free_after
        elif len(stale):
            stale_rows = rows[stale]
            before = free_before[stale] if isinstance(free_before, np.ndarray) else free_before
            after_free = free_after[stale] if isinstance(free_after, np.ndarray) else free_after
        else:
            return values[rows]
        by_shape = self._fragment_after_by_shape(
            state, stale_rows, before, after_free, gpus_changed, cpu_milli
        )
        if after is not None:
            after[stale_rows] = by_shape
        values[stale_rows] = (
            _weighted_row_sum(by_shape, self.shapes.weight) - self.fragment[stale_rows]
        )
        versions[stale_rows] = state.row_version[stale_rows]
        return values[rows]
