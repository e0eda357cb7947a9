"""The parser and every message type under fuzz: a frame is parsed or refused with a 4000-range
code, never anything else; on a live server every fuzzed frame gets a reply and the engine's state
hash does not move."""

from __future__ import annotations

import asyncio
import json
import random

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import protocol as P
from gateway.errors import GatewayCode as G
from tests.gateway.conftest import MARKET, run, venue

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(1 << 70), max_value=1 << 70) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12)

# a plausible value for each field name the protocol uses, so fuzzed frames get deep into validation
FIELD_VALUES = {
    "market": st.sampled_from([MARKET, "NOPE", ""]), "side": st.sampled_from(["buy", "sell", "hold"]),
    "size_lots": st.integers(-5, 2_000_000), "order_type": st.sampled_from(["limit", "market", "stop"]),
    "tif": st.sampled_from(["gtc", "ioc", "fok", "post_only", "day"]),
    "price": st.sampled_from(["2.0000", "1.99999", "-1", "abc", "1e3", "99.0000", "0.0100"]),
    "client_order_id": st.integers(-1, 1 << 41), "order_id": st.integers(-1, 1 << 63),
    "reduce_only": st.booleans(), "stp": st.sampled_from(["cancel_newest", "cancel_oldest", "x"]),
    "channel": st.sampled_from(["book", "trades", "ticker", "user", "nope"]),
    "timeout_ms": st.integers(-1, 700_000), "account": st.integers(-1, 1 << 23),
    "amount_micro": st.integers(-1, 10**16), "key": st.text(max_size=70), "ts_ns": st.integers(-1, 1 << 64),
    "nonce": st.text(max_size=70), "signature": st.text(alphabet="0123456789abcdefg", max_size=130),
    "version": st.integers(0, 3), "op": st.sampled_from(["place", "cancel", "x"]),
}


@st.composite
def params_for(draw, struct: type) -> dict:
    out = {}
    for name in struct.__struct_fields__:
        if draw(st.integers(0, 4)) == 0:
            continue  # leave a field out
        out[name] = draw(FIELD_VALUES.get(name, json_values))
    if struct is P.Batch:
        out["orders"] = draw(st.lists(params_for(draw(st.sampled_from([P.PlaceOrder, P.CancelOrder]))), max_size=25))
    if draw(st.integers(0, 6)) == 0:
        out[draw(st.text(min_size=1, max_size=8))] = draw(json_values)  # an unknown field
    return out


@st.composite
def frames(draw) -> bytes:
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.binary(max_size=200))
    if kind == 1:
        return json.dumps(draw(json_values)).encode()
    method = draw(st.sampled_from(sorted(P.METHODS) + ["nope", ""]))
    struct = P.METHODS.get(method, (P.Empty, None))[0]
    env: dict = {"id": draw(st.integers(-2, 1 << 54)), "method": method, "params": draw(params_for(struct))}
    if draw(st.integers(0, 8)) == 0:
        del env[draw(st.sampled_from(sorted(env)))]
    return json.dumps(env).encode()


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames())
def test_parser_parses_or_refuses_with_a_code(frame):
    try:
        req, params = P.parse_request(frame)
    except P.ProtocolError as exc:
        assert exc.code in (G.BAD_JSON, G.BAD_REQUEST, G.UNKNOWN_METHOD, G.BAD_PARAMS)
        assert exc.request_id is None or 0 <= exc.request_id < (1 << 53)
        return
    assert isinstance(params, P.METHODS[req.method][0])
    # what parsed is exactly what was sent: re-encoding round-trips
    again = P.parse_request(msgspec.json.encode({"id": req.id, "method": req.method,
                                                  "params": msgspec.to_builtins(params)}))
    assert again[1] == params


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(P.METHODS)), st.data())
def test_every_message_type_refuses_unknown_fields(method, data):
    struct = P.METHODS[method][0]
    name = data.draw(st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12))
    if name in struct.__struct_fields__ or name == "op":
        return
    frame = msgspec.json.encode({"id": 1, "method": method, "params": {name: 1}})
    try:
        P.parse_request(frame)
        raise AssertionError("an unknown field was accepted")
    except P.ProtocolError as exc:
        assert exc.code == G.BAD_PARAMS and exc.request_id == 1


def test_a_live_server_answers_every_fuzzed_frame_and_changes_nothing(tmp_path):
    drawn: list[bytes] = []

    @settings(max_examples=400, deadline=None, database=None, derandomize=True)
    @given(frames())
    def collect(frame):
        drawn.append(frame)

    collect()
    random.Random(2024).shuffle(drawn)

    async def body():
        from websockets.asyncio.client import connect

        from tests.gateway.test_auth import logon_params

        async with venue(tmp_path, conn_rate_per_s=1e6, conn_burst=10**6) as v:
            h0 = v.gw.engine.state_hash()
            async with connect(v.url) as anon, connect(v.url) as reader:
                await reader.send(json.dumps({"id": 0, "method": "logon",
                                              "params": logon_params(v.creds["reader"])}))
                for i, frame in enumerate(drawn):
                    ws = reader if i % 2 else anon
                    if i % 3 == 0:
                        await ws.send(frame)  # a binary frame
                    else:
                        await ws.send(frame.decode("utf-8", "replace"))

                async def replies(ws, want: int) -> list[dict]:
                    got = []
                    while len(got) < want:
                        msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
                        if "channel" not in msg:
                            got.append(msg)
                    return got

                ra = await replies(anon, len(drawn[0::2]))
                rr = await replies(reader, len(drawn[1::2]) + 1)
            assert rr[0]["ok"] is True  # the reader's logon
            codes = {r["error"]["code"] for r in ra + rr if not r["ok"]}
            assert codes and all(4000 <= c < 4900 for c in codes), codes
            assert v.gw.engine.state_hash() == h0

    run(body(), 60)
