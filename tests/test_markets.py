"""Market specs: the embedded default loads; each bad field is rejected with a message naming it."""

from __future__ import annotations

import pytest

from perp.markets import (
    MarketSpecError,
    load_markets,
    micro_per_tick_lot,
    parse_markets,
    price_to_ticks,
    ticks_to_price,
)

MARKET = """
[[market]]
symbol = "X-PERP"
series = "S"
tick_size_usd = "0.0001"
lot_gpu_hours = "1"
min_price_usd = "0.01"
max_price_usd = "20"
"""
# every spec needs its leverage tiers (issue 9, rule 7), written after the market's own fields
TIER = """[[market.tier]]
max_leverage = 5
maintenance_margin_ppm = 100_000
"""
GOOD = MARKET + TIER


def test_the_embedded_default_has_the_h100_market_on_the_gpu_markets_series():
    (spec,) = load_markets().market
    assert spec.symbol == "H100-PERP" and spec.series == "GPUM.H100.SXM.SPOT"
    assert micro_per_tick_lot(spec) == 100  # $0.0001 x 1 GPU-hour = 100 micro-USD


@pytest.mark.parametrize("field, value, message", [
    ("tick_size_usd", '"abc"', "tick_size_usd"),
    ("tick_size_usd", '"-0.01"', "tick_size_usd"),
    ("lot_gpu_hours", '"0.0000001"', "whole number of micro-USD"),
    ("min_price_usd", '"0.00015"', "min_price_usd"),
    ("max_price_usd", '"0.001"', "below max_price_usd"),
    ("max_order_lots", "0", "max_order_lots"),
    ("price_band_bps", "0", "price_band_bps"),
    ("market_protection_bps", "900", "market_protection_bps"),
    ("maker_fee_ppm", "-600", "rebate"),
    ("taker_fee_ppm", "200000", "taker_fee_ppm"),
    ("mark_ema_half_life_s", "0", "mark_ema_half_life_s"),
    ("symbol", '"bad symbol!"', "symbol"),
    ("funding_cap_ppb", "1000000001", "funding_cap_ppb must be at most 1000000000"),
    ("funding_clamp_ppb", "1000000001", "funding_clamp_ppb must be at most 1000000000"),
    ("default_leverage", "6", "default_leverage 6 exceeds the first tier's max_leverage 5"),
    ("max_clock_step_s", "0", "max_clock_step_s"),
])
def test_a_bad_field_is_rejected_with_its_name(field, value, message):
    # the field goes into the market's own table, before its [[market.tier]] rows
    lines = [ln for ln in MARKET.strip().splitlines() if not ln.startswith(f"{field} ")]
    text = "\n".join(lines) + f"\n{field} = {value}\n" + TIER
    with pytest.raises(MarketSpecError, match=message) as err:
        parse_markets(text)
    assert "unknown field" not in str(err.value)


def test_a_market_needs_its_leverage_tiers():
    with pytest.raises(MarketSpecError, match="tier: a market needs its leverage tiers"):
        parse_markets(MARKET)


@pytest.mark.parametrize("share_ppm, ok", [(0, True), (1, False), (200_000, False)])
def test_a_maker_rebate_may_not_make_the_fee_ledger_negative(share_ppm, ok):
    # taker 500 ppm; the venue keeps 500 x (1 - share) and pays a 500 ppm rebate: only with no share
    text = MARKET + f"maker_fee_ppm = -500\nfee_share_to_fund_ppm = {share_ppm}\n" + TIER
    if ok:
        parse_markets(text)
    else:
        with pytest.raises(MarketSpecError, match="maker_fee_ppm.*fee ledger"):
            parse_markets(text)


def test_a_tiers_stated_max_leverage_is_selectable_exactly():
    from perp.engine import Engine
    from risk.ledger import max_leverage

    text = MARKET + "default_leverage = 3\n" + TIER.replace("max_leverage = 5", "max_leverage = 3")
    e = Engine(parse_markets(text))
    assert max_leverage(e.state, 0) == 3  # 1e6 // ceil(1e6 / 3) would say 2


def test_unknown_fields_and_duplicate_markets_are_rejected():
    with pytest.raises(MarketSpecError, match="tick_sise_usd"):
        parse_markets(GOOD + 'tick_sise_usd = "1"\n')
    with pytest.raises(MarketSpecError, match="defined twice"):
        parse_markets(GOOD + GOOD)
    with pytest.raises(MarketSpecError, match="max_price_usd"):
        parse_markets(GOOD.replace('max_price_usd = "20"\n', ""))


def test_prices_off_the_tick_grid_are_rejected_never_rounded():
    spec = parse_markets(GOOD).market[0]
    assert price_to_ticks(spec, "2.1432") == 21432
    assert ticks_to_price(spec, 21432) == "2.1432"
    with pytest.raises(ValueError, match="tick grid"):
        price_to_ticks(spec, "2.14325")


@pytest.mark.parametrize("field, at_bound, beyond", [
    # each bound is int64-safe after its scaling: beyond it, spec_row's x 1e6 (USD) or x 1e9 (s) would overflow
    ("liquidation_cooldown_s", "86400", "10000000000"),  # 1e10 s x 1e9 = 1e19 ns > 2^63
    ("liquidation_partial_above_usd", "1000000000000", "10000000000000"),  # 1e13 USD x 1e6 > 2^63
    ("withdraw_floor_ppm", "1000000", "9223372036854775808"),  # 2^63: not even an int64
    ("liquidation_buffer_ppm", "1000000", "1000001"),  # a fraction of MM (risk.intmath.ppm_of_ceil: <= 1e6)
    ("open_interest_cap_lots", "1000000000000000", "9223372036854775808"),
    ("impact_notional_usd", '"1000000000000"', '"1e30"'),  # 1e30 x 1e6 / 100 overflowed Decimal's // (28 digits)
    ("impact_notional_usd", '"1000"', '"' + "1" * 41 + '"'),  # longer than 40 characters
])
def test_each_field_is_bounded_where_its_scaled_value_still_fits_the_int64_spec_row(field, at_bound, beyond):
    from perp.markets import spec_row

    def text(value: str) -> str:
        lines = [ln for ln in MARKET.strip().splitlines() if not ln.startswith(f"{field} ")]
        return "\n".join(lines) + f"\n{field} = {value}\n" + TIER

    (spec,) = parse_markets(text(at_bound)).market
    assert spec_row(spec).dtype.name == "int64"  # the largest value allowed packs
    with pytest.raises(MarketSpecError, match=field):
        parse_markets(text(beyond))
