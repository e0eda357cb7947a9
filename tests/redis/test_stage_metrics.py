"""`perp_gateway_stage_seconds`: where an own group commit's time goes on the way to its acks (queue,
append, engine, apply), on each gateway's /metrics; `perp bench gateway --redis` reads it around its
paced phase (gateway.bench_redis.stage_counts / stage_percentiles)."""

from __future__ import annotations

from gateway.bench_redis import stage_counts, stage_percentiles
from gateway.client import GatewayClient
from gateway.front import STAGES
from tests.gateway.conftest import ALICE, run
from tests.redis.conftest import MARKET, start_venue

INF = float("inf")


def test_each_own_group_commit_is_timed_once_in_every_stage_and_only_on_its_own_gateway(redis_server, procs,
                                                                                      tmp_path):
    creds, _eng, ga, gb = start_venue(redis_server, procs, tmp_path)

    async def body():
        async with GatewayClient(ga.url, creds["admin"]) as admin:
            await admin.deposit(ALICE, 1_000_000_000)
        before = stage_counts([ga.url]), stage_counts([gb.url])
        async with GatewayClient(ga.url, creds["alice"]) as alice:
            for i in range(6):  # one group commit each: every ack comes before the next order
                await alice.place(MARKET, "buy", 1, price=f"1.{9000 + i}", tif="post_only")
        return before, stage_counts([ga.url]), stage_counts([gb.url])

    (a0, b0), a1, b1 = run(body(), 120)
    on_a = stage_percentiles(a0, a1)
    assert set(on_a) == set(STAGES) and {s["batches"] for s in on_a.values()} == {6}
    assert all(0 < s["p50_ms"] <= s["p99_ms"] < 1000 for s in on_a.values())
    assert stage_percentiles(b0, b1) == {}  # the other gateway applied them, timed none
    assert all(b1[stage][INF] == b0.get(stage, {}).get(INF, 0) for stage in b1)


def test_stage_percentiles_interpolate_within_the_bucket_that_holds_them_and_count_only_the_interval():
    after = {"queue": {0.001: 50, 0.002: 99, 0.004: 100, INF: 100}, "apply": {0.001: 0, 0.002: 0, INF: 3}}
    before = {"queue": {0.001: 10, 0.002: 10, 0.004: 10, INF: 10}}
    got = stage_percentiles(before, after)
    assert got["queue"] == {"batches": 90, "p50_ms": 1.102, "p99_ms": 2.2}  # 40 under 1 ms, 49 in (1, 2], 1 in (2, 4]
    assert got["apply"] == {"batches": 3, "p50_ms": None, "p99_ms": None}  # past the last finite bound
    assert stage_percentiles(after, after) == {}
