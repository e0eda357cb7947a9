"""One path into a fund (issue 15: a fund top-up is "the only deposit a fund takes"): every operator's
credit of a fund is an audited `fund_top_up`, so the audit log's top-ups sum to exactly the money the
funds received from operators; the retired `fund_deposit` is refused (1033) and credits nothing."""

from __future__ import annotations

import msgspec

from perp.codes import ResultCode
from perp.commands import Deposit, FundDeposit, SetIndex
from perp.engine import Engine
from perp.events import Deposited, FundDeposited, Rejected
from perp.sequencer import JournaledEngine, recover
from tests.helpers import SMALL_MARKETS, SMALL_TIERS, T0, fund_top_up


def _two_funds() -> Engine:
    one, two = SMALL_MARKETS.market
    markets = msgspec.structs.replace(SMALL_MARKETS, market=[one, msgspec.structs.replace(two, insurance_fund_account=1)])
    return Engine(markets, tiers=SMALL_TIERS)


def _commands() -> list:
    ts = T0
    cmds = [SetIndex(ts_ns=ts, market="TEST-PERP", price="2.00"), SetIndex(ts_ns=ts, market="TEST2-PERP", price="2.00")]
    for i, (account, amount) in enumerate([(0, 10**9), (1, 3 * 10**8), (0, 123_457), (5, 10**6), (1, 1),
                                           (101, 10**6), (0, 0)]):
        cmds.append(fund_top_up(ts + i, account, amount))  # 5 and 101 are no fund, 0 is no amount: refused
        cmds.append(FundDeposit(ts_ns=ts + i, account=account, amount_micro=10**6))  # retired: refused
        cmds.append(Deposit(ts_ns=ts + i, account=101 + i, amount_micro=10**7 + i))
    return cmds


def _audited_top_ups(e: Engine) -> int:
    entries = [x for x in e.audit_log() if x.command == "fund_top_up"]
    assert all(x.field == "fund_cash_micro" for x in entries)
    return sum(int(x.new) - int(x.old) for x in entries)


def test_the_audit_logs_top_ups_sum_to_the_money_the_funds_received_from_operators(tmp_path):
    live = JournaledEngine.open(tmp_path / "j.bin", markets=_two_funds().markets, fsync="never")
    events = live.engine.decode(live.submit_rows(live.engine.encode(_commands()), auto_liquidate=False))
    e = live.engine
    credited = [x for x in events if isinstance(x, FundDeposited)]
    audited_seqs = {x.seq for x in e.audit_log() if x.command == "fund_top_up"}
    assert [x.seq for x in credited] == sorted(audited_seqs)  # every credit of a fund is an audited top-up
    received = sum(x.amount_micro for x in credited)
    assert received == _audited_top_ups(e) == 10**9 + 3 * 10**8 + 123_457 + 1
    assert sum(e.ledger()["insurance_funds_micro"].values()) == received  # no trading: the funds hold just that
    # every micro-dollar that entered the venue came from a trader's deposit or an audited top-up
    traders = sum(x.amount_micro for x in events if isinstance(x, Deposited))
    assert e.ledger()["deposits_micro"] == traders + received
    retired = [x for x in events if isinstance(x, Rejected) and x.code == ResultCode.FUND_DEPOSIT_RETIRED]
    assert len(retired) == 7 and e.money_conserved()
    live.close()
    again = recover(tmp_path / "j.bin", markets=e.markets)  # the journal rebuilds the same log and funds
    assert again.state_hash() == e.state_hash() and _audited_top_ups(again) == received
