"""Each kind of fix record (vintages, suppression, late strikes, bad records) through the anchor."""

from __future__ import annotations

import pytest
from oracle_factories import at, day, fix, hour_of, run

from oracle.errors import OracleCode
from oracle.records import Vintage
from oracle.validity import GATES, Validity

P, F, R = Vintage.PROVISIONAL, Vintage.FINAL, Vintage.REVISED


def test_provisional_drives_the_anchor_from_the_next_hour_and_final_confirms_without_moving_it():
    base = [fix(0, "3.0000"), fix(1, "3.3000")]
    with_finals = [fix(0, "3.0000"), fix(0, "3.0000", F), fix(1, "3.3000"), fix(1, "3.3000", F)]
    with_finals.sort(key=lambda r: r.published_ts_ns)
    _, plain, rej_plain = run(base, hour_of(3, 0))
    _, confirmed, rej_conf = run(with_finals, hour_of(3, 0))
    assert rej_plain == [] and rej_conf == []
    assert at(plain, 1, 0).fix_price_ticks == 30000  # day 1's fix strikes at 00:30
    assert at(plain, 1, 1).fix_price_ticks == 33000
    assert at(plain, 1, 1).anchor_price_ticks > 30000
    assert [p.anchor_micro_ticks for p in plain.values()] == [p.anchor_micro_ticks for p in confirmed.values()]


def test_final_that_differs_from_its_provisional_is_authoritative_from_the_next_hour():
    records = [fix(0, "3.0000"), fix(1, "3.3000"), fix(1, "3.2000", F, published_ns=hour_of(1, 12, 5))]
    _, points, rejections = run(records, hour_of(2, 0))
    assert rejections == []
    assert at(points, 1, 12).fix_price_ticks == 33000
    assert at(points, 1, 13).fix_price_ticks == 32000


def test_revision_inside_window_retargets_from_next_hour_and_keeps_the_past():
    before = [fix(0, "3.0000"), fix(1, "3.0000")]
    revision = fix(1, "3.3000", R, original="3.0000", published_ns=hour_of(1, 10, 15))
    _, unrevised, _ = run(before, hour_of(2, 0))
    _, revised, rejections = run(before + [revision], hour_of(2, 0))
    assert rejections == []
    for ts, point in unrevised.items():  # every hour up to 10:00 is the same: past funding stands
        if ts <= hour_of(1, 10):
            assert revised[ts] == point
    assert at(revised, 1, 10).fix_price_ticks == 30000
    assert at(revised, 1, 11).fix_price_ticks == 33000
    assert at(revised, 1, 11).anchor_price_ticks > at(unrevised, 1, 11).anchor_price_ticks


def test_revision_after_window_is_flagged_and_pending_but_never_moves_the_anchor():
    before = [fix(0, "3.0000"), fix(1, "3.1000")]
    late = fix(1, "3.5000", R, original="3.1000", published_ns=hour_of(2, 0, 45))  # 24h15m after strike
    _, plain, _ = run(before, hour_of(3, 2))
    _, flagged, rejections = run(before + [late], hour_of(3, 2))
    assert rejections == []
    assert [p.anchor_micro_ticks for p in plain.values()] == [p.anchor_micro_ticks for p in flagged.values()]
    point = at(flagged, 2, 1)
    assert point.validity is Validity.REVISED
    assert point.pending_fix_price_ticks == 35000 and point.fix_price_ticks == 31000
    assert point.gates == GATES[Validity.REVISED]
    assert "revised_after_window:2026-01-02" in point.notes
    assert Validity.REVISED in at(flagged, 3, 0).flags  # the flag lasts revised_flag_s (24 h)
    assert Validity.REVISED not in at(flagged, 3, 1).flags


def test_late_revision_is_the_pending_fix_for_its_flag_once_the_next_days_fix_is_out():
    """The realistic late revision lands after the next day's 00:30 fix: margin still sees its price
    (the worse of anchor and revised fix) while it is flagged, named by its own day."""
    records = [fix(0, "3.0000"), fix(1, "3.1000"), fix(2, "3.1000"),
               fix(1, "3.5000", R, original="3.1000", published_ns=hour_of(2, 0, 45))]
    anchor, points, rejections = run(records, hour_of(3, 2))
    assert rejections == []
    point = at(points, 2, 1)
    assert point.validity is Validity.REVISED and point.fix_date == day(2) and point.fix_price_ticks == 31000
    assert (point.pending_fix_price_ticks, point.pending_fix_date, point.pending_fix_vintage) == (35000, day(1), R)
    c = anchor.set_index_command(point, "H100-PERP")
    assert (c["fix_price"], c["fix_date"], c["fix_vintage"]) == ("3.5000", "2026-01-02", "revised")
    assert at(points, 3, 0).pending_fix_price_ticks == 35000  # 23h15m after the revision: still flagged
    after = at(points, 3, 1)  # 24h15m: the flag is over and day 2's fix drives the anchor
    assert Validity.REVISED not in after.flags and after.pending_fix_price_ticks is None


def test_suppressed_day_holds_target_and_flags_it_until_next_priced_fix():
    records = [fix(0, "3.0000"), fix(1, "3.6000"), fix(2, None, suppressed="2 venues survived"), fix(3, "3.3000")]
    _, points, rejections = run(records, hour_of(4, 0))
    assert rejections == []
    held = at(points, 2, 5)
    assert held.validity is Validity.SUPPRESSED and held.fix_price_ticks == 36000
    assert held.gates.funding_frozen and "suppressed:2 venues survived" in held.notes
    assert at(points, 3, 1).validity is Validity.FRESH and at(points, 3, 1).fix_price_ticks == 33000


def test_late_strike_acts_from_the_hour_after_it_lands_and_the_wait_shows_as_aging():
    late = fix(1, "3.3000", strike_ns=hour_of(1, 3, 10))
    _, points, rejections = run([fix(0, "3.0000"), late], hour_of(2, 0))
    assert rejections == []
    assert at(points, 1, 3).validity is Validity.AGING  # 26.5 h after day 0's strike, day 1 not out
    assert at(points, 1, 3).fix_price_ticks == 30000
    assert at(points, 1, 4).fix_price_ticks == 33000 and "late_strike" in at(points, 1, 4).notes


@pytest.mark.parametrize("second, code", [
    (fix(0, "3.0000"), OracleCode.DUPLICATE),
    (fix(0, "3.0100"), OracleCode.CONFLICTING_DUPLICATE),
    (fix(0, "3.0000", R, original="3.0000", published_ns=hour_of(0, 0, 40)), OracleCode.DUPLICATE),
    (fix(0, "3.1000", R, original="2.9000", published_ns=hour_of(0, 0, 40)), OracleCode.REVISION_ORIGINAL_MISMATCH),
    (fix(1, "3.1000", R, original="3.0000"), OracleCode.REVISION_OF_UNKNOWN_FIX),
])
def test_duplicate_conflicting_and_unmatched_records_are_rejected_and_change_nothing(second, code):
    anchor, _, _ = run([fix(0, "3.0000")], hour_of(0, 0))
    before = anchor.state_hash()
    rejection = anchor.ingest(second)
    assert rejection is not None and rejection.code is code and rejection.message
    assert anchor.state_hash() == before


def test_out_of_order_records_are_rejected_with_a_reason():
    _, _, rejections = run([fix(0, "3.0000"), fix(2, "3.1000"), fix(1, "3.2000", published_ns=hour_of(2, 0, 40))],
                           hour_of(3, 0))
    assert [r.code for r in rejections] == [OracleCode.OUT_OF_ORDER]
    assert "arrived after the fix for 2026-01-03" in rejections[0].message


def test_record_published_before_the_previous_one_is_out_of_order():
    anchor, _, _ = run([fix(0, "3.0000"), fix(1, "3.1000")], hour_of(1, 0, 40))
    rejection = anchor.ingest(fix(0, "3.0000", F, published_ns=hour_of(1, 0, 20)))
    assert rejection is not None and rejection.code is OracleCode.OUT_OF_ORDER


def test_record_published_at_an_hour_already_stepped_cannot_rewrite_it():
    anchor, _, _ = run([fix(0, "3.0000")], hour_of(0, 5))
    rejection = anchor.ingest(fix(0, "3.3000", R, original="3.0000", published_ns=hour_of(0, 4, 30)))
    assert rejection is not None and rejection.code is OracleCode.OUT_OF_ORDER
    assert "never rewritten" in rejection.message


def test_vintage_regression_is_rejected():
    anchor, _, _ = run([fix(0, "3.0000"), fix(0, "3.0000", F)], hour_of(1, 0, 40))
    rejection = anchor.ingest(fix(0, "3.0000", P, published_ns=hour_of(1, 0, 45)))
    assert rejection is not None and rejection.code is OracleCode.VINTAGE_REGRESSION


@pytest.mark.parametrize("price, code, validity", [
    ("NaN", OracleCode.NON_FINITE_PRICE, Validity.NON_POSITIVE),
    ("Infinity", OracleCode.NON_FINITE_PRICE, Validity.NON_POSITIVE),
    ("-3.1000", OracleCode.NON_POSITIVE_PRICE, Validity.NON_POSITIVE),
    ("0", OracleCode.NON_POSITIVE_PRICE, Validity.NON_POSITIVE),
    ("three", OracleCode.MALFORMED_PRICE, Validity.NON_POSITIVE),
    ("31373000", OracleCode.ABSURD_PRICE, Validity.TOO_VOLATILE),
    ("0.00001", OracleCode.ABSURD_PRICE, Validity.TOO_VOLATILE),
])
def test_bad_prices_are_rejected_never_move_the_anchor_and_flag_the_day(price, code, validity):
    good = [fix(0, "3.0000")]
    _, plain, _ = run(good, hour_of(2, 0))
    _, points, rejections = run(good + [fix(1, price)], hour_of(2, 0))
    assert [r.code for r in rejections] == [code]
    assert [p.anchor_micro_ticks for p in points.values()] == [p.anchor_micro_ticks for p in plain.values()]
    assert at(points, 1, 1).validity is validity
    assert at(points, 1, 0).validity is Validity.FRESH
    _, healed, _ = run(good + [fix(1, price), fix(1, "3.0500", published_ns=hour_of(1, 2, 0))], hour_of(2, 0))
    assert at(healed, 1, 2).validity is Validity.FRESH and at(healed, 1, 2).fix_price_ticks == 30500


def test_jump_past_limit_is_held_as_too_volatile_until_its_final_confirms_it():
    records = [fix(0, "3.0000"), fix(1, "4.5000"), fix(1, "4.5000", F)]
    _, points, rejections = run(records, hour_of(3, 0))
    assert rejections == []
    held = at(points, 1, 6)
    assert held.validity is Validity.TOO_VOLATILE and held.fix_price_ticks == 30000
    assert held.pending_fix_price_ticks == 45000 and held.gates.order_band_frozen
    assert at(points, 2, 1).fix_price_ticks == 45000 and at(points, 2, 1).validity is Validity.FRESH


def test_final_after_an_in_window_revision_confirms_a_held_jump_and_the_revised_price_stays():
    """An in-window revision always comes before the final (~24 h after the strike): the final confirms
    the day -- it releases the jump held as too_volatile -- and the revision keeps its price."""
    held_jump = [fix(0, "3.0000"), fix(1, "4.5000"),
                 fix(1, "4.6000", R, original="4.5000", published_ns=hour_of(1, 10, 15))]
    for final_price in ("4.6000", "4.5000"):  # the revised price, or the provisional's
        _, points, rejections = run(held_jump + [fix(1, final_price, F)], hour_of(2, 6))
        assert rejections == []
        assert at(points, 2, 0).validity is Validity.TOO_VOLATILE  # the final is published at 00:30
        assert at(points, 2, 0).pending_fix_price_ticks == 46000
        confirmed = at(points, 2, 1)
        assert confirmed.validity is Validity.FRESH and confirmed.fix_price_ticks == 46000
        assert confirmed.fix_vintage is R and confirmed.pending_fix_price_ticks is None


def test_source_without_a_fresh_fix_turns_aging_then_stale_and_reduce_only():
    _, points, _ = run([fix(0, "3.0000")], hour_of(3, 0))
    assert at(points, 1, 2).validity is Validity.FRESH  # 25.5 h old: the next fix is merely late
    assert at(points, 1, 3).validity is Validity.AGING  # 26.5 h
    assert at(points, 2, 0).validity is Validity.AGING  # 47.5 h
    stale = at(points, 2, 1)  # 48.5 h
    assert stale.validity is Validity.STALE and stale.gates.reduce_only and stale.fix_price_ticks == 30000


def test_record_for_another_series_or_source_is_rejected():
    anchor, _, _ = run([fix(0, "3.0000")], hour_of(0, 0))
    assert anchor.ingest(fix(1, "3.0000", series="GPUM.OTHER")).code is OracleCode.UNKNOWN_SERIES
    assert anchor.ingest(fix(1, "3.0000", source="elsewhere")).code is OracleCode.UNKNOWN_SOURCE


def test_structurally_inconsistent_records_are_rejected():
    anchor, _, _ = run([], hour_of(0, 0))
    cases = {
        OracleCode.SUPPRESSION_INCONSISTENT: fix(0, "3.0000", suppressed="why"),
        OracleCode.REVISION_WITHOUT_ORIGINAL: fix(0, "3.0000", R),
        OracleCode.STRIKE_OUTSIDE_FIX_DATE: fix(0, "3.0000", strike_ns=hour_of(1, 0, 30)),
        OracleCode.PUBLISHED_BEFORE_STRIKE: fix(0, "3.0000", published_ns=hour_of(0, 0, 10)),
        OracleCode.PUBLISHED_TOO_LATE: fix(0, "3.0000", published_ns=hour_of(367, 0)),
    }
    for code, record in cases.items():
        rejection = anchor.ingest(record)
        assert rejection is not None and rejection.code is code, (code, rejection)
    assert anchor.advance_to(hour_of(2, 0)) == []


def test_anchor_points_become_engine_set_index_commands_on_the_tick_grid():
    import msgspec

    from perp.commands import SetIndex

    anchor, points, _ = run([fix(0, "3.0000"), fix(1, "3.3000")], hour_of(1, 3))
    point = at(points, 1, 3)
    assert point.set_index_args("H100-PERP") == ("H100-PERP", hour_of(1, 3), point.anchor_price_ticks)
    command = msgspec.convert(anchor.set_index_command(point, "H100-PERP"), SetIndex)
    assert command.ts_ns == hour_of(1, 3) and command.market == "H100-PERP"
    assert command.price == f"{point.anchor_price_ticks // 10000}.{point.anchor_price_ticks % 10000:04d}"


def test_final_that_suppresses_the_only_priced_fix_holds_the_last_target_without_a_gap():
    # regression found by Hypothesis: the anchor went silent for a day once its only fix was withdrawn
    records = [fix(0, "3.0000"), fix(0, None, F, published_ns=hour_of(0, 1, 30), suppressed="recount: 2 venues")]
    _, points, rejections = run(records, hour_of(2, 3))
    assert rejections == []
    assert sorted(points) == list(range(hour_of(0, 1), hour_of(2, 3) + 1, 3600 * 10**9))
    held = at(points, 0, 2)
    assert held.validity is Validity.SUPPRESSED and held.fix_price_ticks == 30000
    assert "no_usable_fix:target_held" in held.notes
    assert at(points, 1, 5).flags == (Validity.AGING, Validity.SUPPRESSED)
    assert at(points, 2, 3).validity is Validity.STALE


def test_the_set_index_command_names_the_fix_its_date_and_the_vintage_the_oracle_holds():
    """Issue 15: the console shows the latest fix with its vintage. A provisional, its final, then a
    revision inside the window: each hour's command carries that day's date and the vintage held then."""
    records = [fix(0, "3.0000"), fix(1, "3.1000"), fix(1, "3.1000", F, published_ns=hour_of(1, 12, 5)),
               fix(1, "3.1500", R, original="3.1000", published_ns=hour_of(1, 18, 5))]
    anchor, points, rejections = run(records, hour_of(1, 20))
    assert rejections == []

    def rendered(hh: int) -> tuple:
        c = anchor.set_index_command(at(points, 1, hh), "H100-PERP")
        return c["fix_price"], c["fix_date"], c["fix_vintage"]

    assert at(points, 0, 5).fix_vintage is P
    assert rendered(1) == ("3.1000", "2026-01-02", "provisional")
    assert rendered(12) == ("3.1000", "2026-01-02", "provisional")  # the final is published at 12:05
    assert rendered(13) == ("3.1000", "2026-01-02", "final")
    assert rendered(19) == ("3.1500", "2026-01-02", "revised")


def test_a_held_jump_is_the_pending_fix_with_its_own_date_and_vintage():
    """fix_price is the newest word (a jump held as too_volatile): its date and vintage go with it."""
    records = [fix(0, "3.0000"), fix(1, "3.0000", F, published_ns=hour_of(1, 0, 40)), fix(2, "4.5000")]
    anchor, points, _ = run(records, hour_of(2, 3))
    point = at(points, 2, 3)
    assert point.validity is Validity.TOO_VOLATILE and point.fix_date == day(1) and point.fix_vintage is F
    c = anchor.set_index_command(point, "H100-PERP")
    assert (c["fix_price"], c["fix_date"], c["fix_vintage"]) == ("4.5000", "2026-01-03", "provisional")
