"""``evaluate`` again for another pod of a shape, redone only on the rows that changed.

Between two pods of one shape few nodes change: the one the last pod went to, and
the few the watch reported.  :class:`IncrementalEvaluator` keeps, per request, each
check's pass column and each term's values over every node of the state, with the
row versions they were taken at; the next call evaluates only the rows whose
version moved, patches them in, and reads the answer at the nodes it asks about, in
its order (kube-scheduler's parallel filters find the feasible nodes in another
order every cycle, and fewer as nodes fill).  The answer equals ``evaluate``'s over
those nodes: a term's value for a node is a function of that node's row alone (the
tests hold every term to it), except for memory fit, which divides by the smallest
GPU memory among the candidates that fit: a count of the nodes that fit per memory
size tells when the cluster's changes, and the term is taken again over every node
only then; where the nodes asked about have another smallest size, their scores are
taken again at the read.

Evaluations handed out are never written to afterwards (patches go to copies),
so a caller may keep one.

A decision reads little of an evaluation: which candidates fit, and their weighted
score.  :meth:`IncrementalEvaluator.score` patches those at once and the rest (each
check's column, each term's, the :class:`Evaluation` itself) when first asked for,
from inputs fixed at the call.  What the service shows of an answer (the count of
nodes failing each check, the terms of the top few) is read without it, and it
completes an entry after an answer only once enough nodes changed since.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

from scoring.candidates import Candidates
from scoring.feasibility import CheckKind, Feasibility, check_feasibility, failed_counts
from scoring.fragmentation import FloatArray, FragmentAggregates
from scoring.gpus import tightest_gpu
from scoring.placement import Evaluation, total_weight, weigh, weighted_mean
from scoring.policy import PolicyConfig
from scoring.request import PodClass, PodRequest
from scoring.state import BoolArray, ClusterState, IntArray
from scoring.terms import POD_FIELDS, SHAPE_TERMS, TERMS, reads_over_share
from scoring.terms.memory_fit import fit_to

MEMORY_FIT = "memory_fit"
CANDIDATE_SET_TERMS = frozenset({MEMORY_FIT})
"""Terms whose value for a node depends on the other candidates (memory fit divides
by the smallest candidate GPU): kept by :class:`_MemoryFloor`, not patched row by row."""

REDO_SHARE = 0.25
"""With more than this share of the nodes changed, evaluate them all afresh."""


@dataclass(frozen=True, eq=False)
class _Taken:
    """What one request's evaluation over every candidate holds for a decision, and
    what it depends on."""

    state: ClusterState
    request: PodRequest
    """The scoring key the evaluation was taken for."""
    rows: IntArray
    policy: PolicyConfig
    fragments: Callable[[], FragmentAggregates | None]
    """The shape aggregates the columns were taken with, held weakly: a replaced mix
    is no longer needed (a dead reference matches no live one)."""
    over_share: frozenset[str] | None
    """The over-share teams, when a weighted term reads them."""
    versions: IntArray
    mask: BoolArray
    score: FloatArray
    """Each candidate's weighted score, the Evaluation's where ``mask`` holds
    (meaningless elsewhere)."""
    floor: _MemoryFloor | None
    """What memory fit reads of the candidates (None: it is not weighted)."""

    def serves(
        self,
        state: ClusterState,
        rows: IntArray,
        policy: PolicyConfig,
    ) -> bool:
        return (
            self.state is state
            and self.rows is rows
            and self.policy is policy
            and self.over_share == _over_share(state, policy)
        )


@dataclass(frozen=True, eq=False)
class _Columns(_Taken):
    """A request's whole evaluation spread over every candidate."""

    checks: tuple[tuple[CheckKind, BoolArray], ...]
    failed_check: IntArray
    shared_gpu: IntArray
    """Per candidate, the GPU a sharing request takes there (-1 where none fits)."""
    terms: dict[str, FloatArray]
    """Each term's value per candidate (meaningless where infeasible)."""
    evaluation: Evaluation

    @property
    def full(self) -> _Columns:
        return self

    def failed_check_at(self, index: IntArray) -> IntArray:
        return self.failed_check[index]

    def terms_at(self, index: IntArray) -> dict[str, FloatArray]:
        return {name: self.terms[name][index] for name in _weighted(self.policy)}


@dataclass(frozen=True, eq=False)
class _Quick(_Taken):
    """An entry patched only where a decision reads it (mask, score, memory floor); the
    rest is patched into ``base``'s columns when first asked for, from inputs fixed here
    (the rows changed since ``base`` and their evaluation), never from the state, which
    may have moved on by then.  Patching one that is not complete yet patches its base
    again (the changed rows add up): there is never more than one step to complete."""

    base: _Columns
    changed: IntArray
    """Candidates changed since ``base``."""
    part: _Part
    """Their evaluation, at ``versions``."""
    mix: FragmentAggregates | None
    """The shape aggregates they were evaluated with (held until completed)."""

    @cached_property
    def full(self) -> _Columns:
        columns = _patched(self.base, self.changed, self.versions, self.mix, self.part)
        object.__setattr__(self, "mix", None)
        return columns

    @property
    def completed(self) -> bool:
        return "full" in self.__dict__

    def failed_check_at(self, index: IntArray) -> IntArray:
        if self.completed:
            return self.full.failed_check_at(index)
        hit, at = self._changed_at(index)
        failed_check = self.base.failed_check[index]
        failed_check[hit] = self.part.feasibility.failed_check[at[hit]]
        return failed_check

    def terms_at(self, index: IntArray) -> dict[str, FloatArray]:
        if self.completed:
            return self.full.terms_at(index)
        hit, at = self._changed_at(index)
        terms = {}
        for name in _weighted(self.policy):
            if name == MEMORY_FIT:
                assert self.floor is not None  # weighted memory fit keeps a floor
                terms[name] = self.floor.fit(index)
                continue
            values = self.base.terms[name][index]
            values[hit] = self.part.terms[name][at[hit]]
            terms[name] = values
        return terms

    def _changed_at(self, index: IntArray) -> tuple[BoolArray, IntArray]:
        """Which candidates ``index`` changed since base, and where (``changed`` is sorted)."""
        changed = self.changed
        if not len(changed):
            return np.zeros(len(index), dtype=bool), np.zeros(len(index), dtype=np.int64)
        at = np.minimum(np.searchsorted(changed, index), len(changed) - 1)
        return changed[at] == index, at


_Entry = _Columns | _Quick


@dataclass(frozen=True, eq=False)
class Scored:
    """One request's answer over its candidates: which fit, and their weighted score, at
    once; the whole :class:`Evaluation` when first asked for.

    Read from an entry taken over every node of the state, at the candidates' rows.
    Memory fit divides by the smallest GPU memory among the candidates that fit: where
    that of these candidates is not the cluster's, their scores are taken again here.
    """

    state: ClusterState
    request: PodRequest
    rows: IntArray
    mask: BoolArray
    """Per candidate, whether the pod fits there."""
    score: FloatArray
    """Per candidate, the evaluation's score where ``mask`` holds (meaningless elsewhere)."""
    tie_tolerance: float
    entry: _Entry
    """The evaluation over every node; ``rows`` index into it."""
    smallest: np.int64 | None
    """The smallest GPU memory among the candidates that fit (memory fit's floor)."""

    @property
    def failed_counts(self) -> IntArray:
        """How many candidates fail each check, indexed by ``CheckKind`` (without
        making the Evaluation)."""
        return failed_counts(self.entry.failed_check_at(self.rows))

    def terms_at(self, index: IntArray) -> dict[str, FloatArray]:
        """Each weighted term's value at the candidates ``index`` (which fit), in the
        policy's order: what the Evaluation holds for them, without making it."""
        rows = self.rows[index]
        return _at_floor(self.entry.terms_at(rows), self.state, self.request, self.smallest, rows)

    @cached_property
    def evaluation(self) -> Evaluation:
        full = self.entry.full
        if self.rows is full.rows:
            evaluation = full.evaluation
        else:
            rows, request = self.rows, self.request
            checks = tuple((kind, passed[rows]) for kind, passed in full.checks)
            feasibility = Feasibility(request, rows, full.mask[rows], checks)
            # Feasibility.failed_check is a cached property: hand it the gathered column.
            feasibility.__dict__["failed_check"] = full.failed_check[rows]
            columns = {name: full.terms[name][rows] for name in full.terms}
            columns = _at_floor(columns, self.state, request, self.smallest, rows)
            evaluation = _assemble(
                self.state, request, feasibility, full.shared_gpu[rows], columns, full.policy, None
            )
        return (
            evaluation
            if evaluation.request == self.request
            else replace(evaluation, request=self.request)
        )


class IncrementalEvaluator:
    """``evaluate(state, request, rows, policy, fragments)``, remembered per request.

    An entry covers every node of the state and is reused, whatever ``rows`` a call
    asks about, while the state and the policy are the same; only rows whose
    ``row_version`` moved are evaluated again, and the terms that read the shape mix
    when the aggregates changed.  At most ``size`` requests are remembered.
    """

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self._entries: OrderedDict[PodRequest, _Entry] = OrderedDict()
        """By :func:`scoring_key`, least recently used first."""
        self._ahead: dict[PodRequest, _Columns] = {}
        """Entries brought ahead to a shape mix not in force yet (:meth:`warm`), put in
        place when a decision asks with it: until then the entries in force serve."""
        self.patched = 0
        """Evaluations answered by patching changed rows (or none) into a remembered one."""
        self._state: ClusterState | None = None
        self._policy: PolicyConfig | None = None
        self._everything = np.zeros(0, dtype=np.int64)
        """Every row of the state: what the entries are taken over."""
        self._mix: FragmentAggregates | None = None
        """The shape mix of the last decision."""

    def evaluate(
        self,
        state: ClusterState,
        request: PodRequest,
        rows: IntArray,
        policy: PolicyConfig,
        fragments: FragmentAggregates | None = None,
    ) -> Evaluation:
        return self.score(state, request, rows, policy, fragments).evaluation

    def score(
        self,
        state: ClusterState,
        request: PodRequest,
        rows: IntArray,
        policy: PolicyConfig,
        fragments: FragmentAggregates | None = None,
    ) -> Scored:
        """What :meth:`evaluate` gives, the rest of its Evaluation made when first asked
        for, from what this call fixed (:meth:`complete` makes every entry's now).

        The entries cover every node of the state, whichever nodes a call asks about and
        in whatever order: kube-scheduler's parallel filters find the feasible nodes in
        another order every cycle, and fewer as nodes fill.  ``rows`` are distinct (a
        node named twice is the caller's to refuse)."""
        if state is not self._state or policy is not self._policy:
            # No entry can serve again: let go of the old arrays at once.
            self._entries.clear()
            self._ahead.clear()
            self._state, self._policy = state, policy
            self._everything = np.arange(state.n_nodes)
        self._mix = fragments
        everything = self._everything
        key = scoring_key(request, policy)
        entry = self._entries.get(key)
        ahead = self._ahead.get(key)
        if ahead is not None and _same_mix(ahead.fragments, fragments):
            del self._ahead[key]
            entry = self._entries[key] = ahead
        if entry is not None and entry.serves(state, everything, policy):
            versions = state.row_version
            changed = np.flatnonzero(versions != entry.versions)
            if len(changed) <= REDO_SHARE * len(everything):
                self.patched += 1
                if len(changed) or not _same_mix(entry.fragments, fragments):
                    entry = _patch(entry, changed, versions.copy(), fragments)
                    self._remember(key, entry)
                else:
                    self._entries.move_to_end(key)
                return _scored(entry, request, rows)
        entry = _fresh(state, request, everything, policy, fragments)
        self._remember(key, entry)
        return _scored(entry, request, rows)

    def warm(
        self,
        state: ClusterState,
        policy: PolicyConfig,
        fragments: FragmentAggregates | None,
        limit: int = 1,
    ) -> int:
        """Bring up to ``limit`` remembered entries taken with another shape mix ahead
        to ``fragments``, most recently used first; returns how many.  A new mix (every
        50 arrivals or so) otherwise costs the first decision of every shape after it a
        term taken over every candidate.  The entries in force stay, for decisions
        still made with the mix in force.  Reads the state as it is now."""
        if state is not self._state or policy is not self._policy:
            return 0
        warmed = 0
        for key in reversed(list(self._entries)):
            entry = self._entries[key]
            ahead = self._ahead.get(key)
            if (
                _same_mix(entry.fragments, fragments)
                or (ahead is not None and _same_mix(ahead.fragments, fragments))
                or not entry.serves(state, entry.rows, policy)
            ):
                continue
            versions = state.row_version[entry.rows]
            changed = np.flatnonzero(versions != entry.versions)
            if len(changed) > REDO_SHARE * len(entry.rows):
                continue  # evaluated afresh when next asked
            self._ahead[key] = _patched(entry, changed, versions, fragments)
            warmed += 1
            if warmed == limit:
                break
        return warmed

    def complete(self, above: int = 0) -> None:
        """Patch in full now the columns of each remembered entry with more than
        ``above`` candidates changed since they were (they read no state), and of each
        taken with a shape mix other than the last decision's (it holds that mix until
        then).  Until then a decision evaluates again every candidate changed since: a
        few more rows in one vectorised call cost far less than a copy of every column
        after each decision."""
        for key, entry in self._entries.items():
            if isinstance(entry, _Quick) and (
                len(entry.changed) > above or entry.mix is not self._mix
            ):
                self._entries[key] = entry.full

    def _remember(self, key: PodRequest, entry: _Entry) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            oldest, _ = self._entries.popitem(last=False)
            self._ahead.pop(oldest, None)


def _scored(entry: _Entry, request: PodRequest, rows: IntArray) -> Scored:
    """``entry`` (over every node) read at ``rows`` (distinct)."""
    tie_tolerance = entry.policy.tie_tolerance / total_weight(entry.policy)
    floor = entry.floor
    smallest = None if floor is None else floor.smallest
    if rows is entry.rows or (len(rows) == len(entry.rows) and np.array_equal(rows, entry.rows)):
        rows = entry.rows
        return Scored(
            entry.state, request, rows, entry.mask, entry.score, tie_tolerance, entry, smallest
        )
    mask, score = entry.mask[rows], entry.score[rows]
    if floor is not None and request.gpu_count and len(rows) < len(entry.rows):
        # (Every candidate in another order has the same smallest memory that fits.)
        among = floor.smallest_at(rows, mask)
        if not _same_floor(among, smallest):
            # Memory fit over these candidates divides by another size: weigh them again.
            smallest = among
            terms = _at_floor(entry.terms_at(rows), entry.state, request, smallest, rows)
            score = weighted_mean(terms, entry.policy, len(rows))
    return Scored(entry.state, request, rows, mask, score, tie_tolerance, entry, smallest)


def _at_floor(
    terms: dict[str, FloatArray],
    state: ClusterState,
    request: PodRequest,
    smallest: np.int64 | None,
    rows: IntArray,
) -> dict[str, FloatArray]:
    """``terms`` of ``rows``, with memory fit's (where weighted) taken against
    ``smallest``, the smallest GPU memory among the candidates that fit."""
    if MEMORY_FIT in terms:
        memory = state.gpu_memory_mib[rows]
        terms[MEMORY_FIT] = fit_to(smallest, memory) if request.gpu_count else np.ones(len(rows))
    return terms


def scoring_key(request: PodRequest, policy: PolicyConfig) -> PodRequest:
    """``request`` with the pod's own fields that no weighted term reads at their
    defaults: pods of two teams asking for the same resources share an evaluation."""
    read: set[str] = set()
    for name, weight in policy.weights.items():
        if weight > 0:
            read |= POD_FIELDS.get(name, frozenset())
    return replace(
        request,
        team=request.team if "team" in read else "",
        pod_class=request.pod_class if "pod_class" in read else PodClass.BATCH,
        priority=request.priority if "priority" in read else 0,
        preemptible=request.preemptible if "preemptible" in read else True,
    )


def _over_share(state: ClusterState, policy: PolicyConfig) -> frozenset[str] | None:
    return state.over_share_teams if reads_over_share(policy.weights) else None


def _no_mix() -> None:
    """The mix of columns taken without shape aggregates (not a dead reference)."""
    return None


def _weakly(
    fragments: FragmentAggregates | None,
) -> Callable[[], FragmentAggregates | None]:
    return _no_mix if fragments is None else weakref.ref(fragments)


def _same_mix(
    taken: Callable[[], FragmentAggregates | None], fragments: FragmentAggregates | None
) -> bool:
    """Whether columns taken with ``taken`` were taken with ``fragments``: no mix matches
    no mix only, and a mix that is gone matches nothing."""
    return taken is _no_mix if fragments is None else taken() is fragments


@dataclass(frozen=True)
class _MemoryFloor:
    """The smallest GPU memory among the candidates that fit, for memory fit: a count of
    them per memory size, moved by the candidates that changed."""

    request: PodRequest
    memory: IntArray
    """Per candidate, its GPUs' memory in MiB (0: unknown)."""
    sizes: IntArray
    """The distinct known memory sizes, ascending."""
    size_of: IntArray
    """Per candidate, its index into ``sizes`` (-1: unknown)."""
    fitting: IntArray
    """Per size, how many candidates that fit have it."""

    @classmethod
    def of(
        cls, state: ClusterState, request: PodRequest, rows: IntArray, mask: BoolArray
    ) -> _MemoryFloor:
        memory = state.gpu_memory_mib[rows]
        known = memory > 0
        sizes = np.unique(memory[known])
        size_of = np.where(known, np.searchsorted(sizes, memory), -1)
        return cls(request, memory, sizes, size_of, cls._count(sizes, size_of[mask]))

    @staticmethod
    def _count(sizes: IntArray, size_of: IntArray) -> IntArray:
        return np.bincount(size_of[size_of >= 0], minlength=len(sizes))

    @property
    def smallest(self) -> np.int64 | None:
        present = np.flatnonzero(self.fitting)
        return self.sizes[present[0]] if len(present) else None

    def smallest_at(self, at: IntArray, fitting: BoolArray) -> np.int64 | None:
        """The smallest known memory among the candidates ``at`` where ``fitting``."""
        memory = self.memory[at][fitting]
        known = memory[memory > 0]
        return known.min() if len(known) else None

    def moved(self, changed: IntArray, was: BoolArray, now: BoolArray) -> _MemoryFloor:
        """The floor once the candidates at ``changed`` fit as ``now`` says (``was`` before)."""
        size_of = self.size_of[changed]
        fitting = (
            self.fitting
            - self._count(self.sizes, size_of[was[changed]])
            + self._count(self.sizes, size_of[now[changed]])
        )
        return replace(self, fitting=fitting)

    def fit(self, at: IntArray | None = None) -> FloatArray:
        """memory fit's value for every candidate (or those ``at``)."""
        memory = self.memory if at is None else self.memory[at]
        if not self.request.gpu_count:
            return np.ones(len(memory))
        return fit_to(self.smallest, memory)


def _weighted(policy: PolicyConfig) -> list[str]:
    return [name for name, weight in policy.weights.items() if weight > 0]


def _same_floor(a: np.int64 | None, b: np.int64 | None) -> bool:
    return a is None if b is None else a is not None and a == b


@dataclass(frozen=True)
class _Part:
    """The checks and the row-local terms of some candidates, one value per candidate."""

    feasibility: Feasibility
    shared_gpu: IntArray
    terms: dict[str, FloatArray]


def _row_local(
    state: ClusterState,
    request: PodRequest,
    rows: IntArray,
    policy: PolicyConfig,
    fragments: FragmentAggregates | None,
    skip: frozenset[str] = frozenset(),
) -> _Part:
    """What ``evaluate`` computes for ``rows`` that depends on each row alone (the terms
    in ``skip`` left out), spread over every one of them."""
    feasibility = check_feasibility(state, request, rows)
    mask, feasible = feasibility.mask, feasibility.feasible_rows
    shared_gpu = np.full(len(rows), -1, dtype=np.int64)
    shared = np.zeros(0, dtype=np.int64)
    if request.is_sharing:
        shared = tightest_gpu(state.free_milli[feasible], request.milli_per_gpu)
        shared_gpu[mask] = shared
    candidates = Candidates(state, request, feasible, shared, fragments)
    terms = {}
    for name, weight in policy.weights.items():
        if weight > 0 and name not in CANDIDATE_SET_TERMS and name not in skip:
            column = np.zeros(len(rows))
            column[mask] = TERMS[name](candidates)
            terms[name] = column
    return _Part(feasibility, shared_gpu, terms)


def _fresh(
    state: ClusterState,
    request: PodRequest,
    rows: IntArray,
    policy: PolicyConfig,
    fragments: FragmentAggregates | None,
) -> _Columns:
    part = _row_local(state, request, rows, policy, fragments)
    feasibility = part.feasibility
    terms, floor = part.terms, None
    if policy.weights.get(MEMORY_FIT, 0) > 0:
        floor = _MemoryFloor.of(state, request, rows, feasibility.mask)
        terms = {**terms, MEMORY_FIT: floor.fit()}
    evaluation = _assemble(state, request, feasibility, part.shared_gpu, terms, policy, fragments)
    return _Columns(
        state,
        request,
        rows,
        policy,
        _weakly(fragments),
        _over_share(state, policy),
        state.row_version[rows],
        feasibility.mask,
        _spread(evaluation),
        floor,
        feasibility.checks,
        feasibility.failed_check,
        part.shared_gpu,
        terms,
        evaluation,
    )


def _spread(evaluation: Evaluation) -> FloatArray:
    """The evaluation's score per candidate (0 where the pod does not fit)."""
    mask = evaluation.feasibility.mask
    score = np.zeros(len(mask))
    score[mask] = evaluation.score
    return score


def _patch(
    entry: _Entry,
    changed: IntArray,
    versions: IntArray,
    fragments: FragmentAggregates | None,
) -> _Entry:
    """``entry`` with the candidates at ``changed`` evaluated again: at once only where a
    decision reads it, unless the shape mix or the smallest GPU memory that fits changed
    (then every candidate's score moves, and the whole entry is patched now)."""
    if not _same_mix(entry.fragments, fragments):
        return _patched(entry, changed, versions, fragments)
    base, changed = _rebased(entry, changed)
    state, request, rows, policy = base.state, base.request, base.rows, base.policy
    part = _row_local(state, request, rows[changed], policy, fragments)
    mask = base.mask.copy()
    mask[changed] = part.feasibility.mask
    floor, terms = base.floor, part.terms
    if floor is not None:
        moved = floor.moved(changed, base.mask, mask)
        if not _same_floor(moved.smallest, floor.smallest):
            return _patched(base, changed, versions, fragments, part)
        floor, terms = moved, {**terms, MEMORY_FIT: moved.fit(changed)}
    score = base.score.copy()
    score[changed] = weighted_mean(terms, policy, len(changed))
    return _Quick(
        state,
        request,
        rows,
        policy,
        base.fragments,
        base.over_share,
        versions,
        mask,
        score,
        floor,
        base,
        changed,
        part,
        fragments,
    )


def _rebased(entry: _Entry, changed: IntArray) -> tuple[_Columns, IntArray]:
    """The columns to patch ``entry``'s ``changed`` candidates into, and the candidates to
    patch: an incomplete entry's base and every change since it (one step, not two),
    unless they are too many; else its columns, completed."""
    if isinstance(entry, _Quick) and not entry.completed:
        since_base = np.union1d(entry.changed, changed)
        if len(since_base) <= REDO_SHARE * len(entry.rows):
            return entry.base, since_base
    return entry.full, changed


def _patched(
    entry: _Entry,
    changed: IntArray,
    versions: IntArray,
    fragments: FragmentAggregates | None,
    part: _Part | None = None,
) -> _Columns:
    """``entry`` with the candidates at ``changed`` evaluated again (into copies), and
    the terms that read the shape mix taken again over all of them when it changed
    (every 50 arrivals or so: the checks and the other terms stand).  ``part``: the
    changed candidates' evaluation, taken already (with the same mix)."""
    if part is None:
        entry, changed = _rebased(entry, changed)
    entry = entry.full
    state, request, rows, policy = entry.state, entry.request, entry.rows, entry.policy
    redo = frozenset() if _same_mix(entry.fragments, fragments) else SHAPE_TERMS
    if part is None:
        part = _row_local(state, request, rows[changed], policy, fragments, skip=redo)

    def patch(column: np.ndarray, values: np.ndarray) -> np.ndarray:
        column = column.copy()
        column[changed] = values
        return column

    checks = tuple(
        (kind, patch(passed, part_passed))
        for (kind, passed), (_, part_passed) in zip(
            entry.checks, part.feasibility.checks, strict=True
        )
    )
    mask = patch(entry.mask, part.feasibility.mask)
    shared_gpu = patch(entry.shared_gpu, part.shared_gpu)
    terms = {
        name: patch(column, part.terms[name])
        for name, column in entry.terms.items()
        if name in part.terms
    }
    floor = entry.floor
    if floor is not None:
        moved = floor.moved(changed, entry.mask, mask)
        terms[MEMORY_FIT] = (
            patch(entry.terms[MEMORY_FIT], moved.fit(changed))
            if _same_floor(moved.smallest, floor.smallest)
            else moved.fit()  # a smaller size now fits, or the smallest no longer does
        )
        floor = moved
    feasibility = Feasibility(request, rows, mask, checks)
    # Feasibility.failed_check is a cached property: hand it the patched column.
    failed_check = patch(entry.failed_check, part.feasibility.failed_check)
    feasibility.__dict__["failed_check"] = failed_check
    evaluation = _assemble(state, request, feasibility, shared_gpu, terms, policy, fragments)
    for name in entry.terms.keys() - terms.keys():  # taken over every candidate just now
        column = np.zeros(len(rows))
        column[mask] = evaluation.terms[name]
        terms[name] = column
    return replace(
        entry,
        fragments=_weakly(fragments),
        versions=versions,
        mask=mask,
        score=_spread(evaluation),
        floor=floor,
        checks=checks,
        failed_check=failed_check,
        shared_gpu=shared_gpu,
        terms=terms,
        evaluation=evaluation,
    )


def _assemble(
    state: ClusterState,
    request: PodRequest,
    feasibility: Feasibility,
    shared_gpu: IntArray,
    columns: dict[str, FloatArray],
    policy: PolicyConfig,
    fragments: FragmentAggregates | None,
) -> Evaluation:
    """The Evaluation ``evaluate`` would give, from per-candidate columns."""
    mask = feasibility.mask
    feasible = feasibility.feasible_rows
    candidates = None
    terms: dict[str, FloatArray] = {}
    for name in (name for name, w in policy.weights.items() if w > 0):
        if name in columns:
            terms[name] = columns[name][mask]
        else:
            if candidates is None:
                shared = shared_gpu[mask] if request.is_sharing else np.zeros(0, dtype=np.int64)
                candidates = Candidates(state, request, feasible, shared, fragments)
            terms[name] = TERMS[name](candidates)
    return weigh(state, request, feasibility, terms, policy)
