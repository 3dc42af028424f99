"""memory_fit: the smallest sufficient GPU model, so large GPUs stay free for large models.

    score = smallest per-GPU memory among the candidates / this node's per-GPU memory

The smallest sufficient GPU scores 1; a GPU twice its size 0.5.  Nodes whose GPU
memory is unknown (0) score 1: there is nothing to save by avoiding them.  CPU-only
requests are neutral (1 everywhere).
"""

from __future__ import annotations

import numpy as np

from scoring.candidates import Candidates
from scoring.fragmentation import FloatArray


def memory_fit(candidates: Candidates) -> FloatArray:
    rows = candidates.rows
    if candidates.request.gpu_count == 0 or len(rows) == 0:
        return np.ones(len(rows))
    memory = candidates.state.gpu_memory_mib[rows]
    known = memory > 0
    if not known.any():
        return np.ones(len(rows))
    smallest = memory[known].min()
    return np.divide(  # type: ignore[no-any-return]
        smallest, memory, out=np.ones(len(rows)), where=known
    )
