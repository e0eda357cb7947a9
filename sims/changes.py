"""Mid-run parameter changes of a scenario (`[[changes]]`) as the engine's admin commands.

Nothing here changes a parameter: each change becomes the operator commands of docs/operations.md
(`set_funding_params`, `set_tiers`, `fund_top_up`, `set_fund_floor`, from perp.commands), sent by the
runner through the venue like any other command -- journaled, replayed, gated and audited by the
engine (in the gateway mode through the gateway's sequencer queue: protocol v1 has no admin methods
yet). `outcome` reads back what the engine did with each: applied (its `admin` event), when it took
effect (`admin_effective`), or refused (`Engine.rejection(seq)`: the field, the message and, for
tiers, the what-if), with the what-if the operator would have been shown before sending `set_tiers`.
"""

from __future__ import annotations

from perp import events as E
from perp.commands import Command, FundTopUp, SetFundFloor, SetFundingParams, SetTiers
from perp.markets import MarketSpec
from sims.scenario import Change

MICRO = 1_000_000
OPERATOR = "sims"


def admin_commands(c: Change, spec: MarketSpec, engine, ts_ns: int, effective_ts_ns: int,
                   fund_account: int = 0) -> list[Command]:
    """The commands for one change at `ts_ns`; the funding clamp or cap left out keeps the value in
    force (read from `Engine.market_params`)."""
    sym = spec.symbol
    why = f"{c.reason} (scenario change at hour {c.at_hour})"
    out: list[Command] = []
    if c.funding_cap_ppb is not None or c.funding_clamp_ppb is not None:
        now = engine.market_params(sym)
        out.append(SetFundingParams(ts_ns=ts_ns, operator=OPERATOR, reason=why, market=sym,
                                    cap_ppb=now["funding_cap_ppb"] if c.funding_cap_ppb is None else c.funding_cap_ppb,
                                    clamp_ppb=now["funding_clamp_ppb"] if c.funding_clamp_ppb is None
                                    else c.funding_clamp_ppb))
    if c.tiers is not None:
        out.append(SetTiers(ts_ns=ts_ns, operator=OPERATOR, reason=why, market=sym, tiers=c.tiers,
                            effective_ts_ns=effective_ts_ns, confirm=c.confirm))
    if c.fund_floor_usd is not None:
        out.append(SetFundFloor(ts_ns=ts_ns, operator=OPERATOR, reason=why, floor_micro=c.fund_floor_usd * MICRO,
                                market=sym))
    if c.fund_top_up_usd is not None:
        out.append(FundTopUp(ts_ns=ts_ns, operator=OPERATOR, reason=why, account=fund_account,
                             amount_micro=c.fund_top_up_usd * MICRO))
    return out


def outcome(engine, events, seq: int, change_index: int, cmd: Command, what_if=None) -> dict:
    """What the engine did with the admin command sequenced at `seq`."""
    import msgspec

    row = {"change": change_index, "seq": seq, "command": type(cmd).__struct_config__.tag}
    applied = [e for e in events if isinstance(e, E.AdminApplied) and e.seq == seq]
    if applied:
        a = applied[0]
        effective = [e.ts_ns for e in events if isinstance(e, E.AdminEffective) and e.origin_seq == seq]
        row.update(applied=True, effective_ts_ns=a.effective_ts_ns, pending=a.pending,
                   took_effect_ts_ns=effective[0] if effective else (None if a.pending else a.ts_ns))
    else:
        err = engine.rejection(seq)
        row.update(applied=False, code=None if err is None else int(err.code), field=None if err is None else err.field,
                   message=None if err is None else err.message)
    if what_if is not None:
        row["what_if"] = msgspec.to_builtins(what_if)
    return row
