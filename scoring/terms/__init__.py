"""Score terms: pure functions of the candidates, each in [0, 1], higher is better.

One module per term; the policy config names them by the keys of ``TERMS``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from scoring.candidates import Candidates
from scoring.fragmentation import FloatArray
from scoring.terms.best_fit import best_fit
from scoring.terms.class_placement import class_placement
from scoring.terms.fragmentation import fragmentation
from scoring.terms.memory_fit import memory_fit
from scoring.terms.reclaim_cost import reclaim_cost

Term = Callable[[Candidates], FloatArray]

TERMS: dict[str, Term] = {
    "best_fit": best_fit,
    "class_placement": class_placement,
    "fragmentation": fragmentation,
    "memory_fit": memory_fit,
    "reclaim_cost": reclaim_cost,
}

POD_FIELDS: dict[str, frozenset[str]] = {
    "class_placement": frozenset({"pod_class"}),
    "reclaim_cost": frozenset({"team", "pod_class", "preemptible"}),
}
"""The pod's own fields, beyond the resources it asks for, that a term reads (none
where a term is not listed); ``scoring.incremental`` shares evaluations between pods
that differ in no field a weighted term reads."""

SHAPE_TERMS = frozenset({"fragmentation"})
"""Terms that read the learned shape mix (``Candidates.fragments``)."""

OVER_SHARE_TERMS = frozenset({"reclaim_cost"})
"""Terms that read ``ClusterState.over_share_teams`` (the fair shares)."""


def reads_over_share(weights: Mapping[str, float]) -> bool:
    """Whether a weighted term reads the over-share teams."""
    return any(weights.get(name, 0.0) > 0 for name in OVER_SHARE_TERMS)


__all__ = [
    "OVER_SHARE_TERMS",
    "POD_FIELDS",
    "SHAPE_TERMS",
    "TERMS",
    "Term",
    "best_fit",
    "class_placement",
    "fragmentation",
    "memory_fit",
    "reads_over_share",
    "reclaim_cost",
]
