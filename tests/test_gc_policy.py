"""perp.gc_policy: a serving process freezes its start-up heap, so full collections skip it."""

import gc

from perp.gc_policy import freeze_heap
from tests.gateway.conftest import run, venue


def test_freezing_takes_every_live_object_out_of_the_oldest_generation_and_frees_start_up_cycles():
    class Node:
        pass

    garbage = Node()
    garbage.me = garbage  # a cycle that is garbage at freeze time: collected, not frozen
    del garbage
    live = [{"i": i} for i in range(20_000)]
    try:
        frozen = freeze_heap()
        assert frozen >= 20_000
        oldest = {id(o) for o in gc.get_objects(generation=2)}
        assert not any(id(d) in oldest for d in live[:100])
        assert not any(type(o) is Node for o in gc.get_objects())
    finally:
        gc.unfreeze()


def test_a_gateway_freezes_its_heap_while_it_serves_and_thaws_it_when_it_stops(tmp_path):
    gc.unfreeze()

    async def body():
        async with venue(tmp_path) as v, v.client("alice") as alice:
            assert gc.get_freeze_count() > 10_000  # numba, the modules, the venue's own start-up
            await alice.place("H100-PERP", "buy", 1, price="1.9500")
        assert gc.get_freeze_count() == 0  # stopped: its heap is collectable again

    try:
        run(body())
    finally:
        gc.unfreeze()
