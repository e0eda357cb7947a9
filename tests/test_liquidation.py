"""The liquidation waterfall on hand-computed scenarios (default H100-PERP: 1 tick x 1 lot = 100
micro-USD, maintenance 10% up to $250k, liquidation fee 10% of the closed part's maintenance
margin, positions above $100k in 20% chunks 30 s apart).

Account 101 is long 2,000 lots bought at 2.0000 from account 102 with $900 of collateral (a $2.00
taker fee leaves $898). Account 0 is the insurance fund, topped up by the operator (fund_top_up); trader ids start at 16."""

from __future__ import annotations

from perp.commands import (
    Deposit,
    Liquidate,
    Place,
    SetIndex,
    SetInsuranceFloor,
)
from perp.engine import Engine
from perp.events import Fill, LiquidationStep
from tests.helpers import SECOND, T0, assert_money_conserved, fund_top_up

M = "H100-PERP"


def steps(events, phase=None):
    out = [e for e in events if isinstance(e, LiquidationStep)]
    return [e for e in out if e.phase == phase] if phase else out


def assert_conserved(e: Engine) -> None:
    assert_money_conserved(e)
    assert int(e.state.position_lots[:, 0].sum()) == 0


def long_2000(fund_usd: int = 10_000, engine: Engine | None = None) -> Engine:
    e = Engine() if engine is None else engine
    e.submit([SetIndex(ts_ns=T0, market=M, price="2.0000"),
              fund_top_up(T0, 0, fund_usd * 10**6),
              Deposit(ts_ns=T0, account=101, amount_micro=900 * 10**6),
              Deposit(ts_ns=T0, account=102, amount_micro=10_000 * 10**6),
              Deposit(ts_ns=T0, account=103, amount_micro=100_000 * 10**6),
              Place(ts_ns=T0 + 1, account=102, market=M, side="sell", size_lots=2000, price="2.0000"),
              Place(ts_ns=T0 + 2, account=101, market=M, side="buy", size_lots=2000, price="2.0000")])
    assert e.position_lots(101, 0) == 2000 and e.account(101).collateral_micro == 898_000_000
    return e


def test_full_liquidation_through_the_book_with_its_fee():
    e = long_2000()
    events = e.submit([Place(ts_ns=T0 + 3, account=103, market=M, side="buy", size_lots=3000, price="1.9000"),
                       SetIndex(ts_ns=T0 + 4, market=M, price="1.7000"),
                       Liquidate(ts_ns=T0 + 5)])
    assert not [ev for ev in events if type(ev).__name__ == "Rejected"]
    (started,) = steps(events, "started")
    # equity = 898 - 2,000 x 0.30 = $298 < maintenance 10% x $3,400 = $340
    assert (started.amount_micro, started.other) == (298_000_000, 340_000_000)
    (order,) = steps(events, "order")
    # bankruptcy price: 17,000 - floor(298,000,000 / (2,000 x 100)) = 15,510 ticks
    assert (order.price_ticks, order.lots, order.filled) == (15_510, 2000, 2000)
    assert [f.price for f in events if isinstance(f, Fill) and f.account == 101] == ["1.9000"]
    (fee,) = steps(events, "fee")
    assert fee.amount_micro == 34_000_000  # 10% of the $340 maintenance margin of the closed 2,000 lots
    # realised (19,000 - 20,000) x 2,000 x 100 = -$200; 898 - 200 - 34 = $664 left
    assert e.position_lots(101, 0) == 0 and e.account(101).collateral_micro == 664_000_000
    assert not steps(events, "backstop") and not steps(events, "adl")
    assert_conserved(e)


def test_a_gap_through_the_bankruptcy_price_is_paid_by_the_fund():
    e = long_2000()
    fund_before = e.ledger()["insurance_fund_micro"]
    events = e.submit([SetIndex(ts_ns=T0 + 4, market=M, price="1.5000"), Liquidate(ts_ns=T0 + 5)])
    (started,) = steps(events, "started")
    assert started.amount_micro == -102_000_000  # 898 - 2,000 x 0.50: bankrupt by $102
    (backstop,) = steps(events, "backstop")
    # the empty book takes nothing; the fund buys 2,000 lots at the bankruptcy price
    # 15,000 - floor(-102,000,000 / 200,000) = 15,510, worth 15,000: a $102 loss at the mark
    assert (backstop.lots, backstop.price_ticks, backstop.amount_micro) == (2000, 15_510, 102_000_000)
    assert e.account(101).equity_micro == 0 and e.position_lots(101, 0) == 0
    assert e.position_lots(0, 0) == 2000  # an ordinary position the fund can close through the book
    fund = e.account(0)
    assert fund.equity_micro == fund_before - 102_000_000
    assert_conserved(e)


def _shorts(e: Engine, accounts: dict[int, int]) -> None:
    """Give each account a 1,000-lot short at 2.0000 against rich account 106, with its deposit ($)."""
    cmds = [Deposit(ts_ns=T0 + 10, account=106, amount_micro=10**12)]
    for a, usd in accounts.items():
        cmds += [Deposit(ts_ns=T0 + 10, account=a, amount_micro=usd * 10**6),
                 Place(ts_ns=T0 + 10, account=106, market=M, side="buy", size_lots=1000, price="2.0000"),
                 Place(ts_ns=T0 + 10, account=a, market=M, side="sell", size_lots=1000, price="2.0000")]
    events = e.submit(cmds)
    assert not [ev for ev in events if type(ev).__name__ == "Rejected"]


def test_a_fund_at_its_floor_triggers_adl_by_rank_at_the_bankruptcy_price():
    e = long_2000(fund_usd=50)
    _shorts(e, {104: 1_000})  # account 104: 1,000 lots short on $1,000 -- more leverage than account 102
    floor = e.ledger()["insurance_fund_micro"]  # the fund may lose nothing
    events = e.submit([SetInsuranceFloor(ts_ns=T0 + 20, amount_micro=floor),
                       SetIndex(ts_ns=T0 + 21, market=M, price="1.5000"), Liquidate(ts_ns=T0 + 22)])
    (start,) = steps(events, "adl_start")
    assert (start.lots, start.price_ticks, start.other) == (2000, 15_510, floor)
    adl = steps(events, "adl")
    # each ADL step explains itself: the bankrupt account's loss, the fund's equity and floor, the rank
    assert all((s.bankrupt_equity_micro, s.fund_equity_micro, s.fund_floor_micro)
               == (start.filled, start.amount_micro, floor) for s in adl)
    assert adl[0].bankrupt_equity_micro < 0
    # ranks: PnL% x leverage; both shorts gained 25%, account 104 is levered ~2x more than account 102
    assert [(s.account, s.lots, s.price_ticks) for s in adl] == [(104, 1000, 15_510), (102, 1000, 15_510)]
    assert adl[0].amount_micro > adl[1].amount_micro
    assert e.position_lots(104, 0) == 0 and e.position_lots(102, 0) == -1000 and e.position_lots(101, 0) == 0
    # the October 2025 complaint, checked from our events: ranked ADL against a pro-rata split of
    # the same 2,000 lots over the winners' sizes (account 102: 2,000 lots, account 104: 1,000 lots)
    ranked = {s.account: s.lots for s in adl}
    pro_rata = {102: 2000 * 2000 // 3000, 104: 2000 - 2000 * 2000 // 3000}
    print(f"ADL ranked {ranked} vs pro-rata {pro_rata}; total {sum(ranked.values())} = {sum(pro_rata.values())}")
    assert sum(ranked.values()) == sum(pro_rata.values()) == 2000
    assert ranked[104] > pro_rata[104]  # the most levered winner gives up more than its pro-rata share
    assert_conserved(e)


def test_adl_ties_go_to_the_lowest_account_id():
    e = long_2000(fund_usd=50)
    # account 102's short (2,000 lots) is closed first to leave two identical winners
    e.submit([Deposit(ts_ns=T0 + 5, account=107, amount_micro=10**12),
              Place(ts_ns=T0 + 6, account=107, market=M, side="sell", size_lots=2000, price="2.0000"),
              Place(ts_ns=T0 + 7, account=102, market=M, side="buy", size_lots=2000, price="2.0000")])
    _shorts(e, {105: 1_000, 104: 1_000})
    e.submit([SetInsuranceFloor(ts_ns=T0 + 20, amount_micro=e.ledger()["insurance_fund_micro"])])
    # account 107 (short 2,000 on $1M) ranks far below the two identical 1,000-lot shorts
    events = e.submit([SetIndex(ts_ns=T0 + 21, market=M, price="1.5000"), Liquidate(ts_ns=T0 + 22)])
    adl = steps(events, "adl")
    assert [(s.account, s.lots) for s in adl] == [(104, 1000), (105, 1000)]
    assert adl[0].amount_micro == adl[1].amount_micro
    assert_conserved(e)


def _two_small_shorts_and_a_bankrupt_long() -> Engine:
    """Account 101: 1 lot short on $0.41 ($0.409 after its taker fee); account 102: 100 lots short
    on $43.85 ($43.75 after its fee); account 103: 100 lots long on $41; all at 2.0000, then the
    index falls to 1.5000. Both shorts gained 25%; at the mark 101 is levered 1.50 / 0.909 = 1.65x
    and 102 is levered 150 / 93.75 = 1.60x, so 101 ranks first. With basis and equity floored to
    whole dollars, 101's equity $0.909 counted as $0 (divisor 1: 1.5x) and it ranked 375,000,
    behind 102's 400,000."""
    e = Engine()
    usd = 10**6
    e.submit([SetIndex(ts_ns=T0, market=M, price="2.0000"), fund_top_up(T0, 0, 1 * usd),
              Deposit(ts_ns=T0, account=120, amount_micro=10**10),
              Deposit(ts_ns=T0, account=101, amount_micro=410_000),
              Deposit(ts_ns=T0, account=102, amount_micro=43_850_000),
              Deposit(ts_ns=T0, account=103, amount_micro=41 * usd),
              Place(ts_ns=T0 + 1, account=120, market=M, side="buy", size_lots=101, price="2.0000"),
              Place(ts_ns=T0 + 2, account=101, market=M, side="sell", size_lots=1, price="2.0000"),
              Place(ts_ns=T0 + 3, account=102, market=M, side="sell", size_lots=100, price="2.0000"),
              Place(ts_ns=T0 + 4, account=120, market=M, side="sell", size_lots=100, price="2.0000"),
              Place(ts_ns=T0 + 5, account=103, market=M, side="buy", size_lots=100, price="2.0000"),
              SetIndex(ts_ns=T0 + 6, market=M, price="1.5000")])
    assert e.position_lots(101, 0) == -1 and e.position_lots(102, 0) == -100
    return e


def _exact_rank(e: Engine, a: int) -> int:
    """PnL% x leverage in ppm x ppm / 1e6 from Python ints (1 tick x 1 lot = 100 micro-USD)."""
    notional = int(e.state.position_lots[a, 0]) * e.mark_ticks(0) * 100
    basis = int(e.state.cost_basis_micro[a, 0])
    return ((notional - basis) * 10**6 // abs(basis)) * (abs(notional) * 10**6 // e.account(a).equity_micro) // 10**6


def test_adl_ranks_small_accounts_exactly_and_takes_the_more_levered_winner_first():
    e = _two_small_shorts_and_a_bankrupt_long()
    x, y = e.adl_standing(101), e.adl_standing(102)
    # 250,000 ppm x 1,650,165 ppm / 1e6 against 250,000 ppm x 1,600,000 ppm / 1e6
    assert (x.rank, y.rank) == (_exact_rank(e, 101), _exact_rank(e, 102)) == (412_541, 400_000)
    assert (x.place, y.place) == (1, 2)
    e.submit([SetInsuranceFloor(ts_ns=T0 + 7, amount_micro=e.ledger()["insurance_fund_micro"])])
    assert e.account(103).equity_micro < 0
    events = e.submit([Liquidate(ts_ns=T0 + 8)])
    adl = [(s.account, s.lots, s.amount_micro) for s in steps(events, "adl") if s.other == 103]
    assert adl[0] == (101, 1, 412_541)  # the event carries the rank it was taken at
    assert [a for a, _, _ in adl] == [101, 102]
    assert_conserved(e)


def test_a_large_position_is_liquidated_in_a_chunk_that_restores_health_then_cools_down():
    e = Engine()
    e.submit([SetIndex(ts_ns=T0, market=M, price="2.0000"),
              fund_top_up(T0, 0, 10**10),
              Deposit(ts_ns=T0, account=101, amount_micro=26_000 * 10**6),
              Deposit(ts_ns=T0, account=102, amount_micro=10**12), Deposit(ts_ns=T0, account=103, amount_micro=10**12),
              Place(ts_ns=T0 + 1, account=102, market=M, side="sell", size_lots=60_000, price="2.0000"),
              Place(ts_ns=T0 + 2, account=101, market=M, side="buy", size_lots=60_000, price="2.0000")])
    events = e.submit([SetIndex(ts_ns=T0 + 3, market=M, price="1.7300"),
                       Place(ts_ns=T0 + 4, account=103, market=M, side="buy", size_lots=40_000, price="1.7290"),
                       Liquidate(ts_ns=T0 + 5)])
    (started,) = steps(events, "started")
    assert started.amount_micro > 0 and started.amount_micro < started.other  # unhealthy, not bankrupt
    (order,) = steps(events, "order")
    assert (order.lots, order.filled) == (12_000, 12_000)  # the 20% chunk (more than the 14.7% needed)
    view = e.account(101)
    assert e.position_lots(101, 0) == 48_000 and view.equity_micro >= view.maintenance_margin_micro
    # the market keeps falling; within the 30 s cooldown no new chunk, after it one more
    e.submit([SetIndex(ts_ns=T0 + 6, market=M, price="1.7000")])
    assert e.account(101).equity_micro < e.account(101).maintenance_margin_micro
    assert not steps(e.submit([Liquidate(ts_ns=T0 + 7)]), "order")
    later = e.submit([Liquidate(ts_ns=T0 + 5 + 30 * SECOND)])
    # 48,000 lots x $1.70 = $81,600, under the $100k partial threshold: the rest goes in one order
    assert steps(later, "order")[0].lots == 48_000
    assert_conserved(e)


def test_accounts_without_positions_never_bear_a_loss():
    e = long_2000(fund_usd=50)
    e.submit([Deposit(ts_ns=T0 + 5, account=109, amount_micro=5 * 10**6),
              SetInsuranceFloor(ts_ns=T0 + 6, amount_micro=e.ledger()["insurance_fund_micro"])])
    e.submit([SetIndex(ts_ns=T0 + 7, market=M, price="1.5000"), Liquidate(ts_ns=T0 + 8)])
    assert e.account(109).collateral_micro == 5 * 10**6
    assert_conserved(e)


def test_bench_liquidation_prints_its_figures_and_conserves_money():
    import json

    from click.testing import CliRunner

    from perp.cli import main

    result = CliRunner().invoke(main, ["bench", "liquidation", "--accounts", "20000", "--json"])
    assert result.exit_code == 0, result.output
    r = json.loads(result.output.strip().splitlines()[-1])
    for key in ("accounts", "liquidations", "cascade_s", "backstop", "adl"):
        assert key in r
    assert r["liquidations"] > 0 and r["money_conserved"] and r["unhealthy_before"] == r["liquidations"]


def test_the_sequencer_sweeps_after_a_mark_move_and_replay_reproduces_it(tmp_path):
    from perp.sequencer import JournaledEngine, recover

    live = JournaledEngine.open(tmp_path / "j.bin")
    e = live.engine
    cmds = [SetIndex(ts_ns=T0, market=M, price="2.0000"),
            fund_top_up(T0, 0, 10_000 * 10**6),
            Deposit(ts_ns=T0, account=101, amount_micro=900 * 10**6),
            Deposit(ts_ns=T0, account=102, amount_micro=10_000 * 10**6),
            Place(ts_ns=T0 + 1, account=102, market=M, side="sell", size_lots=2000, price="2.0000"),
            Place(ts_ns=T0 + 2, account=101, market=M, side="buy", size_lots=2000, price="2.0000")]
    live.submit_rows(e.encode(cmds))
    rows = live.submit_rows(e.encode([SetIndex(ts_ns=T0 + 3, market=M, price="1.5000")]))
    phases = [s.phase for s in steps(e.decode(rows))]
    assert "started" in phases and "backstop" in phases  # swept without anyone asking
    live.close()
    assert recover(tmp_path / "j.bin").state_hash() == e.state_hash()
