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
from scoring.state import IntArray


def memory_fit(candidates: Candidates) -> FloatArray:
    rows = candidates.rows
    if candidates.request.gpu_count == 0 or len(rows) == 0:
        return np.ones(len(rows))
    memory = candidates.state.gpu_memory_mib[rows]
    return fit_to(smallest_memory(memory), memory)


def smallest_memory(memory: IntArray) -> np.int64 | None:
    """The smallest known per-GPU memory (None: none is known)."""
    known = memory[memory > 0]
    return known.min() if len(known) else None


def fit_to(smallest: np.int64 | None, memory: IntArray) -> FloatArray:
    """The term for GPUs of ``memory`` MiB when the smallest candidate has ``smallest``:
    each node's value depends on the other candidates through ``smallest`` alone."""
    if smallest is None:
        return np.ones(len(memory))
    return np.divide(smallest, memory, out=np.ones(len(memory)), where=memory > 0)
