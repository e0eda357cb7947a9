"""Test helpers: a small market config that exercises the ladder edges, and row builders."""

from __future__ import annotations

import numpy as np

from perp import layout as L
from perp.commands import FundTopUp, admin_payload
from perp.engine import Engine
from perp.markets import parse_markets, tier_schedule

T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z in ns
SECOND = 1_000_000_000

SMALL_MARKETS_TOML = """
[[market]]
symbol = "TEST-PERP"
series = "TEST.SERIES"
tick_size_usd = "0.01"
lot_gpu_hours = "1"
min_price_usd = "1.00"
max_price_usd = "4.00"
min_order_lots = 1
max_order_lots = 50
price_band_bps = 1000
market_protection_bps = 500
maker_fee_ppm = -100
taker_fee_ppm = 700
max_open_orders = 5
impact_notional_usd = "10"
mark_sample_interval_s = 1
mark_ema_half_life_s = 5
mark_band_bps = 300
[[market.tier]]
max_notional_usd = 1_000
max_leverage = 10
maintenance_margin_ppm = 50_000
[[market.tier]]
max_leverage = 5
maintenance_margin_ppm = 100_000

[[market]]
symbol = "TEST2-PERP"
series = "TEST.SERIES2"
tick_size_usd = "0.01"
lot_gpu_hours = "2"
min_price_usd = "1.00"
max_price_usd = "3.00"
min_order_lots = 2
max_order_lots = 40
price_band_bps = 800
market_protection_bps = 400
maker_fee_ppm = 200
taker_fee_ppm = 400
max_open_orders = 4
impact_notional_usd = "20"
mark_sample_interval_s = 2
mark_ema_half_life_s = 8
mark_band_bps = 200
default_leverage = 4
[[market.tier]]
max_leverage = 4
maintenance_margin_ppm = 125_000
"""

SMALL_MARKETS = parse_markets(SMALL_MARKETS_TOML, "tests")

SMALL_TIERS = {spec.symbol: tier_schedule(spec) for spec in SMALL_MARKETS.market}
RICH_MICRO = 10**12  # $1M: enough that margin never binds in the matching property tests


def small_engine(**kw) -> Engine:
    return know_top_ups(Engine(SMALL_MARKETS, **kw))


def fund_top_up(ts: int, account: int, amount_micro: int) -> FundTopUp:
    """An operator's audited `fund_top_up` into fund `account`: the only way money enters a fund."""
    return FundTopUp(ts_ns=ts, operator="tests", reason="fund the insurance fund", account=account,
                     amount_micro=amount_micro)


TOP_UP_PAYLOADS: dict[int, bytes] = {}  # the admin payloads of every top_up_row built (what a journal's side records hold)


def top_up_row(ts: int, account: int, amount_micro: int) -> np.ndarray:
    """The CK_ADMIN row of an operator's `fund_top_up` (the only way money enters a fund) for raw-row
    streams; its payload is kept in TOP_UP_PAYLOADS, which an engine must know (`know_top_ups`) to run it."""
    key, data = admin_payload(fund_top_up(ts, account, amount_micro))
    TOP_UP_PAYLOADS[key] = data
    return row(L.CK_ADMIN, ts, account=0, market=-1, otype=0, tif=0, clid=L.ADMIN_FUND_TOP_UP, order_id=key)


def know_top_ups(engine: Engine) -> Engine:
    """`engine` with the payloads of the top_up_row rows (as a replay reads them from the journal)."""
    engine.encoder.payloads.update(TOP_UP_PAYLOADS)
    return engine


def row(kind: int, ts: int, account: int = 0, market: int = 0, side: int = 0, otype: int = L.LIMIT,
        tif: int = L.GTC, price: int = 0, size: int = 0, clid: int = 0, order_id: int = 0,
        flags: int = 0) -> np.ndarray:
    r = np.zeros(L.N_CMD_COLS, np.int64)
    r[L.C_KIND] = kind
    r[L.C_TS] = ts
    r[L.C_ACCOUNT] = account
    r[L.C_MARKET] = market
    r[L.C_SIDE] = side
    r[L.C_TYPE] = otype
    r[L.C_TIF] = tif
    r[L.C_PRICE] = price
    r[L.C_SIZE] = size
    r[L.C_CLID] = clid
    r[L.C_ORDER_ID] = order_id
    r[L.C_FLAGS] = flags
    return r


def rows(*rs: np.ndarray) -> np.ndarray:
    return np.stack(rs) if rs else np.zeros((0, L.N_CMD_COLS), np.int64)


class Clock:
    """Strictly increasing command timestamps from T0, one nanosecond apart."""

    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> int:
        self.t += 1
        return self.t


def assert_money_conserved(eng: Engine) -> None:
    """The ledger identity, written out here (not Engine.money_conserved) so tests check it
    independently: sum(collateral) - sum(cost basis) + funds + fee ledger == deposits - withdrawals."""
    g = eng.ledger()
    assert (g["collateral_micro"] - g["cost_basis_micro"] + g["insurance_fund_micro"] + g["fee_ledger_micro"]
            == g["deposits_micro"] - g["withdrawals_micro"])
