"""Python's cyclic garbage collector, kept off the paths that must be fast.

The collector runs when enough container objects have been allocated since it last
ran, wherever that happens.  Two places cannot afford it: reading the cluster's
lists at start-up, and computing an answer kube-scheduler waits for.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


class CollectorPause:
    """The collector off while lists are read, or while an answer is computed.

    A list of 100,000 pods allocates millions of objects (the parsed pages, the
    records), and each allocation burst sets off collections that walk the
    whole growing heap: a third of the sync time at 40,000 pods (``fairpack bench
    view``).  The records hold no reference cycles, so nothing waits for the
    collector meanwhile.  When the last concurrent list ends, the collector comes
    back; after the first complete sync it collects once and moves everything
    then alive (the view) to the permanent generation (``gc.freeze``), so later
    collections, between requests, no longer walk it.  A list that fails or is
    cancelled only turns the collector back on.

    :meth:`answering` holds it off while a filter, prioritize or preempt is
    computed and its answer sent: a collection that falls due meanwhile (a
    generation-1 collection walks every young survivor, about 1 ms in the latency
    benchmark at 5,000 nodes, once every 70 filters or so) runs right after, as
    CPython's own thresholds decide, instead of inside the answer.
    """

    def __init__(self) -> None:
        self._depth = 0
        self._was_enabled = False
        self._frozen = False
        self._freeze_due = False

    def __enter__(self) -> None:
        self._pause()

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self._freeze_due = exc_type is None  # the last list to end decides
        self._resume()

    @contextmanager
    def answering(self) -> Iterator[None]:
        self._pause()
        try:
            yield
        finally:
            self._resume()

    def _pause(self) -> None:
        if self._depth == 0:
            self._was_enabled = gc.isenabled()
            gc.disable()
        self._depth += 1

    def _resume(self) -> None:
        self._depth -= 1
        if self._depth or not self._was_enabled:
            return
        if self._freeze_due and not self._frozen:
            gc.collect()  # nothing unreachable goes to the permanent generation
            gc.freeze()
            self._frozen = True
        self._freeze_due = False
        gc.enable()
        _ = [None]  # a collection that fell due runs now, not inside the next answer


collector_paused = CollectorPause()
"""Shared by every reflector (they list concurrently at start-up), the view benchmark
and the extender's verbs."""
