"""Readers: CSV, JSON feed, and a real Redis server (stream via XRANGE/XREAD, key via GET)."""

from __future__ import annotations

import msgspec
from oracle_factories import SERIES, config, fix, hour_of

from oracle.anchor import HourlyAnchor
from oracle.errors import OracleCode
from oracle.readers import (
    RedisStreamReader,
    publish_to_stream,
    read_csv_fixes,
    read_json_feed,
    read_key,
)
from oracle.records import Vintage, encode_record


def test_csv_empty_cell_is_a_suppressed_day_and_bad_date_is_rejected(tmp_path):
    path = tmp_path / "fixes.csv"
    path.write_text(f"fix_date_utc,{SERIES}\n2026-01-01,3.0000\n2026-01-02,\nnot-a-date,3.1\n2026-01-03,3.1000\n")
    read = read_csv_fixes(path, SERIES)
    assert [r.code for r in read.rejections] == [OracleCode.CSV_MALFORMED_ROW]
    assert read.rejections[0].where.endswith(":4")
    assert [r.price_usd for r in read.records] == ["3.0000", None, "3.1000"]
    assert read.records[1].suppression_reason and read.records[1].vintage is Vintage.FINAL


def test_csv_without_the_series_column_is_rejected(tmp_path):
    path = tmp_path / "fixes.csv"
    path.write_text("fix_date_utc,OTHER\n2026-01-01,3.0\n")
    read = read_csv_fixes(path, SERIES)
    assert read.records == [] and read.rejections[0].code is OracleCode.CSV_SERIES_MISSING


def test_json_feed_lines_keep_good_records_and_reject_malformed_ones():
    lines = [encode_record(fix(0, "3.0000")), b'{"series_id": "x"}', b"{not json",
             encode_record(fix(1, "3.1000")).replace(b"}", b',"extra":1}')]
    read = read_json_feed(b"\n".join(lines))
    assert [r.fix_date for r in read.records] == [fix(0, "3.0000").fix_date]
    assert [(r.code, r.where) for r in read.rejections] == [
        (OracleCode.MALFORMED_RECORD, "json:2"), (OracleCode.MALFORMED_RECORD, "json:3"),
        (OracleCode.MALFORMED_RECORD, "json:4")]


def test_json_feed_array_and_a_float_price_is_refused():
    good = msgspec.json.decode(encode_record(fix(0, "3.0000")))
    floaty = dict(good, price_usd=3.0)
    read = read_json_feed(msgspec.json.encode([good, floaty]))
    assert len(read.records) == 1 and read.rejections[0].where == "json[1]"
    assert "Expected `str | null`, got `float`" in read.rejections[0].message


def test_stream_reader_resumes_from_its_last_id_and_feeds_the_anchor(redis_client):
    key = "oracle:fixes:test"
    publish_to_stream(redis_client, key, fix(0, "3.0000"))
    redis_client.xadd(key, {b"record": b"{broken"})
    redis_client.xadd(key, {b"other": b"1"})
    reader = RedisStreamReader(redis_client, key)
    first = reader.read_available(count=2)  # pages through all three entries two at a time
    assert len(first.records) == 1
    assert [r.code for r in first.rejections] == [OracleCode.STREAM_PAYLOAD_MALFORMED] * 2
    assert all(r.where.startswith(f"{key}#") for r in first.rejections)
    assert reader.read_available().records == []
    publish_to_stream(redis_client, key, fix(1, "3.3000"))
    second = reader.read_available()
    assert [r.price_usd for r in second.records] == ["3.3000"]
    anchor = HourlyAnchor(config())
    points, rejections = anchor.replay(first.records + second.records, hour_of(1, 2))
    assert rejections == [] and {p.ts_ns: p for p in points}[hour_of(1, 1)].fix_price_ticks == 33000


def test_stream_reader_blocking_read_returns_new_entries_and_times_out_empty(redis_client):
    key = "oracle:fixes:block"
    reader = RedisStreamReader(redis_client, key, last_id="0-0")
    assert reader.read_blocking(block_ms=50).records == []
    entry_id = publish_to_stream(redis_client, key, fix(0, "3.0000"))
    got = reader.read_blocking(block_ms=50)
    assert [r.price_usd for r in got.records] == ["3.0000"] and reader.last_id == entry_id


def test_key_reader_reads_one_record_or_a_list_and_rejects_garbage(redis_client):
    redis_client.set("oracle:fix:one", encode_record(fix(0, "3.0000")))
    redis_client.set("oracle:fix:list", msgspec.json.encode([fix(0, "3.0000"), fix(1, "3.1000")]))
    redis_client.set("oracle:fix:bad", b'{"price_usd": "3"}')
    assert len(read_key(redis_client, "oracle:fix:one").records) == 1
    assert len(read_key(redis_client, "oracle:fix:list").records) == 2
    bad = read_key(redis_client, "oracle:fix:bad")
    assert bad.records == [] and bad.rejections[0].code is OracleCode.STREAM_PAYLOAD_MALFORMED
    assert read_key(redis_client, "oracle:fix:missing").records == []


def test_records_survive_the_json_round_trip_unchanged():
    record = fix(2, "3.1000", Vintage.REVISED, original="3.0000", published_ns=hour_of(2, 5))
    read = read_json_feed(encode_record(record))
    assert read.records == [record] and read.rejections == []


def test_rejected_records_are_logged_with_their_code_and_location():
    from structlog.testing import capture_logs

    with capture_logs() as logs:
        read_json_feed(b'{"series_id": 1}', where="feed.jsonl")
    assert [(e["event"], e["code"], e["reason"], e["where"]) for e in logs] == [
        ("oracle_record_rejected", 3010, "MALFORMED_RECORD", "feed.jsonl:1")]
    assert logs[0]["log_level"] == "warning" and "series_id" in logs[0]["detail"]


def test_out_of_order_records_from_a_stream_are_logged_by_the_feeding_edge(redis_client):
    from structlog.testing import capture_logs

    from oracle.readers import ingest_and_log

    key = "oracle:fixes:order"
    for record in (fix(0, "3.0000"), fix(2, "3.1000"), fix(1, "3.2000", published_ns=hour_of(2, 0, 40))):
        publish_to_stream(redis_client, key, record)
    anchor = HourlyAnchor(config())
    with capture_logs() as logs:
        rejections = ingest_and_log(anchor, RedisStreamReader(redis_client, key).read_available().records)
    assert [r.code for r in rejections] == [OracleCode.OUT_OF_ORDER]
    assert [(e["code"], e["series"]) for e in logs] == [(3030, SERIES)]
