"""`perp replay`: a file of JSON-line commands through a fresh engine, every event out as JSON lines.

This is how anyone audits the engine from outside: the command format (docs/commands.md) and the
event format (docs/events.md) are stable, and the final state hash identifies the end state. The
whole file is decoded and validated before the engine sees any of it; a malformed line stops the
replay with its line number and code 5004 (BAD_COMMAND_FORMAT), and nothing is processed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np

from perp import layout as L
from perp.codes import ResultCode
from perp.commands import CommandEncoder, CommandFormatError, decode_command
from perp.engine import Engine
from perp.events import Event, decode_rows, to_json_line
from perp.markets import MarketsConfig


class ReplayInputError(ValueError):
    def __init__(self, line_no: int, message: str):
        super().__init__(f"line {line_no}: {ResultCode.BAD_COMMAND_FORMAT.name} "
                         f"({int(ResultCode.BAD_COMMAND_FORMAT)}): {message}")
        self.line_no = line_no
        self.code = ResultCode.BAD_COMMAND_FORMAT


@dataclass
class ReplaySummary:
    commands: int = 0
    events: int = 0
    by_type: Counter = field(default_factory=Counter)
    rejections: Counter = field(default_factory=Counter)
    traded_lots: int = 0
    fees_micro: int = 0
    state_hash: str = ""


def encode_lines(lines: Iterable[str | bytes], encoder: CommandEncoder) -> np.ndarray:
    rows = []
    for line_no, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#" if isinstance(text, str) else b"#"):
            continue
        try:
            rows.append(encoder.row(decode_command(text)))
        except CommandFormatError as exc:
            raise ReplayInputError(line_no, str(exc)) from None
    return np.stack(rows) if rows else np.zeros((0, L.N_CMD_COLS), np.int64)


def replay(lines: Iterable[str | bytes], markets: MarketsConfig | None = None, events_out: IO[bytes] | None = None,
           engine: Engine | None = None) -> tuple[Engine, ReplaySummary]:
    eng = engine if engine is not None else Engine(markets)
    rows = encode_lines(lines, eng.encoder)
    summary = ReplaySummary(commands=int(rows.shape[0]))
    chunk = 4096
    for start in range(0, rows.shape[0], chunk):
        ev_rows = eng.submit_rows(rows[start:start + chunk])
        summary.events += int(ev_rows.shape[0])
        fills = ev_rows[ev_rows[:, L.E_KIND] == L.EV_FILL]
        summary.traded_lots += int(fills[fills[:, L.E_CODE] == L.LIQ_TAKER, L.E_SIZE].sum())
        summary.fees_micro += int(fills[:, L.E_FEE].sum())
        for ev in decode_rows(ev_rows, eng.specs):
            _count(summary, ev)
            if events_out is not None:
                events_out.write(to_json_line(ev))
                events_out.write(b"\n")
    summary.state_hash = eng.state_hash()
    return eng, summary


def _count(summary: ReplaySummary, ev: Event) -> None:
    kind = type(ev).__struct_config__.tag
    summary.by_type[kind] += 1
    if kind == "rejected":
        summary.rejections[ev.reason] += 1


class ReplayFileError(ValueError):
    """A file `perp replay` cannot read or write (a clear message, never a traceback)."""


def replay_file(path: str | Path, markets: MarketsConfig | None = None,
                events_path: str | Path | None = None) -> tuple[Engine, ReplaySummary]:
    """Replay a command file. Lines are read as bytes and validated one by one (UTF-8 included), so
    every malformed line is a ReplayInputError with its line number."""
    try:
        with open(path, "rb") as fh:
            lines = fh.read().split(b"\n")
    except OSError as exc:
        raise ReplayFileError(f"cannot read {path}: {exc.strerror}") from None
    if events_path is None:
        return replay(lines, markets)
    parent = Path(events_path).parent
    if not parent.is_dir():
        raise ReplayFileError(f"cannot write events to {events_path}: folder {parent} does not exist")
    try:
        out = open(events_path, "wb")
    except OSError as exc:
        raise ReplayFileError(f"cannot write events to {events_path}: {exc.strerror}") from None
    with out:
        return replay(lines, markets, out)
