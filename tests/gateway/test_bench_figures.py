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


def test_the_cpu_budget_gives_each_role_and_the_machine_in_cores_per_wall_second():
    import os

    from gateway.bench import cpu_budget

    b = cpu_budget(2.0, (10.0, 1.0), (13.0, 1.5), server=1.9, traders=0.5)
    assert b == {"cores": os.cpu_count(), "machine_busy": 1.5, "machine_steal": 0.25, "server": 0.95, "traders": 0.25}


def test_the_machine_cpu_counter_counts_this_process_spinning():
    import time

    from gateway.bench import _machine_cpu_s

    busy0, _ = _machine_cpu_s()
    t = time.process_time()
    while time.process_time() - t < 0.3:
        pass
    assert _machine_cpu_s()[0] - busy0 >= 0.25


def test_the_fanout_bench_writes_every_push_to_every_subscriber_on_both_paths():
    """`perp bench fanout` measures real writes: each of the 2 paths x 2 rounds x 5 pushes reached
    each of the 40 watchers (they count what they parse), and the figures are strict JSON."""
    from gateway.bench_fanout import run

    r = run(subscribers=40, pushes=5, interval_ms=5.0, rounds=2)
    assert r["subscribers"] == 40
    assert r["frames_received"] == 40 * 5 * 2 * 2
    assert r["queue_us_per_subscriber"] > 0 and r["kernel_us_per_subscriber"] > 0
    assert json.loads(json.dumps(r, allow_nan=False)) == r


def test_the_machine_probe_measures_the_host_beside_the_figures_as_strict_json(tmp_path):
    """`perp bench gateway` prints the host's Python speed, fsync and loopback round trip next to
    its figures: positive, ordered (p50 <= p99), strict JSON, and the fsync probe leaves no file."""
    from gateway.bench_machine import probe, text

    m = probe(tmp_path)
    assert m["cores"] >= 1 and m["python_ns_per_op"] > 0
    for k in ("fsync_ms", "loopback_round_trip_us"):
        assert 0 < m[k]["p50"] <= m[k]["p99"]
    assert list(tmp_path.iterdir()) == []
    assert json.loads(json.dumps(m, allow_nan=False)) == m
    assert text(m).startswith(f"{m['cores']} cores")


def test_the_python_speed_probe_reads_a_busier_cpu_as_slower():
    """The probe times the loop it runs: with a second thread spinning on the GIL, the same loop
    takes longer per op (the probe is not a constant)."""
    import threading

    from gateway.bench_machine import python_ns_per_op

    quiet = python_ns_per_op(repeats=3)
    stop = threading.Event()

    def spin() -> None:
        x = 0
        while not stop.is_set():
            x += 1

    t = threading.Thread(target=spin)
    t.start()
    try:
        busy = python_ns_per_op(repeats=3)
    finally:
        stop.set()
        t.join()
    assert busy > 1.2 * quiet  # about 2x: the spinner holds the GIL half the time
