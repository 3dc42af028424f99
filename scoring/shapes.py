"""Learning the pod-shape mix online, from arrivals only.

FGD computes shape popularity over the whole trace, future pods included; a
production scheduler only knows what it has seen.  ``ShapeLearner`` keeps an
exponentially decayed count per shape (half-life in arrivals), so the mix follows
a changing workload, and hands out the most popular shapes covering a given share
of arrivals as a :class:`ShapeTable`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from scoring.fragmentation import FragmentAggregates, ShapeKey, ShapeTable
from scoring.policy import ShapeLearning
from scoring.request import PodRequest

Shape = ShapeKey

_RESCALE_ABOVE = 1e150


def shape_of(request: PodRequest) -> Shape:
    return (
        request.cpu_milli,
        request.milli_per_gpu,
        request.gpu_count,
        request.allowed_models,
        request.min_gpu_memory_mib,
    )


@dataclass
class ShapeLearner:
    half_life_pods: float
    _counts: dict[Shape, float] = field(default_factory=dict)
    _increment: float = 1.0
    observed: int = 0

    def observe(self, request: PodRequest) -> None:
        # Rather than decaying every count per arrival, grow the increment: the
        # ratios are the same and an observation stays O(1).
        shape = shape_of(request)
        self._counts[shape] = self._counts.get(shape, 0.0) + self._increment
        self._increment *= math.pow(2.0, 1.0 / self.half_life_pods)
        self.observed += 1
        if self._increment > _RESCALE_ABOVE:
            scale = 1.0 / self._increment
            self._counts = {s: c * scale for s, c in self._counts.items() if c * scale > 1e-12}
            self._increment = 1.0

    def popularity(self) -> dict[Shape, float]:
        total = sum(self._counts.values())
        return {shape: count / total for shape, count in self._counts.items()} if total else {}

    def table(self, coverage: float, gpu_coverage: float = 0.0) -> ShapeTable | None:
        """The shapes that make up ``coverage`` of the (decayed) arrivals, or of their GPUs.

        A shape is kept when it is among the most popular ones covering
        ``coverage`` of the pods, or among the largest GPU consumers covering
        ``gpu_coverage`` of the GPUs asked for.  By pods alone, an 8-GPU shape that
        is 3% of arrivals but a sixth of the GPUs would drop out, and nothing would
        keep whole nodes free for it.  Weights stay each shape's share of pods.
        ``gpu_coverage`` 0 keeps by pods alone (the policy's default is 0.5,
        ``ShapeLearning.gpu_coverage``).
        """
        popularity = self.popularity()
        # Most popular first; ties by the shape's numbers, largest first, as FGD does.
        ranked = sorted(popularity.items(), key=_popularity_order, reverse=True)
        kept = set(_covering(ranked, coverage))
        demand = [(shape, share * shape[1] * shape[2]) for shape, share in ranked]
        total = sum(gpus for _, gpus in demand)
        if total > 0:
            by_gpus = sorted(demand, key=lambda item: item[1], reverse=True)
            kept.update(_covering([(s, g / total) for s, g in by_gpus], gpu_coverage))
        rows = [(shape, share) for shape, share in ranked if shape in kept]
        if not rows:
            return None
        return ShapeTable.from_rows([s for s, _ in rows], [w for _, w in rows])


def _popularity_order(item: tuple[Shape, float]) -> tuple[float, tuple[int, ...], str, int]:
    shape, share = item
    return (share, shape[:3], "|".join(sorted(shape[3])), shape[4])


def _covering(ranked: list[tuple[Shape, float]], coverage: float) -> list[Shape]:
    """The leading shapes of ``ranked`` whose shares first reach ``coverage``."""
    kept: list[Shape] = []
    covered = 0.0
    for shape, share in ranked:
        if covered >= coverage:
            break
        kept.append(shape)
        covered += share
    return kept


@dataclass
class OnlineFragments:
    """A shape learner plus the fragment aggregates of its latest table.

    The table is rebuilt every ``refresh_every_pods`` arrivals, from the arrivals
    before the one that finds it due (and at the first ones until there is a table).
    A caller with time between arrivals (the service, after an answer) builds it ahead
    with :meth:`prepare`; the arrival then only puts it in force.
    """

    config: ShapeLearning
    keep_growth_by_shape: bool = False
    """See :attr:`FragmentAggregates.keep_growth_by_shape` (the service sets it)."""
    learner: ShapeLearner = field(init=False)
    aggregates: FragmentAggregates | None = field(init=False, default=None)
    """The aggregates in force."""
    _since_refresh: int = field(init=False, default=0)
    _next: FragmentAggregates | None = field(init=False, default=None)
    _next_built: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self.learner = ShapeLearner(self.config.half_life_pods)

    def observe(self, request: PodRequest) -> None:
        """Take in an arrival (the table first rebuilt, if due)."""
        if self._due:
            self.aggregates = self._next if self._next_built else self._build()
            self._next, self._next_built = None, False
            self._since_refresh = 0
        self.learner.observe(request)
        self._since_refresh += 1

    def prepare(self) -> None:
        """Build the table the next arrival puts in force, if it is due."""
        if self._due and not self._next_built:
            self._next, self._next_built = self._build(), True

    @property
    def upcoming(self) -> FragmentAggregates | None:
        """The aggregates the next arrival decides with, when built ahead; else those
        in force."""
        return self._next if self._next_built else self.aggregates

    @property
    def _due(self) -> bool:
        return self._since_refresh >= self.config.refresh_every_pods or (
            self.aggregates is None and self._since_refresh > 0
        )

    def _build(self) -> FragmentAggregates | None:
        table = self.learner.table(self.config.coverage, self.config.gpu_coverage)
        if table is None:
            return None
        # Same shapes, new weights (the usual case): keep the per-node counts.
        kept = self.aggregates.reweighted(table) if self.aggregates else None
        return kept or FragmentAggregates(
            table, self.config.cpu_stranding, self.keep_growth_by_shape
        )
