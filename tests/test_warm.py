"""perp.warm: the scratch session that compiles the kernels before a server opens its port."""

from perp import layout as L
from perp.warm import warm_kernels
from tests.helpers import SMALL_MARKETS


def test_warm_kernels_runs_a_trade_a_funding_hour_and_a_crash_into_adl_without_a_rejection():
    w = warm_kernels()
    assert {L.EV_ACCEPTED, L.EV_FILL, L.EV_AMENDED, L.EV_CANCELLED, L.EV_DEPOSIT, L.EV_WITHDRAWAL,
            L.EV_LEVERAGE, L.EV_INDEX, L.EV_MARK, L.EV_FUNDING, L.EV_LIQUIDATION} <= w.event_kinds
    assert L.EV_REJECTED not in w.event_kinds
    assert {L.LQ_STARTED, L.LQ_ORDER, L.LQ_ADL, L.LQ_DONE} <= w.liquidation_phases


def test_warm_kernels_works_on_another_venues_first_market():
    w = warm_kernels(SMALL_MARKETS)
    assert L.EV_REJECTED not in w.event_kinds and L.EV_FILL in w.event_kinds
