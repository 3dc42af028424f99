"""The cluster as a struct of arrays: one row per node, one column per GPU slot.

Everything the scorers read lives here as plain numpy arrays, so a decision over
every candidate node is a handful of vectorised operations.  GPU capacity is kept
in milli-GPU (1000 = one whole GPU); nodes with fewer GPUs than the widest node
are padded with slots whose free milli is 0, which no request can use and which
adds nothing to any sum, so scorers need no special case for padding.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from scoring.names import EncodedNames, NameIndex
from scoring.request import PodClass, PodRequest

MILLI_PER_GPU = 1000
MAX_GPUS_PER_NODE = 1024
"""The most GPUs one node may hold: every node gets a column per GPU slot of the
widest, so one node reporting 10^8 (a device plugin's count gone wrong) would take
gigabytes.  Time-slicing replicas and MIG slices stay far below it."""

_STATE_UIDS = itertools.count()
_NAME_INDEX_FROM = 2_000
"""Lists of this many names are looked up at once (:class:`NameIndex`); shorter ones
name by name, which costs less below it (names still encoded, as read from a request,
are looked up at once however many)."""

ON_DEMAND = 0
SPOT = 1

IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]


def is_reclaimable(request: PodRequest) -> bool:
    """A preemptible batch pod: what ``ClusterState.preemptible_milli`` counts."""
    return request.preemptible and request.pod_class is PodClass.BATCH


def name_order(name: str) -> int:
    """A node's place in the stable tie-break order: 63 bits of a hash of its name."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


@dataclass(frozen=True)
class NodeSpec:
    """One node as the outside world describes it (CSV row, Kubernetes Node)."""

    name: str
    cpu_milli: int
    memory_mib: int
    gpu_count: int = 0
    gpu_model: str = ""
    gpu_memory_mib: int = 0
    capacity_type: int = ON_DEMAND
    pool: str = ""
    schedulable: bool = True
    """False while cordoned (Kubernetes ``spec.unschedulable``): no new pod goes there, so
    its free GPUs are nobody's to count on; its pods still hold theirs."""

    def __post_init__(self) -> None:
        if not 0 <= self.gpu_count <= MAX_GPUS_PER_NODE:
            raise ValueError(
                f"node {self.name!r} has {self.gpu_count} GPUs; "
                f"fairpack takes 0 to {MAX_GPUS_PER_NODE} per node"
            )


@dataclass
class ClusterState:
    """Free and total capacity of every node.

    Attributes
    ----------
    names : list of str, length n_nodes
    models : list of str
        GPU model table; ``gpu_model`` indexes into it, -1 for a node without GPUs.
    gpu_model : ndarray of shape (n_nodes,)
    gpu_memory_mib : ndarray of shape (n_nodes,)
        Memory of one GPU on the node (0 when unknown).
    gpu_count : ndarray of shape (n_nodes,)
    free_milli : ndarray of shape (n_nodes, max_gpus)
        Free milli-GPU per GPU slot; padded slots are 0.
    cpu_free_milli, cpu_capacity_milli : ndarray of shape (n_nodes,)
    memory_free_mib, memory_capacity_mib : ndarray of shape (n_nodes,)
    capacity_type : ndarray of shape (n_nodes,)
        ``ON_DEMAND`` or ``SPOT``.
    tie_break : ndarray of shape (n_nodes,)
        A fixed node order for equally good nodes (lower first): a hash of the
        node's name, so every replica and every restart orders nodes alike.
    row_version : ndarray of shape (n_nodes,)
        Bumped on every change of a row, so caches derived from a row (fragment
        aggregates) can tell which rows went stale without being told.
    preemptible_milli : ndarray of shape (n_nodes,)
        GPU milli held on the node by preemptible batch pods: what a reclaim can
        take back there (the class terms read it).
    schedulable : ndarray of bool, shape (n_nodes,)
        False for a cordoned node (``NodeSpec.schedulable``): what is free there is not
        free for new pods (holds, free and stranded GPUs leave it out); a node
        kube-scheduler offers anyway (a pod that tolerates the cordon) is weighed as any.
    over_share_teams : teams holding more than their deserved share, as the
        caller last computed it (``scoring.fairshare``); empty when fairness is off.
    """

    names: list[str]
    models: list[str]
    gpu_model: IntArray
    gpu_memory_mib: IntArray
    gpu_count: IntArray
    free_milli: IntArray
    cpu_free_milli: IntArray
    cpu_capacity_milli: IntArray
    memory_free_mib: IntArray
    memory_capacity_mib: IntArray
    capacity_type: IntArray
    pools: list[str] = field(default_factory=list)
    row_version: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    tie_break: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    preemptible_milli: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    schedulable: BoolArray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    over_share_teams: frozenset[str] = frozenset()
    uid: int = field(default_factory=lambda: next(_STATE_UIDS), repr=False)
    """Identifies this state object for derived caches (never reused, unlike ``id``)."""
    _row_of: dict[str, int] = field(default_factory=dict, repr=False)
    _model_masks: dict[frozenset[str], BoolArray] = field(default_factory=dict, repr=False)
    _names: list[NameIndex | None] = field(default_factory=list, repr=False)
    """The :class:`NameIndex` of ``names``, once a long list asked for it (shared by copies)."""

    @classmethod
    def from_nodes(cls, nodes: Sequence[NodeSpec], max_gpus: int | None = None) -> ClusterState:
        widest = max((node.gpu_count for node in nodes), default=0)
        max_gpus = max(widest, max_gpus or 0, 1)
        models = sorted({node.gpu_model for node in nodes if node.gpu_model})
        model_id = {model: i for i, model in enumerate(models)}
        gpu_count = np.array([node.gpu_count for node in nodes], dtype=np.int64)
        slots = np.arange(max_gpus)
        free_milli = np.where(slots[None, :] < gpu_count[:, None], MILLI_PER_GPU, 0)
        cpu = np.array([node.cpu_milli for node in nodes], dtype=np.int64)
        memory = np.array([node.memory_mib for node in nodes], dtype=np.int64)
        state = cls(
            names=[node.name for node in nodes],
            models=models,
            gpu_model=np.array(
                [model_id.get(node.gpu_model, -1) for node in nodes], dtype=np.int64
            ),
            gpu_memory_mib=np.array([node.gpu_memory_mib for node in nodes], dtype=np.int64),
            gpu_count=gpu_count,
            free_milli=free_milli.astype(np.int64).reshape(len(nodes), max_gpus),
            cpu_free_milli=cpu.copy(),
            cpu_capacity_milli=cpu,
            memory_free_mib=memory.copy(),
            memory_capacity_mib=memory,
            capacity_type=np.array([node.capacity_type for node in nodes], dtype=np.int64),
            pools=[node.pool for node in nodes],
        )
        state.row_version = np.zeros(len(nodes), dtype=np.int64)
        state.tie_break = np.array([name_order(node.name) for node in nodes], dtype=np.int64)
        state.preemptible_milli = np.zeros(len(nodes), dtype=np.int64)
        state.schedulable = np.array([node.schedulable for node in nodes], dtype=bool)
        state._row_of = {name: row for row, name in enumerate(state.names)}
        return state

    @property
    def n_nodes(self) -> int:
        return len(self.names)

    @property
    def max_gpus(self) -> int:
        return int(self.free_milli.shape[1])

    def row_of(self, name: str) -> int | None:
        return self._row_of.get(name)

    @property
    def row_by_name(self) -> Mapping[str, int]:
        """Each node's row by its name (read only)."""
        return self._row_of

    def rows_of(self, names: Iterable[str]) -> IntArray:
        """Rows of the named nodes; unknown names are left out."""
        row_of = self._row_of
        if isinstance(names, EncodedNames) or (
            isinstance(names, list) and len(names) >= _NAME_INDEX_FROM
        ):
            if not self._names:
                self._names.append(NameIndex.of(self.names))
            index = self._names[0]
            encoded = None if index is None else EncodedNames.join(names)
            rows = None if index is None or encoded is None else index.rows_of(encoded)
            if rows is not None:
                return rows
        if isinstance(names, EncodedNames):
            names = names.decoded()
        if isinstance(names, list):
            try:  # every name known (the usual case): one C-level pass
                return np.fromiter(map(row_of.__getitem__, names), np.int64, count=len(names))
            except KeyError:
                pass
        return np.fromiter(
            (row for name in names if (row := row_of.get(name)) is not None), dtype=np.int64
        )

    def model_mask(self, allowed_models: frozenset[str]) -> BoolArray:
        """Nodes whose GPU model is allowed (all nodes when nothing is required)."""
        mask = self._model_masks.get(allowed_models)
        if mask is None:
            if allowed_models:
                ids = [i for i, model in enumerate(self.models) if model in allowed_models]
                mask = np.isin(self.gpu_model, ids)
            else:
                mask = np.ones(self.n_nodes, dtype=bool)
            self._model_masks[allowed_models] = mask
        return mask

    @property
    def total_gpu_milli(self) -> int:
        return int(self.gpu_count.sum()) * MILLI_PER_GPU

    @property
    def used_gpu_milli(self) -> int:
        return self.total_gpu_milli - int(self.free_milli.sum())

    def copy(self) -> ClusterState:
        clone = ClusterState(
            names=self.names,
            models=self.models,
            gpu_model=self.gpu_model,
            gpu_memory_mib=self.gpu_memory_mib,
            gpu_count=self.gpu_count,
            free_milli=self.free_milli.copy(),
            cpu_free_milli=self.cpu_free_milli.copy(),
            cpu_capacity_milli=self.cpu_capacity_milli,
            memory_free_mib=self.memory_free_mib.copy(),
            memory_capacity_mib=self.memory_capacity_mib,
            capacity_type=self.capacity_type,
            pools=self.pools,
            row_version=self.row_version.copy(),
            tie_break=self.tie_break,
            preemptible_milli=self.preemptible_milli.copy(),
            schedulable=self.schedulable,
            over_share_teams=self.over_share_teams,
        )
        clone._row_of = self._row_of
        clone._model_masks = self._model_masks
        clone._names = self._names
        return clone

    def place(self, row: int, request: PodRequest, gpus: Sequence[int]) -> None:
        """Take ``request`` out of node ``row``, its GPU share from the slots ``gpus``.

        The caller has checked feasibility; this only asserts the invariants that
        would otherwise corrupt the view silently.
        """
        self._check_slots(row, request, gpus)
        self.cpu_free_milli[row] -= request.cpu_milli
        self.memory_free_mib[row] -= request.memory_mib
        if request.gpu_count:
            self.free_milli[row, list(gpus)] -= request.milli_per_gpu
            if is_reclaimable(request):
                self.preemptible_milli[row] += request.gpu_milli
        self.row_version[row] += 1
        if (
            self.cpu_free_milli[row] < 0
            or self.memory_free_mib[row] < 0
            or (request.gpu_count and self.free_milli[row, list(gpus)].min() < 0)
        ):
            self.release(row, request, gpus)
            raise ValueError(f"{request} does not fit node {self.names[row]} on GPUs {list(gpus)}")

    def _check_slots(self, row: int, request: PodRequest, gpus: Sequence[int]) -> None:
        # numpy's fancy-index "-=" applies a repeated slot once, and -1 means the
        # last slot: both would corrupt the view without a word.
        slots = list(gpus)
        if len(slots) != request.gpu_count or len(set(slots)) != len(slots):
            raise ValueError(f"request needs {request.gpu_count} distinct GPUs, got slots {slots}")
        if slots and (min(slots) < 0 or max(slots) >= int(self.gpu_count[row])):
            raise ValueError(
                f"node {self.names[row]} has GPU slots 0..{self.gpu_count[row] - 1}, got {slots}"
            )

    def release(self, row: int, request: PodRequest, gpus: Sequence[int]) -> None:
        """Undo :meth:`place` exactly."""
        self._check_slots(row, request, gpus)
        self.cpu_free_milli[row] += request.cpu_milli
        self.memory_free_mib[row] += request.memory_mib
        if request.gpu_count:
            self.free_milli[row, list(gpus)] += request.milli_per_gpu
            if is_reclaimable(request):
                self.preemptible_milli[row] -= request.gpu_milli
        self.row_version[row] += 1
