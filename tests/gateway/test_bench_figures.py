"""The gateway bench's figures stay strict JSON: a percentile of no samples is null, never NaN."""

import json

from gateway.bench import _pct


def test_a_percentile_of_no_samples_is_null_so_the_bench_json_stays_strict():
    figures = {"p50_fanout_ms": _pct([], 0.50), "p99_ack_ms_at_10k": _pct([], 0.99, 1e3)}
    assert figures == {"p50_fanout_ms": None, "p99_ack_ms_at_10k": None}
    assert json.loads(json.dumps(figures, allow_nan=False)) == figures


def test_a_percentile_takes_the_sample_at_its_rank_scaled_and_rounded():
    lat_s = [0.001 * i for i in range(1, 101)]  # 1..100 ms
    assert _pct(lat_s, 0.50, 1e3) == 51.0
    assert _pct(lat_s, 0.99, 1e3) == 100.0
