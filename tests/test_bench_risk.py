"""`perp bench risk` measures what it says: the kernel agrees with its numpy reference (checked inside
`run`), and the engine-path figure really crosses funding hours that pay, through the engine's own
commands, with money conserved."""

from risk.bench import engine_path, run, stream_read_ms


def test_engine_path_pays_funding_each_timed_hour_and_conserves_money():
    r = engine_path(2_000, hours=3)
    assert r["hours"] == 3
    assert r["positions"] >= 1_998
    assert max(r["funding_rate_ppb"]) > 0  # the maker's quotes above the index make the longs pay
    assert r["funding_paid_micro"] > 0
    assert r["money_conserved"] is True
    assert r["hourly_ms"] > 0 and r["check_ms"] > 0


def test_kernel_sweep_figures_come_from_a_checked_run():
    r = run(5_000, seed=3, repeats=2, numpy_repeats=1)  # raises if the kernel and numpy disagree
    assert r["accounts"] == 5_000 and r["unhealthy"] >= 0
    assert stream_read_ms(r["bytes_per_sweep"], repeats=2) > 0
