"""Money is conserved exactly, and a replay reaches the same state, with admin commands anywhere in the
stream (hypothesis): fee, tier, funding, OI-cap and liquidation-limit changes (immediate and pending across
the hours the stream crosses), pauses, status changes, fund floors and top-ups, mixed into the money and
liquidation streams of tests/test_conservation.py."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perp import layout as L
from perp.commands import (
    FundTopUp,
    SetFees,
    SetFundFloor,
    SetFundingParams,
    SetLiquidationParams,
    SetMarketStatus,
    SetOpenInterestCap,
    SetPauses,
    SetTiers,
)
from risk.tiers import LeverageTier
from tests.helpers import SECOND, small_engine
from tests.test_conservation import check_after_sweep, check_ledger, liquidation_streams, money_streams

MARKETS = ("TEST-PERP", "TEST2-PERP")
WHO = {"operator": "prop", "reason": "hypothesis"}
TIERS = {
    "TEST-PERP": [
        (LeverageTier(10, 50_000, 1_000), LeverageTier(5, 100_000)),  # the config's own
        (LeverageTier(10, 80_000, 200), LeverageTier(4, 200_000)),  # tighter: liquidations follow
        (LeverageTier(10, 30_000),),  # looser
    ],
    "TEST2-PERP": [
        (LeverageTier(4, 125_000),),
        (LeverageTier(4, 240_000),),
        (LeverageTier(5, 60_000, 100), LeverageTier(4, 90_000)),
    ],
}


@st.composite
def admin_command(draw, ts: int):
    m = draw(st.sampled_from(MARKETS))
    kind = draw(st.sampled_from(["fees", "tiers", "tiers", "funding", "oi", "liq", "pause", "status", "floor",
                                 "topup", "bad"]))
    if kind == "fees":
        taker = draw(st.integers(0, 2_000))
        return SetFees(ts_ns=ts, market=m, maker_fee_ppm=draw(st.integers(-taker // 2, 1_000)), taker_fee_ppm=taker,
                       **WHO)
    if kind == "tiers":
        eff = draw(st.sampled_from([0, ts, ts + SECOND, ts + 40 * 60 * SECOND]))
        return SetTiers(ts_ns=ts, market=m, tiers=draw(st.sampled_from(TIERS[m])), effective_ts_ns=eff,
                        confirm=draw(st.booleans()), **WHO)
    if kind == "funding":
        return SetFundingParams(ts_ns=ts, market=m, cap_ppb=draw(st.sampled_from([0, 10_000, 500_000, 10**9])),
                                clamp_ppb=draw(st.sampled_from([0, 50_000])), **WHO)
    if kind == "oi":
        return SetOpenInterestCap(ts_ns=ts, market=m, open_interest_cap_lots=draw(st.sampled_from([0, 5, 40, 1000])),
                                  **WHO)
    if kind == "liq":
        return SetLiquidationParams(ts_ns=ts, market=m, liquidation_max_per_sweep_usd=draw(st.sampled_from([0, 1, 50])),
                                    liquidation_fee_share_ppm=draw(st.sampled_from([0, 100_000, 900_000])), **WHO)
    if kind == "pause":
        ops = draw(st.lists(st.sampled_from(["trading", "liquidation", "funding", "withdrawals"]), max_size=3))
        return SetPauses(ts_ns=ts, market=draw(st.sampled_from([None, m])), paused=tuple(ops), **WHO)
    if kind == "status":
        return SetMarketStatus(ts_ns=ts, market=m, status=draw(st.sampled_from(["active", "active", "reduce_only",
                                                                                 "post_only", "halted"])), **WHO)
    if kind == "floor":
        return SetFundFloor(ts_ns=ts, floor_micro=draw(st.sampled_from([0, 10**6, 10**9])), **WHO)
    if kind == "topup":
        return FundTopUp(ts_ns=ts, account=0, amount_micro=draw(st.integers(1, 10**8)), **WHO)
    return SetFees(ts_ns=ts, market=m, maker_fee_ppm=0, taker_fee_ppm=-1, **WHO)  # refused: 5101


@st.composite
def with_admin(draw, base):
    rows = draw(base)
    n = draw(st.integers(1, 10))
    at = sorted(draw(st.lists(st.integers(0, rows.shape[0] - 1), min_size=n, max_size=n)))
    out: list = []
    for i, r in enumerate(rows):
        out.append(r)
        while at and at[0] == i:
            at.pop(0)
            out.append(draw(admin_command(int(r[L.C_TS]))))
    return out


def run_checked(stream, replay_batch: int) -> None:
    eng = small_engine()
    rows = []
    for item in stream:
        r = item if isinstance(item, np.ndarray) else eng.encoder.row(item)
        rows.append(r)
        clock = int(eng.state.g[L.G_LAST_TS])
        before = eng.state_hash(include_clock=False)
        ev = eng.submit_rows(r[None, :])
        check_ledger(eng)
        if ev.shape[0] == 1 and ev[0, L.E_KIND] == L.EV_REJECTED:  # a refused command changes nothing
            assert int(eng.state.g[L.G_LAST_TS]) == clock
            assert eng.state_hash(include_clock=False) == before
        if r[L.C_KIND] == L.CK_LIQUIDATE:
            check_after_sweep(eng, ev)
    again = small_engine()
    again.encoder.payloads.update(eng.encoder.payloads)  # what the journal's side records carry
    again.submit_rows(np.stack(rows), batch=replay_batch)
    assert again.state_hash() == eng.state_hash()
    assert again.audit_log() == eng.audit_log()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=with_admin(money_streams()))
def test_money_is_conserved_with_admin_commands_in_the_money_streams(stream):
    run_checked(stream, replay_batch=4096)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=with_admin(liquidation_streams()))
def test_money_is_conserved_with_admin_commands_through_liquidations(stream):
    run_checked(stream, replay_batch=5)
