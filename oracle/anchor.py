"""Hourly EMA anchor over daily fixes: the index price the engine receives through ``set_index``.

Pure: no clock, no I/O, no logging. Records go in with ``ingest`` (in publication order), hours come
out of ``advance_to``; ``replay`` does both over a list. The edge (readers, CLI, engine wiring) logs.

Invariants:
- One ``AnchorPoint`` per whole UTC hour from the first hour at or after the first usable fix's
  publication, with no gaps: if every usable fix is later withdrawn (a final that suppresses its
  provisional), the last target is held and flagged ``suppressed``. The point at hour ``H`` uses
  exactly the records published at or before ``H``.
- A record published at or before an hour already stepped is rejected (``OUT_OF_ORDER``): past
  anchors, and so paid funding, are never rewritten. A revision therefore acts from the next hour.
- The state is integers: the anchor is an ``int`` of micro-ticks; the step is
  ``alpha_ppb * (target - anchor) / 1e9`` rounded away from zero (toward the target), so the anchor
  never overshoots and reaches a constant fix exactly; with ``max_hourly_move_ppm`` the step is capped
  at ``max(1, prev_anchor_ticks * ppm // 1e6)`` whole ticks. Published ticks round the micro-ticks
  half up, which commutes with whole-tick shifts, so the published move obeys the same cap.
- The anchor always lies between the smallest and the largest target it has been given (the first
  point is seeded at the first target; every step is a convex move toward the current target).
- Same records, same config -> same points, byte for byte (``state_hash`` proves equal states).

Vintages (see docs/oracle.md): a provisional fix drives the anchor from the next hour; its final
confirms it (and releases a fix held as ``too_volatile``); a revision published within
``provisional_window_s`` of the strike retargets from the next hour, and the final that follows it
confirms the day without undoing it (the revised price stays); a later revision is recorded,
flagged ``revised`` for ``revised_flag_s`` and exposed as ``pending_fix_price_ticks`` for margin (the
newest flagged one, also once the next day's fix is out; after its flag only while its own day's fix
drives the anchor; a held jump comes first), but never moves the anchor. A suppressed day holds the
target (the last usable fix) and flags it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

import msgspec

from oracle.errors import PRICE_CODES, OracleCode, OracleError, Rejection
from oracle.records import (
    VINTAGE_RANK,
    FixRecord,
    Vintage,
    check_record,
    scheduled_strike_ns,
)
from oracle.units import (
    HOUR_NS,
    MICRO_TICKS_PER_TICK,
    NS_PER_S,
    PPB,
    PPM,
    alpha_ppb_for_half_life,
    div_toward_target,
    median_of_two_half_up,
    micro_to_ticks_half_up,
    next_hour_at_or_after,
    parse_decimal,
    parse_tick_size,
    ticks_to_usd,
    usd_to_micro_ticks,
)
from oracle.validity import SEVERITY, Gates, Validity, gates_for, worst

DEFAULT_SOURCE = "gpumarkets.dev"


DEFAULT_MAX_HOURLY_MOVE_PPM = 10_000  # see AnchorConfig.max_hourly_move_ppm


class AnchorConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Operator parameters of one series' anchor (all durations in seconds, ratios in ppm)."""

    series_id: str
    tick_size_usd: str = "0.0001"
    half_life_s: int = 6 * 3600
    # 1%/h, on by default: on the shipped H100 path (180 fixes) the largest daily move is 2.5% and the
    # largest hourly anchor step 0.27%, so the cap never binds on a normal day; it binds only on a gap
    # above ~9% (3.6x the largest seen), which it walks in at <= 1% an hour -- less than a 5x
    # account's 10% maintenance buffer can lose in one hour. 0 turns it off.
    max_hourly_move_ppm: int = DEFAULT_MAX_HOURLY_MOVE_PPM
    sources: tuple[str, ...] = (DEFAULT_SOURCE,)
    primary_source: str = DEFAULT_SOURCE
    fresh_max_age_s: int = 26 * 3600  # a daily fix plus two hours' grace for a late strike
    stale_after_s: int = 48 * 3600  # one whole missed fix
    provisional_window_s: int = 24 * 3600
    max_source_spread_ppm: int = 20_000
    max_fix_jump_ppm: int = 250_000
    max_price_usd: str = "1000"
    late_strike_grace_s: int = 300
    revised_flag_s: int = 24 * 3600


def validate_config(config: AnchorConfig) -> tuple[Decimal, Decimal, int]:
    """Check the config; returns (tick, max price, alpha_ppb). Raises ``OracleError(BAD_CONFIG)``."""
    tick = parse_tick_size(config.tick_size_usd)
    alpha_ppb = alpha_ppb_for_half_life(config.half_life_s)
    problems = []
    if not config.series_id:
        problems.append("series_id is empty")
    if not config.sources or len(set(config.sources)) != len(config.sources):
        problems.append("sources must be a non-empty list without repeats")
    if config.primary_source not in config.sources:
        problems.append(f"primary_source {config.primary_source!r} is not in sources")
    if not 0 <= config.max_hourly_move_ppm <= PPM:
        problems.append("max_hourly_move_ppm must be in [0, 1_000_000]")
    if not 0 < config.fresh_max_age_s <= config.stale_after_s:
        problems.append("need 0 < fresh_max_age_s <= stale_after_s")
    for name in ("provisional_window_s", "max_source_spread_ppm", "max_fix_jump_ppm",
                 "late_strike_grace_s", "revised_flag_s"):
        if getattr(config, name) < 0:
            problems.append(f"{name} must be >= 0")
    try:
        max_price = parse_decimal(config.max_price_usd)
        if not max_price.is_finite() or max_price <= tick:
            problems.append("max_price_usd must be finite and above one tick")
    except ArithmeticError:
        problems.append(f"max_price_usd {config.max_price_usd!r} is not a decimal")
        max_price = Decimal(0)
    if problems:
        raise OracleError(OracleCode.BAD_CONFIG, "; ".join(problems))
    return tick, max_price, alpha_ppb


class AnchorPoint(msgspec.Struct, frozen=True, kw_only=True):
    """The anchor at one whole hour, with the fix it tracks and why it is (not) fresh."""

    series_id: str
    ts_ns: int
    anchor_price_ticks: int
    anchor_micro_ticks: int
    fix_price_ticks: int
    fix_date: dt.date
    fix_vintage: Vintage  # the vintage of the fix of fix_date as the oracle holds it at this hour
    fix_strike_ts_ns: int
    fix_age_s: int
    pending_fix_price_ticks: int | None
    validity: Validity
    flags: tuple[Validity, ...]
    notes: tuple[str, ...]
    gates: Gates
    pending_fix_date: dt.date | None = None  # the fix the pending price is (a held jump's day, or fix_date)
    pending_fix_vintage: Vintage | None = None

    def set_index_args(self, market: str) -> tuple[str, int, int]:
        """``(market, ts_ns, index_price_ticks)`` for the engine's ``set_index`` command."""
        return (market, self.ts_ns, self.anchor_price_ticks)


@dataclass
class _Day:
    fix_date: dt.date
    strike_ts_ns: int
    vintage: Vintage
    price_micro: int | None
    first_price_micro: int | None
    suppression_reason: str | None
    confirmed: bool = False  # a final has arrived
    quarantined: bool = False  # jumped past max_fix_jump_ppm and not yet confirmed
    late_revision_micro: int | None = None
    late_revision_ts_ns: int | None = None


@dataclass
class _Source:
    days: dict[dt.date, _Day] = field(default_factory=dict)
    latest_date: dt.date | None = None
    fault: tuple[dt.date, Validity] | None = None

    def usable(self, before: dt.date | None = None) -> _Day | None:
        """The newest day with a price that is not held, optionally strictly before ``before``."""
        for day in sorted(self.days, reverse=True):
            if before is not None and day >= before:
                continue
            d = self.days[day]
            if d.price_micro is not None and not d.quarantined:
                return d
        return None


@dataclass
class _View:
    source: str
    day: _Day
    age_ns: int
    flags: set[Validity]
    notes: set[str]
    pending_micro: int | None
    pending_day: _Day | None = None  # the day whose price pending_micro is


def hourly_cap_ticks(anchor_ticks: int, max_hourly_move_ppm: int) -> int:
    """The most the anchor may move in one hourly step from `anchor_ticks`: `max_hourly_move_ppm` of it,
    in whole ticks, at least one."""
    return max(1, anchor_ticks * max_hourly_move_ppm // PPM)


def _median(values: list[int]) -> int:
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[mid]
    return median_of_two_half_up(ordered[mid - 1], ordered[mid])


class HourlyAnchor:
    """Stateful, pure EMA anchor for one series. See the module docstring for the rules."""

    def __init__(self, config: AnchorConfig) -> None:
        self.config = config
        self.tick_usd, self.max_price_usd, self.alpha_ppb = validate_config(config)
        self._sources: dict[str, _Source] = {name: _Source() for name in config.sources}
        self._anchor_micro: int | None = None
        self._stepped_through_ns: int | None = None
        self._last_published_ns: int | None = None
        self._first_published_ns: int | None = None
        # last target: (micro-ticks, fix date, strike ns, vintage)
        self._held: tuple[int, dt.date, int, Vintage] | None = None
        self._manual: dict[dt.date, dict[str, int | None]] = {}  # operator-suppressed days: source -> price kept

    # ------------------------------------------------------------------ operator changes (admin commands)
    def reconfigure(self, **overrides: int) -> None:
        """Change operator parameters (half_life_s, max_hourly_move_ppm, fresh_max_age_s, stale_after_s):
        validated like the config (``OracleError(BAD_CONFIG)``), in effect from the next hour stepped.
        Past anchors are never rewritten."""
        config = msgspec.structs.replace(self.config, **overrides)
        self.tick_usd, self.max_price_usd, self.alpha_ppb = validate_config(config)
        self.config = config

    def set_manual_suppressions(self, fix_dates: Iterable[dt.date]) -> None:
        """The days an operator suppressed (the whole set): each source's fix of such a day loses its price,
        as a published suppression does (the last usable target is held and flagged ``suppressed``); a day
        no longer in the set gets its price back. Applies to records of those days ingested later too: a
        record of a suppressed day (a revision, a final) replaces the price kept for it and the day stays
        suppressed, so lifting it restores the newest record's price."""
        wanted = set(fix_dates)
        for day in [d for d in self._manual if d not in wanted]:
            for name, price in self._manual.pop(day).items():
                d = self._sources[name].days.get(day)
                if d is not None:
                    d.price_micro, d.suppression_reason = price, None
        for day in wanted:
            self._manual.setdefault(day, {})
        self._apply_manual()

    def _apply_manual(self) -> None:
        for day, kept in self._manual.items():
            for name, src in self._sources.items():
                d = src.days.get(day)
                if d is not None and d.suppression_reason != "operator":
                    kept[name] = d.price_micro
                    d.price_micro, d.suppression_reason = None, "operator"

    # ------------------------------------------------------------------ records
    def ingest(self, record: FixRecord) -> Rejection | None:
        """Apply one record (records must come in publication order); returns why it was refused."""
        checked = check_record(record, series_id=self.config.series_id, sources=self.config.sources,
                               tick_usd=self.tick_usd, max_price_usd=self.max_price_usd)
        where = record.key()
        if isinstance(checked, Rejection):
            self._maybe_flag_fault(record, checked)
            return checked
        if self._stepped_through_ns is not None and record.published_ts_ns <= self._stepped_through_ns:
            return Rejection(code=OracleCode.OUT_OF_ORDER, where=where,
                             message=f"published at {record.published_ts_ns} ns, at or before the hour "
                                     f"{self._stepped_through_ns} ns already stepped; past anchors are "
                                     f"never rewritten")
        if self._last_published_ns is not None and record.published_ts_ns < self._last_published_ns:
            return Rejection(code=OracleCode.OUT_OF_ORDER, where=where,
                             message=f"published at {record.published_ts_ns} ns, before the previous "
                                     f"record ({self._last_published_ns} ns)")
        price, original = checked
        price_micro = None if price is None else usd_to_micro_ticks(price, self.tick_usd)
        original_micro = None if original is None else usd_to_micro_ticks(original, self.tick_usd)
        source = self._sources[record.source]
        day = source.days.get(record.fix_date)
        kept = self._manual.get(record.fix_date)
        if day is not None and kept is not None and day.suppression_reason == "operator":
            # an operator-suppressed day: the record acts on the price kept for it (the store lifting the
            # suppression restores), then _apply_manual suppresses the day again
            day.price_micro, day.suppression_reason = kept.pop(record.source, None), None
        rejection = (self._new_day(source, record, price_micro) if day is None
                     else self._update_day(source, day, record, price_micro, original_micro))
        if kept is not None:
            self._apply_manual()
        if rejection is not None:
            return rejection
        self._last_published_ns = record.published_ts_ns
        if self._first_published_ns is None:
            self._first_published_ns = record.published_ts_ns
        if source.fault is not None and record.fix_date >= source.fault[0]:
            source.fault = None
        return None

    def _maybe_flag_fault(self, record: FixRecord, rejection: Rejection) -> None:
        """A price-class rejection for a day newer than any we hold flags the source (never moves it)."""
        if rejection.code not in PRICE_CODES or record.source not in self._sources:
            return
        source = self._sources[record.source]
        if source.latest_date is not None and record.fix_date <= source.latest_date:
            return
        kind = Validity.TOO_VOLATILE if rejection.code is OracleCode.ABSURD_PRICE else Validity.NON_POSITIVE
        source.fault = (record.fix_date, kind)

    def _jumps(self, source: _Source, fix_date: dt.date, price_micro: int) -> bool:
        previous = source.usable(before=fix_date)
        if previous is None or previous.price_micro is None:
            return False
        ref = previous.price_micro
        return abs(price_micro - ref) * PPM > self.config.max_fix_jump_ppm * ref

    def _new_day(self, source: _Source, record: FixRecord, price_micro: int | None) -> Rejection | None:
        where = record.key()
        if record.vintage is Vintage.REVISED:
            return Rejection(code=OracleCode.REVISION_OF_UNKNOWN_FIX, where=where,
                             message=f"no fix held for {record.fix_date.isoformat()} to revise")
        if source.latest_date is not None and record.fix_date <= source.latest_date:
            return Rejection(code=OracleCode.OUT_OF_ORDER, where=where,
                             message=f"fix for {record.fix_date.isoformat()} arrived after the fix for "
                                     f"{source.latest_date.isoformat()}")
        confirmed = record.vintage is Vintage.FINAL
        day = _Day(fix_date=record.fix_date, strike_ts_ns=record.strike_ts_ns, vintage=record.vintage,
                   price_micro=price_micro, first_price_micro=price_micro,
                   suppression_reason=record.suppression_reason, confirmed=confirmed)
        if price_micro is not None and not confirmed:
            day.quarantined = self._jumps(source, record.fix_date, price_micro)
        source.days[record.fix_date] = day
        source.latest_date = record.fix_date
        return None

    def _update_day(self, source: _Source, day: _Day, record: FixRecord, price_micro: int | None,
                    original_micro: int | None) -> Rejection | None:
        where = record.key()
        if record.vintage is Vintage.FINAL and day.vintage is Vintage.REVISED and not day.confirmed:
            return self._confirm_revised_day(day, record)
        incoming, held = VINTAGE_RANK[record.vintage], VINTAGE_RANK[day.vintage]
        if incoming < held:
            return Rejection(code=OracleCode.VINTAGE_REGRESSION, where=where,
                             message=f"{record.vintage.value} arrived after {day.vintage.value}")
        if record.vintage is Vintage.REVISED:
            if original_micro != day.first_price_micro:
                return Rejection(code=OracleCode.REVISION_ORIGINAL_MISMATCH, where=where,
                                 message=f"original price {record.original_price_usd} is not the price "
                                         f"first published for {record.fix_date.isoformat()}")
            current = day.late_revision_micro if day.late_revision_micro is not None else day.price_micro
            if price_micro == current:
                return Rejection(code=OracleCode.DUPLICATE, where=where, message="revision repeats the held price")
            day.vintage = Vintage.REVISED
            in_window = record.published_ts_ns < day.strike_ts_ns + self.config.provisional_window_s * NS_PER_S
            if in_window:
                day.price_micro = price_micro
                day.quarantined = (not day.confirmed) and self._jumps(source, day.fix_date, price_micro)  # type: ignore[arg-type]
            else:
                day.late_revision_micro = price_micro
                day.late_revision_ts_ns = record.published_ts_ns
            return None
        same = (price_micro == day.price_micro and record.strike_ts_ns == day.strike_ts_ns
                and record.suppression_reason == day.suppression_reason)
        if incoming == held:
            code = OracleCode.DUPLICATE if same else OracleCode.CONFLICTING_DUPLICATE
            detail = "repeats the held record" if same else "differs from the held record; corrections must be revisions"
            return Rejection(code=code, where=where, message=f"{record.vintage.value} {detail}")
        if record.strike_ts_ns != day.strike_ts_ns:
            return Rejection(code=OracleCode.CONFLICTING_DUPLICATE, where=where,
                             message="final's strike time differs from the provisional's")
        # provisional -> final: the final confirms (and is authoritative if it differs).
        day.vintage = Vintage.FINAL
        day.confirmed = True
        day.quarantined = False
        day.price_micro = price_micro
        day.suppression_reason = record.suppression_reason
        if day.first_price_micro is None:
            day.first_price_micro = price_micro
        return None

    @staticmethod
    def _confirm_revised_day(day: _Day, record: FixRecord) -> Rejection | None:
        """The final of a day already revised (an in-window revision always comes before the ~24 h
        final): it confirms the day -- a held jump is released -- and the revision, the publisher's
        correction, keeps its price and vintage."""
        if record.strike_ts_ns != day.strike_ts_ns:
            return Rejection(code=OracleCode.CONFLICTING_DUPLICATE, where=record.key(),
                             message="final's strike time differs from the revised fix's")
        day.confirmed = True
        day.quarantined = False
        return None

    # ------------------------------------------------------------------ hours
    def advance_to(self, ts_ns: int) -> list[AnchorPoint]:
        """Step every whole hour in (last stepped hour, ``ts_ns``]; returns the points produced."""
        if self._stepped_through_ns is None:
            if self._first_published_ns is None:
                return []
            hour = next_hour_at_or_after(self._first_published_ns)
        else:
            hour = self._stepped_through_ns + HOUR_NS
        points = []
        while hour <= ts_ns:
            point = self._step(hour)
            if point is not None:
                points.append(point)
            self._stepped_through_ns = hour
            hour += HOUR_NS
        return points

    def replay(self, records: Iterable[FixRecord], until_ts_ns: int) -> tuple[list[AnchorPoint], list[Rejection]]:
        """Interleave ``records`` (in stream order) with the hourly steps up to ``until_ts_ns``."""
        points: list[AnchorPoint] = []
        rejections: list[Rejection] = []
        for record in records:
            points.extend(self.advance_to(record.published_ts_ns - 1))
            rejection = self.ingest(record)
            if rejection is not None:
                rejections.append(rejection)
        points.extend(self.advance_to(until_ts_ns))
        return points, rejections

    def _view(self, name: str, source: _Source, hour_ns: int) -> _View | None:
        day = source.usable()
        if day is None:
            return None
        cfg = self.config
        flags: set[Validity] = set()
        notes: set[str] = set()
        pending = None
        pending_day = None
        age_ns = hour_ns - day.strike_ts_ns
        if age_ns > cfg.stale_after_s * NS_PER_S:
            flags.add(Validity.STALE)
        elif age_ns > cfg.fresh_max_age_s * NS_PER_S:
            flags.add(Validity.AGING)
        latest = source.days[source.latest_date]  # type: ignore[index]
        if latest.price_micro is None:
            flags.add(Validity.SUPPRESSED)
            notes.add(f"suppressed:{latest.suppression_reason}")
        for newer in (d for d in source.days.values() if d.fix_date > day.fix_date and d.quarantined):
            flags.add(Validity.TOO_VOLATILE)
            pending, pending_day = newer.price_micro, newer
        if source.fault is not None and source.fault[0] > day.fix_date:
            flags.add(source.fault[1])
            notes.add(f"rejected_price_for:{source.fault[0].isoformat()}")
        # the late revision published as the pending fix: the newest still flagged (of any day, also once
        # the next day's fix is out), else the one of the fix that drives the anchor
        late = day if day.late_revision_micro is not None else None
        flagged_ts_ns = -1
        for d in source.days.values():
            if d.late_revision_ts_ns is not None and hour_ns - d.late_revision_ts_ns < cfg.revised_flag_s * NS_PER_S:
                flags.add(Validity.REVISED)
                notes.add(f"revised_after_window:{d.fix_date.isoformat()}")
                if d.late_revision_ts_ns > flagged_ts_ns:
                    late, flagged_ts_ns = d, d.late_revision_ts_ns
        if late is not None and pending is None:
            pending, pending_day = late.late_revision_micro, late
        if day.strike_ts_ns > scheduled_strike_ns(day.fix_date) + cfg.late_strike_grace_s * NS_PER_S:
            notes.add("late_strike")
        return _View(source=name, day=day, age_ns=age_ns, flags=flags, notes=notes, pending_micro=pending,
                     pending_day=pending_day)

    def _target(self, hour_ns: int) -> tuple[int, list[_View], set[Validity], set[str]] | None:
        cfg = self.config
        views = [v for name, src in self._sources.items() if (v := self._view(name, src, hour_ns)) is not None]
        if not views:
            return None
        flags: set[Validity] = set()
        notes: set[str] = set()
        by_name = {v.source: v for v in views}
        primary = by_name.get(cfg.primary_source)
        live = [v for v in views if Validity.STALE not in v.flags]
        if not live:
            used = [primary] if primary is not None else views
        elif len(live) == 1:
            used = live
        else:
            prices = [v.day.price_micro for v in live]
            mid = _median(prices)  # type: ignore[arg-type]
            used = live
            if (max(prices) - min(prices)) * PPM > cfg.max_source_spread_ppm * mid:  # type: ignore[type-var, operator]
                flags.add(Validity.DIVERGED)
                if primary is not None and primary in live:
                    used = [primary]
                    notes.add(f"fallback_to_primary:{cfg.primary_source}")
                else:
                    notes.add("primary_unavailable")
        if len(used) > 1:
            notes.add("median_of_sources:" + ",".join(sorted(v.source for v in used)))
        target = _median([v.day.price_micro for v in used])  # type: ignore[misc]
        for v in used:
            flags |= v.flags
            notes |= v.notes
        return target, used, flags, notes

    def _step(self, hour_ns: int) -> AnchorPoint | None:
        found = self._target(hour_ns)
        if found is None and self._held is None:
            return None
        if found is None:  # every usable fix was withdrawn (a final suppressed it): hold the last target
            target, fix_date, strike_ns, vintage = self._held  # type: ignore[misc]
            age_ns = hour_ns - strike_ns
            flags = {Validity.SUPPRESSED}
            if age_ns > self.config.stale_after_s * NS_PER_S:
                flags.add(Validity.STALE)
            elif age_ns > self.config.fresh_max_age_s * NS_PER_S:
                flags.add(Validity.AGING)
            notes = {"no_usable_fix:target_held"}
            pendings: list[_View] = []
        else:
            target, used, flags, notes = found
            newest = max(used, key=lambda v: (v.day.fix_date, v.day.strike_ts_ns))
            fix_date, strike_ns, vintage = newest.day.fix_date, newest.day.strike_ts_ns, newest.day.vintage
            age_ns = max(v.age_ns for v in used)
            pendings = [v for v in used if v.pending_micro is not None]
            self._held = (target, fix_date, strike_ns, vintage)
        if self._anchor_micro is None:
            self._anchor_micro = target
            notes.add("seeded")
        else:
            prev = self._anchor_micro
            step = div_toward_target(self.alpha_ppb * (target - prev), PPB)
            if self.config.max_hourly_move_ppm:
                cap_micro = hourly_cap_ticks(micro_to_ticks_half_up(prev), self.config.max_hourly_move_ppm) \
                    * MICRO_TICKS_PER_TICK
                if abs(step) > cap_micro:
                    step = cap_micro if step > 0 else -cap_micro
                    notes.add("cap_binding")
            self._anchor_micro = prev + step
        ordered_flags = tuple(sorted(flags, key=SEVERITY.__getitem__))
        return AnchorPoint(
            series_id=self.config.series_id,
            ts_ns=hour_ns,
            anchor_price_ticks=micro_to_ticks_half_up(self._anchor_micro),
            anchor_micro_ticks=self._anchor_micro,
            fix_price_ticks=micro_to_ticks_half_up(target),
            fix_date=fix_date,
            fix_vintage=vintage,
            fix_strike_ts_ns=strike_ns,
            fix_age_s=age_ns // NS_PER_S,
            pending_fix_price_ticks=micro_to_ticks_half_up(pendings[0].pending_micro) if pendings else None,  # type: ignore[arg-type]
            pending_fix_date=pendings[0].pending_day.fix_date if pendings else None,  # type: ignore[union-attr]
            pending_fix_vintage=pendings[0].pending_day.vintage if pendings else None,  # type: ignore[union-attr]
            validity=worst(flags),
            flags=ordered_flags,
            notes=tuple(sorted(notes)),
            gates=gates_for(flags),
        )

    def set_index_command(self, point: AnchorPoint, market: str) -> dict[str, object]:
        """The engine's documented ``set_index`` JSON command for ``point``, carrying its validity and
        every gate, which the engine stores per market and applies (perp/gate.py). The price is the
        anchor's whole ticks as an exact decimal string, so it is on the grid of a market with this tick
        size. ``fix_price`` (what margin on the worse of anchor and fix compares with) is the pending
        fix when there is one (the newest word: a held jump or a late revision), else the fix the anchor
        walks toward. ``fix_date`` and ``fix_vintage`` name that same fix: its UTC date and the vintage the
        oracle holds for it (provisional, final or revised), what the console shows next to the price."""
        g = point.gates
        pending = point.pending_fix_price_ticks is not None
        fix = point.pending_fix_price_ticks if pending else point.fix_price_ticks
        fix_date = point.pending_fix_date if pending and point.pending_fix_date is not None else point.fix_date
        vintage = point.pending_fix_vintage if pending and point.pending_fix_vintage is not None else point.fix_vintage
        usable = bool(fix and fix > 0)
        return {"type": "set_index", "ts_ns": point.ts_ns, "market": market,
                "price": str(ticks_to_usd(point.anchor_price_ticks, self.tick_usd)),
                "funding_frozen": g.funding_frozen,
                "margin_on_worse_of_anchor_and_fix": g.margin_on_worse_of_anchor_and_fix,
                "reduce_only": g.reduce_only, "leverage_scale_ppm": g.leverage_scale_ppm,
                "liquidations_throttled": g.liquidations_throttled, "order_band_frozen": g.order_band_frozen,
                "fix_price": str(ticks_to_usd(fix, self.tick_usd)) if usable else None,
                "fix_vintage": vintage.value if usable else None,
                "fix_date": fix_date.isoformat() if usable else None,
                "validity": point.validity.value}

    # ------------------------------------------------------------------ state
    def state_hash(self) -> str:
        """SHA-256 of the whole state in a canonical encoding: equal hashes, equal anchors."""
        sources = []
        for name in sorted(self._sources):
            src = self._sources[name]
            days = [[d.fix_date.isoformat(), d.strike_ts_ns, d.vintage.value, d.price_micro, d.first_price_micro,
                     d.suppression_reason, d.confirmed, d.quarantined, d.late_revision_micro,
                     d.late_revision_ts_ns] for _, d in sorted(src.days.items())]
            fault = None if src.fault is None else [src.fault[0].isoformat(), src.fault[1].value]
            sources.append([name, days, fault])
        held = None if self._held is None else [self._held[0], self._held[1].isoformat(), self._held[2],
                                                 self._held[3].value]
        state = [self.config, self.alpha_ppb, self._anchor_micro, held, self._stepped_through_ns,
                 self._last_published_ns, self._first_published_ns, sources]
        if self._manual:
            state.append(sorted((d.isoformat(), sorted(k.items())) for d, k in self._manual.items()))
        return hashlib.sha256(msgspec.msgpack.encode(state)).hexdigest()
