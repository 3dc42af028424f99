"""fragmentation: prefer placements that grow the node's GPU fragment least.

    growth = F_after - F_before        (milli-GPU, see scoring.fragmentation)
    score  = 1 / (1 + exp(growth / 1000))

F is FGD's fragment against the learned shape mix, plus (the policy's
``shapes.cpu_stranding``, on by default) the GPU shares of sharing shapes that the
node's free CPU could no longer feed; shapes carry their minimum GPU memory.

A growth of 0 scores 0.5; stranding one whole GPU more for the typical shape
scores 0.27; freeing fragment (a placement into a hole) scores above 0.5.  The
score depends on the node alone, never on the other candidates.  Without a shape
mix the term is neutral (0.5 everywhere).
"""

from __future__ import annotations

import numpy as np

from scoring.candidates import Candidates
from scoring.fragmentation import FloatArray
from scoring.state import MILLI_PER_GPU


def fragmentation(candidates: Candidates) -> FloatArray:
    fragments, state, request = candidates.fragments, candidates.state, candidates.request
    rows = candidates.rows
    if fragments is None or len(rows) == 0:
        return np.full(len(rows), 0.5)
    fragments.refresh(state)
    key = (request.gpu_count, request.milli_per_gpu, request.cpu_milli)
    if request.is_sharing:
        # The GPU shared on each node is the tightest that fits, a function of the node.
        free_before = state.free_milli[rows, candidates.shared_gpu]
        growth = fragments.growth(
            state, rows, key, free_before, free_before - request.milli_per_gpu, 1, request.cpu_milli
        )
    elif request.gpu_count:
        # Whole GPUs: each taken GPU goes from fully free to nothing free.
        growth = fragments.growth(
            state, rows, key, MILLI_PER_GPU, 0, request.gpu_count, request.cpu_milli
        )
    else:
        growth = fragments.growth(state, rows, key, 0, 0, 0, request.cpu_milli)
    return 1.0 / (1.0 + np.exp(growth / MILLI_PER_GPU))
