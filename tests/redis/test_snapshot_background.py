"""The Redis engine's periodic snapshot leaves the sequencer's path: the engine copies its state and
goes on sequencing while a thread hashes, encodes and stores the copy one MiB per Redis command;
a store that fails is retried and trims nothing; a half-written snapshot is never read."""

from __future__ import annotations

import asyncio
import threading

from gateway import redis_journal as RJ
from gateway.engine_proc import EngineConfig, EngineProcess
from tests.gateway.conftest import run
from tests.redis.conftest import crash_engine
from tests.redis.test_journal_stream import _append, _commands, _until


def _cfg(redis_server, ns: str, every: int) -> EngineConfig:
    return EngineConfig(redis_url=redis_server.url, namespace=ns, index_feed=False, liquidation_interval_ms=0,
                        snapshot_every=every, keep_snapshots=2)


def test_the_engine_keeps_sequencing_while_its_snapshot_is_stored_and_the_stored_one_is_the_state_it_copied(
        redis_server, monkeypatch):
    keys = RJ.Keys("bg")
    r = redis_server.client()
    cmds = _commands(200)
    release = threading.Event()
    entered = threading.Event()
    real_store = RJ.store_snapshot

    def held_store(*args, **kw):  # the writer thread is held until the engine has moved on
        entered.set()
        assert release.wait(30)
        return real_store(*args, **kw)

    monkeypatch.setattr(RJ, "store_snapshot", held_store)

    async def go() -> tuple[int, str, int]:
        eng = EngineProcess(_cfg(redis_server, "bg", 50))
        await eng.start()
        _append(r, keys, cmds[:60])
        await _until(eng, 60)
        while not entered.is_set():
            await asyncio.sleep(0.01)
        snap_seq = eng._last_snapshot_seq
        _append(r, keys, cmds[60:])  # the snapshot's store is held: these are sequenced all the same
        await _until(eng, len(cmds))
        assert r.zcard(keys.snaps) == 0  # not listed until stored
        release.set()
        await eng.snapshot_settled()
        h = eng.engine.state_hash()
        await crash_engine(eng)
        return snap_seq, h, eng.engine.seq

    snap_seq, h, seq = run(go(), 60)
    assert 50 <= snap_seq < len(cmds)
    snaps = r.zrevrange(keys.snaps, 0, -1)
    assert len(snaps) == 1 and snaps[0].decode() == keys.snap(snap_seq)
    eng_snap, meta = RJ.engine_from_snapshot_bytes(r.get(snaps[0]))
    assert eng_snap.seq == snap_seq  # the copy taken then, not the engine that went on
    assert r.hget(keys.snapmeta, snaps[0]).decode() == f"{meta['seq_id']} {meta['cmd_id']}"
    rec = RJ.recover(r, keys)  # snapshot + the records after it reach the engine that went on
    assert rec.snapshot_seq == snap_seq and rec.engine.seq == seq and rec.engine.state_hash() == h


def test_a_failed_snapshot_store_trims_nothing_and_is_retried_from_a_fresh_copy(redis_server, monkeypatch):
    keys = RJ.Keys("bgfail")
    r = redis_server.client()
    cmds = _commands(200)
    calls: list[int] = []
    real_store = RJ.store_snapshot

    def failing_once(rr, kk, seq, blob, *rest, **kw):
        calls.append(seq)
        if len(calls) == 1:
            raise ConnectionError("redis went away mid-store")
        return real_store(rr, kk, seq, blob, *rest, **kw)

    monkeypatch.setattr(RJ, "store_snapshot", failing_once)

    async def go() -> str:
        eng = EngineProcess(_cfg(redis_server, "bgfail", 40))
        await eng.start()
        _append(r, keys, cmds[:50])
        await _until(eng, 50)
        await eng.snapshot_settled()
        assert r.zcard(keys.snaps) == 0 and r.xlen(keys.seq) > 0  # failed: nothing listed, nothing trimmed
        _append(r, keys, cmds[50:])
        await _until(eng, len(cmds))
        await eng.snapshot_settled()
        h = eng.engine.state_hash()
        await crash_engine(eng)
        return h

    h = run(go(), 60)
    assert len(calls) >= 2 and calls[1] > calls[0]  # retried at a later batch, from a newer copy
    assert r.zcard(keys.snaps) >= 1
    rec = RJ.recover(r, keys)
    assert rec.snapshot_seq == calls[-1] and rec.engine.state_hash() == h


def test_a_snapshot_is_stored_in_chunks_and_a_half_written_one_is_never_read(redis_server, monkeypatch):
    keys = RJ.Keys("chunks")
    r = redis_server.client()
    monkeypatch.setattr(RJ, "SNAPSHOT_CHUNK_BYTES", 4096)  # a test state is ~100 kB: many chunks
    cmds = _commands(120)

    def appends() -> int:
        return int(r.info("commandstats").get("cmdstat_append", {}).get("calls", 0))

    async def go() -> tuple[str, int]:
        eng = EngineProcess(_cfg(redis_server, "chunks", 0))
        await eng.start()
        _append(r, keys, cmds)
        await _until(eng, len(cmds))
        before = appends()
        size = eng.snapshot()
        assert size > 10 * 4096 and appends() - before == (size - 1) // 4096  # one SET, then one APPEND per chunk
        h = eng.engine.state_hash()
        await crash_engine(eng)
        return h, eng.engine.seq

    h, seq = run(go(), 60)
    [key] = r.zrevrange(keys.snaps, 0, -1)
    blob = r.get(key)
    assert RJ.engine_from_snapshot_bytes(blob)[0].state_hash() == h
    # a writer killed mid-store leaves only the unlisted partial key: recovery never reads it
    r.set(keys.snap_partial, blob[: len(blob) // 2])
    rec = RJ.recover(r, keys)
    assert rec.snapshot_seq == seq and rec.engine.state_hash() == h
    # and the next store overwrites it whole
    RJ.store_snapshot(r, keys, seq, blob, *r.hget(keys.snapmeta, key).decode().split())
    assert not r.exists(keys.snap_partial) and r.get(keys.snap(seq)) == blob
