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

GOOD = """
[[market]]
symbol = "X-PERP"
series = "S"
tick_size_usd = "0.0001"
lot_gpu_hours = "1"
min_price_usd = "0.01"
max_price_usd = "20"
[[market.tier]]
max_leverage = 5
maintenance_margin_ppm = 100_000
"""


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
])
def test_a_bad_field_is_rejected_with_its_name(field, value, message):
    lines = [ln for ln in GOOD.strip().splitlines() if not ln.startswith(f"{field} ")]
    text = "\n".join(lines) + f"\n{field} = {value}\n"
    with pytest.raises(MarketSpecError, match=message):
        parse_markets(text)


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
