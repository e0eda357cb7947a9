"""The garbage collector's policy for long-running processes: the start-up heap is frozen.

A serving process holds ~130k-200k objects the cyclic collector tracks before it takes its first
command (numba's dispatchers and type system, the imported modules, the key store, the recovered
views). CPython's collector scans all of them in every full (generation 2) collection: 77-107 ms
measured in `perp serve` and `perp gateway` under `perp bench gateway`, a stop of the event loop
in the middle of the latency phase, several times a run -- far past a 5 ms p99. `freeze_heap`
runs one full collection (cyclic garbage of the start-up goes) and then moves every object still
alive to the permanent generation (`gc.freeze`), which no collection scans: a full collection
then costs what the objects made since start-up cost.

Invariant: nothing alive is ever freed by this; the price is that a cycle among frozen objects
that becomes garbage while serving is not reclaimed until `thaw_heap`, which a process calls when
it stops serving (so a process that serves many times -- the test suite -- does not keep every
stopped server's heap).
"""

from __future__ import annotations

import gc


def freeze_heap() -> int:
    """Collect, then freeze everything alive; returns how many objects are frozen in all."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def thaw_heap() -> None:
    """Back to normal collection: what `freeze_heap` froze is collected again when garbage."""
    gc.unfreeze()
