"""DotProd (Tetris's alignment heuristic), as the FGD paper's simulator scores it.

``dot_product_score.go`` with the paper's configuration (``generate_run_scripts.py``:
``-gpusel best -dimext merge -norm max``): the node vector is (free CPU milli,
free GPU milli summed over the node's GPUs), the pod vector is (CPU milli, total
GPU milli), both divided by the authors' spec (128000, 8000):

    dot   = (cpu_free_milli / 128000) * (cpu_request_milli / 128000)
          + (gpu_free_milli / 8000) * (gpu_request_milli / 8000)
    score = int64(100 * (1 - dot / 2))

in float64 in that order, truncated toward zero (``/ 2`` is Go's division by the
vector length; ``1 - 0.5 * (...)`` is the same float).  The least
aligned node wins, ties to the lowest rank; there is no normalisation.

GPUs: with ``-dimext merge`` the plugin names no GPU, so ``Open-Gpu-Share``
falls back to ``gpuSelMethod: best`` (tightest GPU for a sharing pod, lowest
index on ties; lowest-index free GPUs otherwise).
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

VECTOR_LENGTH = 2


def dot_product_scores(
    cpu_free_milli: IntArray,
    gpu_free_milli: IntArray,
    cpu_request_milli: int,
    gpu_request_milli: int,
) -> IntArray:
    """DotProd score of each node.

    cpu_free_milli, gpu_free_milli : ndarray of shape (n_nodes,)
        Free CPU, and free GPU milli summed over the node's GPUs.
    """
    # The pod's side is one number per resource.  Halving is exact, so dividing
    # it by the vector length up front gives Go's (a * b + c * d) / 2 bit for bit.
    cpu_weight = cpu_request_milli / MAX_SPEC_CPU_MILLI / VECTOR_LENGTH
    gpu_weight = gpu_request_milli / MAX_SPEC_GPU_MILLI / VECTOR_LENGTH
    half_dot = (cpu_free_milli / MAX_SPEC_CPU_MILLI) * cpu_weight
    if gpu_weight:  # a CPU-only pod adds exact zeros: skip the work
        half_dot += (gpu_free_milli / MAX_SPEC_GPU_MILLI) * gpu_weight
    return (MAX_NODE_SCORE * (1.0 - half_dot)).astype(np.int64)


class DotProdPolicy(FreeTotalsPolicy):
    score_nodes = staticmethod(dot_product_scores)
