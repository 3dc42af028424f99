"""BestFit, as the FGD paper's simulator scores it (``best_fit_score.go``).

    waste = (cpu_free_milli - cpu_request_milli) / 128000 * 0.5
          + (gpu_free_milli - gpu_request_milli) / 8000 * 0.5
    score = int64((1 - waste) * 100)

with the node's free GPU milli summed over its GPUs and the pod's total GPU
milli, in float64 in exactly that order, truncated toward zero.  The plugin then
min-max normalises the feasible nodes' scores in integers (``NormalizeScore`` in
``plugin_utils.go``): ``(score - lowest) * 100 / (highest - lowest)``, all 0 when
they are equal.  A normalised score is 100 exactly where the raw score is the
highest (``(s - lo) * 100 >= 100 * (hi - lo)`` only for ``s = hi``), so the
winners are the same nodes and the hot path skips it (:func:`normalize_scores`
is kept, and tested, as the reference).  The highest score wins, ties to the
lowest rank.  GPUs: ``best`` selection (tightest GPU for a sharing pod,
lowest-index free GPUs otherwise).

The formula is often written ``0.5 * (free - req) / 128000``; Go divides first and
then multiplies by 0.5.  Both give the same float, as halving is exact.
"""

from __future__ import annotations

import numpy as np

from benchmarks.policies.common import (
    MAX_NODE_SCORE,
    MAX_SPEC_CPU_MILLI,
    MAX_SPEC_GPU_MILLI,
    FreeTotalsPolicy,
)
from scoring.state import IntArray

CPU_WEIGHT = 0.5
GPU_WEIGHT = 0.5


def best_fit_scores(
    cpu_free_milli: IntArray,
    gpu_free_milli: IntArray,
    cpu_request_milli: int,
    gpu_request_milli: int,
) -> IntArray:
    """Raw BestFit score of each node, before normalisation.

    cpu_free_milli, gpu_free_milli : ndarray of shape (n_nodes,)
        Free CPU, and free GPU milli summed over the node's GPUs.
    """
    # x / spec * 0.5 is x / (spec / 0.5) bit for bit (halving is exact): one numpy call less.
    waste = (cpu_free_milli - cpu_request_milli) / (MAX_SPEC_CPU_MILLI / CPU_WEIGHT)
    waste += (gpu_free_milli - gpu_request_milli) / (MAX_SPEC_GPU_MILLI / GPU_WEIGHT)
    return ((1.0 - waste) * MAX_NODE_SCORE).astype(np.int64)


def normalize_scores(scores: IntArray) -> IntArray:
    """The authors' integer min-max normalisation to 0..100 (of the feasible nodes' scores)."""
    highest, lowest = int(scores.max()), int(scores.min())
    # All equal: Go gives every node MinNodeScore rather than dividing by zero.
    if highest == lowest:
        return np.zeros_like(scores)
    return (scores - lowest) * MAX_NODE_SCORE // (highest - lowest)


class BestFitPolicy(FreeTotalsPolicy):
    score_nodes = staticmethod(best_fit_scores)
