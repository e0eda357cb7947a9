"""The edge (issue 9, row 12): every malformed command line is a coded 5004 with its line number, never
a traceback; nothing is rounded; user text in errors is clipped and escaped."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from perp.cli import main
from perp.commands import CommandEncoder, CommandFormatError, decode_command
from perp.markets import load_markets

GOOD = '{"type":"place","ts_ns":1,"account":16,"market":"H100-PERP","side":"buy","size_lots":1,"price":"2.1800"}'
AMEND = '{"type":"amend","ts_ns":1,"account":16,"market":"H100-PERP","order_id":1%s}'

BAD_LINES = [
    GOOD.replace('"size_lots":1', '"size_lots":9223372036854775808'),  # 2**63
    GOOD.replace('"size_lots":1', '"size_lots":-9223372036854775809'),
    GOOD.replace('"ts_ns":1', '"ts_ns":18446744073709551616'),
    GOOD.replace('"2.1800"', '"1e30"'),
    GOOD.replace('"2.1800"', '"1e999999999"'),
    GOOD.replace('"2.1800"', '"' + "9" * 10_000_000 + '"'),
    GOOD.replace('"2.1800"', '"2.18000000000000000000000000000001"'),
    GOOD.replace('"2.1800"', '"NaN"'),
    GOOD.replace('"2.1800"', '"Infinity"'),
    GOOD.replace('"2.1800"', '"2.18e-40"'),
    GOOD.replace('"2.1800"', '2.18'),
    GOOD[:-1] + ',"account":17}',  # duplicate key
    GOOD.replace('"size_lots":1', '"size_lots":NaN'),
    '{"type":"place",' + '"' + "x" * 10_000_000 + '":1}',
    '{"type":"place","a\\nb":1}',
    '[' * 100_000,
    '{"type":"nope","ts_ns":1}',
    '"just a string"',
    AMEND % ',"price":"0.0000"',
    AMEND % ',"size_lots":0',
    AMEND % ',"size_lots":-1',
    AMEND % ',"price":null',
]


@pytest.mark.parametrize("line", BAD_LINES, ids=range(len(BAD_LINES)))
def test_every_malformed_line_is_a_command_format_error(line):
    enc = CommandEncoder(load_markets())
    with pytest.raises(CommandFormatError) as err:
        enc.row(decode_command(line))
    message = str(err.value)
    assert len(message) < 400 and "\n" not in message


def test_invalid_utf8_is_a_command_format_error():
    with pytest.raises(CommandFormatError, match="UTF-8"):
        decode_command(b'{"type":"cancel","ts_ns":1,"account":16,"order_id":1,"x":"\xff"}')


def test_an_off_grid_price_is_refused_at_any_precision_never_rounded():
    enc = CommandEncoder(load_markets())
    with pytest.raises(CommandFormatError, match="tick grid"):
        enc.row(decode_command(GOOD.replace('"2.1800"', '"2.180000000000000000000000000001"')))
    assert enc.row(decode_command(GOOD.replace('"2.1800"', '"2.18000000000000000000000000000"')))[7] == 21_800


def test_an_absent_amend_field_means_unchanged_and_only_absent():
    enc = CommandEncoder(load_markets())
    r = enc.row(decode_command(AMEND % ',"size_lots":5'))
    assert r[7] == 0 and r[8] == 5  # price absent: 0 = unchanged in the kernel row


@pytest.mark.parametrize("line", BAD_LINES[:14] + [b"\xff\xfe".decode("latin-1")], ids=range(15))
def test_perp_replay_reports_a_bad_line_with_its_number_and_code_never_a_traceback(tmp_path, line):
    path = tmp_path / "cmds.jsonl"
    path.write_text('{"type":"set_index","ts_ns":1,"market":"H100-PERP","price":"2.1800"}\n' + line + "\n",
                    encoding="utf-8", errors="surrogateescape")
    out = CliRunner().invoke(main, ["replay", str(path)])
    assert out.exit_code == 2, out.output
    assert "line 2: BAD_COMMAND_FORMAT (5004)" in out.output
    assert out.exception is None or isinstance(out.exception, SystemExit)
    assert len(out.output) < 600 and out.output.count("\n") <= 2


def test_perp_replay_says_when_the_events_folder_is_missing(tmp_path):
    path = tmp_path / "cmds.jsonl"
    path.write_text('{"type":"set_index","ts_ns":1,"market":"H100-PERP","price":"2.1800"}\n')
    out = CliRunner().invoke(main, ["replay", str(path), "--events", str(tmp_path / "nowhere" / "ev.jsonl")])
    assert out.exit_code == 2 and "does not exist" in out.output


def test_perp_replay_prints_whether_money_is_conserved(tmp_path):
    path = tmp_path / "cmds.jsonl"
    path.write_text('{"type":"set_index","ts_ns":1,"market":"H100-PERP","price":"2.1800"}\n'
                    '{"type":"deposit","ts_ns":2,"account":16,"amount_micro":1000000}\n')
    out = CliRunner().invoke(main, ["replay", str(path)])
    assert out.exit_code == 0 and "money_conserved True" in out.output
