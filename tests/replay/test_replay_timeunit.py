"""Binance "General API Information": ``X-MBX-TIME-UNIT: MICROSECOND`` (REST) and
``timeUnit=MICROSECOND`` (WebSocket Streams and WebSocket API URLs) put every time field in
microseconds; and ``GET /api/v3/depth`` up to 5000 levels with the documented weight per limit band."""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import urllib.request

import aiohttp
import pytest
import websockets

from replay import testing as rt
from replay.server import ReplayServer

START_MS = 1_800_000_012_345
KEY, SECRET = "k" * 64, "s" * 64


@pytest.fixture(scope="module")
def paused():
    with ReplayServer(port=0, start_wall_ms=START_MS, paused=True, accounts={KEY: SECRET},
                      starting_balances={"USDT": "50000"}) as srv:
        yield srv


def get(url: str, headers: dict | None = None):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


def signed(params: dict) -> str:
    q = "&".join(f"{k}={v}" for k, v in {**params, "timestamp": int(time.time() * 1000)}.items())
    return q + "&signature=" + hmac.new(SECRET.encode(), q.encode(), hashlib.sha256).hexdigest()


def _times_scaled(ms, us, keys) -> None:
    for k in keys:
        assert us[k] == ms[k] * 1000, k


@pytest.mark.parametrize("unit", ["MICROSECOND", "microsecond"])
def test_rest_time_fields_in_microseconds_with_the_header(paused, unit):
    api = paused.api_url + "/v3/"
    h = {"X-MBX-TIME-UNIT": unit}
    for path, check in (
        ("klines?symbol=BTCUSDT&interval=1m&limit=3",
         # close time: the last µs of the minute, as in Binance's µs kline dumps
         lambda ms, us: [(u[0], u[6]) == (m[0] * 1000, m[6] * 1000 + 999) == (u[0], u[0] + 59_999_999)
                         and u[1:6] == m[1:6] and u[7:] == m[7:] for m, u in zip(ms, us)]),
        ("aggTrades?symbol=BTCUSDT&limit=3", lambda ms, us: [u == {**m, "T": m["T"] * 1000} for m, u in zip(ms, us)]),
        ("trades?symbol=BTCUSDT&limit=3", lambda ms, us: [u == {**m, "time": m["time"] * 1000} for m, u in zip(ms, us)]),
        ("ticker/24hr?symbol=ETHUSDT",
         lambda ms, us: [us == {**ms, "openTime": ms["openTime"] * 1000, "closeTime": ms["closeTime"] * 1000}]),
        ("avgPrice?symbol=ETHUSDT", lambda ms, us: [us == {**ms, "closeTime": ms["closeTime"] * 1000}]),
        ("depth?symbol=BTCUSDT&limit=5", lambda ms, us: [us == ms]),  # no time field
    ):
        s1, _, ms = get(api + path)
        s2, _, us = get(api + path, h)
        assert s1 == s2 == 200
        assert all(check(ms, us)), path
    _, _, t = get(api + "time", h)
    assert abs(t["serverTime"] - time.time() * 1_000_000) < 5_000_000  # the wall clock, in µs
    # signed: an order's transactTime/workingTime and the account's updateTime
    status, _, o = get_post(api + "order", signed({"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET",
                                                   "quantity": "0.002"}), h)
    assert status == 200 and o["transactTime"] > 10**15 and o["workingTime"] > 10**15
    status, _, q = get(api + "order?" + signed({"symbol": "BTCUSDT", "orderId": o["orderId"]}), {**h, "X-MBX-APIKEY": KEY})
    status2, _, q_ms = get(api + "order?" + signed({"symbol": "BTCUSDT", "orderId": o["orderId"]}), {"X-MBX-APIKEY": KEY})
    assert status == status2 == 200
    _times_scaled(q_ms, q, ("time", "updateTime", "workingTime"))
    # unknown values keep milliseconds
    _, _, same = get(api + "aggTrades?symbol=BTCUSDT&limit=1", {"X-MBX-TIME-UNIT": "MILLISECOND"})
    assert same == get(api + "aggTrades?symbol=BTCUSDT&limit=1")[2]


def get_post(url: str, body: str, headers: dict):
    req = urllib.request.Request(url, data=body.encode(), method="POST",
                                 headers={**headers, "X-MBX-APIKEY": KEY,
                                          "Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


def test_streams_time_fields_in_microseconds_with_timeunit():
    with ReplayServer(port=0, speed=30, start_wall_ms=START_MS) as srv:
        names = ["btcusdt@trade", "btcusdt@aggTrade", "btcusdt@kline_1m", "btcusdt@depth", "btcusdt@ticker",
                 "btcusdt@avgPrice", "btcusdt@bookTicker"]

        async def go():
            got = {}
            url = srv.stream_url + "stream?streams=" + "/".join(names) + "&timeUnit=MICROSECOND"
            async with websockets.connect(url, max_size=None) as ws:
                while len(got) < len(names):
                    msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
                    got.setdefault(msg["stream"], msg["data"])
            return got

        got = rt.run(go(), 60)
    m = srv.model
    tr = got["btcusdt@trade"]
    expected = m.trade("BTCUSDT", tr["t"])
    assert (tr["E"], tr["T"]) == (expected.time * 1000, expected.time * 1000)  # t stays the trade id
    agg = got["btcusdt@aggTrade"]
    assert agg["T"] == m.trade("BTCUSDT", agg["a"]).time * 1000 and agg["E"] == agg["T"]
    k = got["btcusdt@kline_1m"]
    assert k["k"]["t"] % 60_000_000 == 0 and k["k"]["T"] == k["k"]["t"] + 59_999_999 and k["E"] > 10**15
    assert k["k"]["f"] < 10**12  # ids are not times
    assert got["btcusdt@depth"]["E"] % 1_000_000 == (m.tape_start_ms("BTCUSDT") % 1000) * 1000
    t24 = got["btcusdt@ticker"]
    assert t24["E"] > 10**15 and t24["O"] > 10**15 and t24["C"] > 10**15 and t24["F"] < 10**12
    avg = got["btcusdt@avgPrice"]
    assert avg["E"] > 10**15 and avg["T"] > 10**15
    assert set(got["btcusdt@bookTicker"]) == {"u", "s", "b", "B", "a", "A"}  # no time field


def test_ws_api_results_and_user_data_events_in_microseconds(paused):
    async def go():
        async with aiohttp.ClientSession() as s, s.ws_connect(paused.ws_api_url + "?timeUnit=MICROSECOND") as ws:
            async def call(method, params=None):
                await ws.send_str(json.dumps({"id": method, "method": method, **({"params": params} if params else {})}))
                out = []
                while True:
                    msg = json.loads((await ws.receive(timeout=5)).data)
                    if msg.get("id") == method:
                        return msg, out
                    out.append(msg)

            t, _ = await call("time")
            p = {"apiKey": KEY, "timestamp": int(time.time() * 1000)}
            payload = "&".join(f"{k}={v}" for k, v in sorted(p.items()))
            p["signature"] = hmac.new(SECRET.encode(), payload.encode(), hashlib.sha256).hexdigest()
            sub, _ = await call("userDataStream.subscribe.signature", p)
            o = {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.002", "apiKey": KEY,
                 "timestamp": int(time.time() * 1000)}
            payload = "&".join(f"{k}={v}" for k, v in sorted(o.items()))
            o["signature"] = hmac.new(SECRET.encode(), payload.encode(), hashlib.sha256).hexdigest()
            placed, early = await call("order.place", o)
            events = list(early)
            while not any(e["event"]["e"] == "outboundAccountPosition" for e in events):
                events.append(json.loads((await ws.receive(timeout=5)).data))
            return t, sub, placed, events

    t, sub, placed, events = rt.run(go(), 30)
    assert abs(t["result"]["serverTime"] - time.time() * 1_000_000) < 5_000_000
    assert sub["status"] == 200
    assert placed["status"] == 200 and placed["result"]["transactTime"] > 10**15
    report = next(e["event"] for e in events if e["event"]["e"] == "executionReport")
    assert report["E"] > 10**15 and report["T"] > 10**15 and report["O"] > 10**15 and report["t"] < 10**12
    position = next(e["event"] for e in events if e["event"]["e"] == "outboundAccountPosition")
    assert position["E"] > 10**15 and position["u"] > 10**15


# -- depth beyond 1000 levels ------------------------------------------------------------------------
@pytest.mark.parametrize("limit,weight,levels", [
    (None, 5, 100), (1, 5, 1), (100, 5, 100), (101, 25, 101), (500, 25, 500), (501, 50, 501), (1000, 50, 1000),
    (1001, 250, 1001), (5000, 250, 5000), (6000, 250, 5000)])
def test_depth_limit_bands_weights_and_levels(limit, weight, levels):
    with ReplayServer(port=0, start_wall_ms=START_MS, paused=True) as srv:
        url = srv.api_url + "/v3/depth?symbol=ETHUSDT" + ("" if limit is None else f"&limit={limit}")
        status, headers, body = get(url)
        assert status == 200 and int(headers["X-MBX-USED-WEIGHT-1M"]) == weight
        assert len(body["bids"]) == len(body["asks"]) == levels


@pytest.mark.parametrize("raw,code", [("0", -1130), ("-5", -1100), ("abc", -1100), ("", -1105)])
def test_depth_limit_validation(paused, raw, code):
    status, _, body = get(paused.api_url + "/v3/depth?symbol=ETHUSDT&limit=" + raw)
    assert status == 400 and body["code"] == code
