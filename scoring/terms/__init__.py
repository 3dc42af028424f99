"""Score terms: pure functions of the candidates, each in [0, 1], higher is better.

One module per term; the policy config names them by the keys of ``TERMS``.
"""

from __future__ import annotations

from collections.abc import Callable

from scoring.candidates import Candidates
from scoring.fragmentation import FloatArray
from scoring.terms.best_fit import best_fit
from scoring.terms.fragmentation import fragmentation
from scoring.terms.memory_fit import memory_fit

Term = Callable[[Candidates], FloatArray]

TERMS: dict[str, Term] = {
    "best_fit": best_fit,
    "fragmentation": fragmentation,
    "memory_fit": memory_fit,
}

__all__ = ["TERMS", "Term", "best_fit", "fragmentation", "memory_fit"]
