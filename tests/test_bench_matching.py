"""The matching bench measures like for like: both books are driven batch by batch and hand every
batch's events to the same consumer; the engine's zero-copy hand-off gives exactly the events
`submit_rows` returns; the cancel mix reports how many cancels miss. No timing is asserted."""

from __future__ import annotations

import numpy as np

from perp import layout as L
from perp.bench import EventSink, PlainPythonBook, make_stream, run
from perp.engine import Engine
from perp.markets import load_markets, price_to_ticks

MARKETS = load_markets()


def test_stream_rows_hands_over_exactly_the_events_submit_rows_returns():
    cmds = make_stream(5_000, seed=3, index_ticks=21432, accounts=80)
    copied = Engine(MARKETS).submit_rows(cmds, batch=512)
    seen: list[np.ndarray] = []
    eng = Engine(MARKETS, event_rows=64)  # a small buffer: the hand-off survives buffer regrowth
    eng.stream_rows(cmds, lambda ev: seen.append(ev.copy()), batch=512)
    assert np.array_equal(np.concatenate(seen), copied)


def test_the_python_book_keeps_no_events_between_batches():
    spec = MARKETS.market[0]
    book = PlainPythonBook(spec.price_band_bps, spec.min_order_lots, spec.max_order_lots, spec.max_open_orders,
                           price_to_ticks(spec, spec.min_price_usd), price_to_ticks(spec, spec.max_price_usd))
    cmds = make_stream(3_000, seed=3, index_ticks=21432, accounts=80)
    sink = EventSink()
    first = book.process(cmds[:1500])
    sink.take(first)
    second = book.process(cmds[1500:])
    sink.take(second)
    assert book.events is second and first is not second
    assert sink.events == len(first) + len(second) and sink.batches == 2


def test_bench_json_reports_end_to_end_kernel_and_python_figures_and_the_cancel_misses():
    r = run(n=20_000, seed=42, batch=4096, repeats=1)
    for key in ("commands_per_s", "kernel_commands_per_s", "python_commands_per_s", "ratio_vs_python",
                "kernel_ratio_vs_python", "p50_batch_us", "p99_batch_us", "meets_target"):
        assert key in r
    assert r["kernel_commands_per_s"] >= r["commands_per_s"] > 0  # the kernel is part of end to end
    eng = Engine(MARKETS)
    ev = eng.submit_rows(make_stream(20_000, 42, 21432))
    assert r["events"] == ev.shape[0] and r["state_hash"] == eng.state_hash()
    rejected = ev[ev[:, L.E_KIND] == L.EV_REJECTED]
    assert r["cancel_unknown"] == int(np.count_nonzero(rejected[:, L.E_OTHER] == L.CK_CANCEL)) > 0
    assert 0 < r["cancel_unknown_rate"] < 0.5
