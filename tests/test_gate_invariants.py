"""Properties of the gate (hypothesis), checked after every single command of random streams that mix
every trader command (amends, withdrawals, leverage changes included), venue accounts, huge values,
oracle gates, timestamps that jump ahead and regress, and the liquidation sweep:

- a rejected command leaves the logical state hash and the clock as they were;
- money is conserved, summed exactly;
- no account id below 16 ever has an order;
- an accepted place or amend that opened exposure -- raised the account's worst case, grew a
  position or flipped it -- leaves it at or above initial margin under the oracle's gates (every
  path that raises exposure passed the same check; reduce-only orders give no room to shelter one).
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perp import layout as L
from perp.kernel import canonical_orders
from risk.ledger import gated_equity_and_im, worst_case_lots
from tests.helpers import SECOND, T0, assert_money_conserved, row, small_engine

HOUR = 3600 * SECOND
TRADERS = (16, 17, 18, 19)
VENUE = (0, 3, 15)


@st.composite
def gate_streams(draw):
    ts = T0
    out = [row(L.CK_SET_INDEX, ts, market=0, price=200), row(L.CK_SET_INDEX, ts, market=1, price=160)]
    out += [row(L.CK_DEPOSIT, ts, account=a, size=draw(st.integers(10**6, 10**8))) for a in TRADERS]
    for _ in range(draw(st.integers(10, 70))):
        step = draw(st.sampled_from([0, 1, 1, SECOND, SECOND, 61 * SECOND, 61 * SECOND, HOUR, 2 * HOUR + 1,
                                     30 * 24 * HOUR, -SECOND]))
        probe = ts + step
        if step not in (2 * HOUR + 1, 30 * 24 * HOUR, -SECOND):
            ts = probe  # jumps too far ahead and regressions are probes: the clock must not follow them
        if step == HOUR:
            out.append(row(L.CK_LIQUIDATE, ts))  # the sequencer's timer: time passes with or without orders
        kind = draw(st.sampled_from(["place", "place", "place", "mkt", "amend", "rest_amend", "rest_amend", "cancel",
                                     "dep", "bigdep",
                                     "wd", "lev", "index", "gates", "liq", "status"]))
        a = draw(st.sampled_from(TRADERS * 4 + VENUE))
        m = draw(st.sampled_from([0, 0, 1]))
        base = 200 if m == 0 else 160
        if kind in ("place", "mkt"):
            out.append(row(L.CK_PLACE, probe, account=a, market=m, side=draw(st.integers(0, 1)),
                           otype=L.MARKET if kind == "mkt" else L.LIMIT,
                           tif=L.IOC if kind == "mkt" else draw(st.sampled_from([L.GTC, L.GTC, L.IOC, L.POST_ONLY])),
                           price=base + draw(st.integers(-10, 10)), size=draw(st.integers(2, 40)),
                           clid=draw(st.integers(0, 6)), flags=draw(st.sampled_from([0, 0, 0, L.FLAG_REDUCE_ONLY]))))
        elif kind == "rest_amend":  # a resting order, then an amend that grows (or reprices) it
            clid = draw(st.integers(1, 6))
            side = draw(st.integers(0, 1))
            price = base + (-draw(st.integers(1, 10)) if side == L.BUY else draw(st.integers(1, 10)))
            out.append(row(L.CK_PLACE, probe, account=a, market=m, side=side, tif=L.POST_ONLY, price=price,
                           size=draw(st.integers(2, 10)), clid=clid))
            out.append(row(L.CK_AMEND, probe, account=a, market=m, clid=clid,
                           price=draw(st.sampled_from([0, 0, price + (-1 if side == L.BUY else 1)])),
                           size=draw(st.integers(11, 50))))
        elif kind == "amend":
            # by client order id, so that amends mostly find the account's own live orders
            out.append(row(L.CK_AMEND, probe, account=a, market=m, clid=draw(st.integers(1, 6)),
                           price=draw(st.sampled_from([0, 0, base + draw(st.integers(-15, 15))])),
                           size=draw(st.sampled_from([0, draw(st.integers(1, 40)), 2**62]))))
        elif kind == "cancel":
            out.append(row(L.CK_CANCEL, probe, account=a, order_id=draw(st.integers(1, 40))))
        elif kind == "dep":
            out.append(row(L.CK_DEPOSIT, probe, account=a, size=draw(st.integers(1, 10**7))))
        elif kind == "bigdep":
            out.append(row(L.CK_DEPOSIT, probe, account=a, size=draw(st.sampled_from([10**15, 2**62, 2**63 - 1]))))
        elif kind == "wd":
            out.append(row(L.CK_WITHDRAW, probe, account=a, size=draw(st.integers(1, 10**9))))
        elif kind == "lev":
            out.append(row(L.CK_SET_LEVERAGE, probe, account=a, market=m, size=draw(st.integers(1, 12))))
        elif kind == "index":
            out.append(row(L.CK_SET_INDEX, probe, market=m, price=base + draw(st.integers(-40, 40))))
        elif kind == "gates":
            r = row(L.CK_SET_INDEX, probe, market=m, price=base + draw(st.integers(-20, 20)),
                    flags=draw(st.integers(0, L.GATE_ALL)))
            r[L.C_SIZE] = draw(st.sampled_from([1_000_000, 750_000, 500_000, 250_000]))
            r[L.C_ORDER_ID] = draw(st.sampled_from([0, base - 12, base + 12]))
            out.append(r)
        elif kind == "liq":
            out.append(row(L.CK_LIQUIDATE, probe))
        else:
            out.append(row(L.CK_SET_STATUS, probe, market=m, flags=draw(st.sampled_from([0, 0, 1, 2, 3, 4]))))
    return np.stack(out)


def _worst(st_, a):
    return [worst_case_lots(int(st_.position_lots[a, m]), int(st_.acct_mkt[a, m, L.AM_OPEN_BUY_LOTS]),
                            int(st_.acct_mkt[a, m, L.AM_OPEN_SELL_LOTS])) for m in range(st_.mkt.shape[0])]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(gate_streams())
def test_every_command_passes_the_gate_or_changes_nothing(cmds):
    eng = small_engine()
    for r in cmds:
        a = int(r[L.C_ACCOUNT])
        kind = int(r[L.C_KIND])
        trader = 0 <= a < eng.state.accounts.shape[0] and kind in (L.CK_PLACE, L.CK_AMEND)
        before_hash = eng.state_hash(include_clock=False)
        before_ts = int(eng.state.g[L.G_LAST_TS])
        worst_before = _worst(eng.state, a) if trader else None
        pos_before = [int(p) for p in eng.state.position_lots[a]] if trader else None
        ev = eng.submit_rows(r[None, :])
        assert ev.shape[0] >= 1
        if ev[0, L.E_KIND] == L.EV_REJECTED and ev.shape[0] == 1:
            assert eng.state_hash(include_clock=False) == before_hash, (kind, int(ev[0, L.E_CODE]))
            assert int(eng.state.g[L.G_LAST_TS]) == before_ts
        else:
            assert int(eng.state.g[L.G_LAST_TS]) == int(r[L.C_TS])
            if trader:
                worst_after = _worst(eng.state, a)
                pos_after = [int(p) for p in eng.state.position_lots[a]]
                opened = any(w1 > w0 for w0, w1 in zip(worst_before, worst_after)) or any(
                    abs(p1) > abs(p0) or p0 * p1 < 0 for p0, p1 in zip(pos_before, pos_after))
                if opened:  # a raised worst case, a larger position or a flip: the pre-trade check
                    equity, im = gated_equity_and_im(eng.state, a, -1, 0, 0)
                    assert equity >= im, (kind, a, equity, im)
        assert_money_conserved(eng)
        assert eng.money_conserved()
        orders = canonical_orders(eng.state)
        assert not np.any(orders[:, 4] < 16)
