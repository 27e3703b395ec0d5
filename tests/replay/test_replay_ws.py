"""WebSocket streams of the replay exchange, through python-binance's BinanceSocketManager and raw
clients, at 60x (a replay minute per wall second)."""
from __future__ import annotations

import asyncio
import json
import time
from decimal import Decimal

import aiohttp
import pytest
import websockets

from replay import testing as rt
from replay.model import UPDATE_ID_BASE
from replay.server import ReplayServer


START_MS = 1_800_000_012_345  # 2027-01-15T08:00:12.345Z: a fixed replay start, reproducible values


@pytest.fixture(scope="module")
def replay_live():
    """A replay exchange running at 60x (a replay minute per wall second)."""
    with ReplayServer(port=0, speed=60, start_wall_ms=START_MS) as srv:
        yield srv


def _bsm(srv):
    client = rt.async_client(srv.api_url)
    return client, rt.socket_manager(client, srv.stream_url)


async def _recv(sock, timeout=5.0):
    msg = await asyncio.wait_for(sock.recv(), timeout)
    assert msg.get("e") != "error", msg
    return msg


def test_kline_socket_delivers_a_closed_candle_equal_to_the_recording(replay_live):
    srv = replay_live

    async def go():
        client, bsm = _bsm(srv)
        seen = []
        try:
            async with bsm.kline_socket("BTCUSDT", interval="1m") as sock:
                deadline = time.monotonic() + 6
                while time.monotonic() < deadline:
                    msg = await _recv(sock)
                    seen.append(msg)
                    if msg["k"]["x"]:
                        break
        finally:
            await client.close_connection()
        return seen

    seen = rt.run(go())
    final = seen[-1]
    assert final["k"]["x"] is True, "no closed kline within 6 s at 60x"
    assert set(final) == {"e", "E", "s", "k"} and final["e"] == "kline" and final["s"] == "BTCUSDT"
    k = final["k"]
    assert set(k) == set("tTsifLochlvnxqVQB")
    assert final["E"] == k["T"] == k["t"] + 59_999 and k["i"] == "1m"
    rec = srv.model.recorded_kline("BTCUSDT", k["t"])
    assert (k["o"], k["h"], k["l"], k["c"], k["n"]) == (
        f"{rec.open:.8f}", f"{rec.high:.8f}", f"{rec.low:.8f}", f"{rec.close:.8f}", rec.trades)
    assert (k["f"], k["L"]) == (rec.first_trade_id, rec.last_trade_id) and k["n"] == k["L"] - k["f"] + 1
    trades = [srv.model.trade("BTCUSDT", i) for i in range(k["f"], k["L"] + 1)]
    assert (k["v"], k["q"], k["V"], k["Q"]) == (
        f"{sum(t.qty for t in trades):.8f}", f"{sum(t.quote_qty for t in trades):.8f}",
        f"{sum(t.qty for t in trades if not t.is_buyer_maker):.8f}",
        f"{sum(t.quote_qty for t in trades if not t.is_buyer_maker):.8f}")
    forming = [m for m in seen if m["k"]["t"] == k["t"] and not m["k"]["x"]]
    assert forming, "expected forming updates before the close"
    # one update per replay second, in time order, volume growing to the recorded one
    times = [m["E"] for m in seen]
    assert times == sorted(times)
    assert all(Decimal(a["k"]["v"]) <= Decimal(b["k"]["v"]) for a, b in zip(forming, forming[1:]))
    assert all(m["E"] % 1000 == srv.model.tape_start_ms("BTCUSDT") % 1000 for m in forming)


def test_trade_and_book_ticker_sockets(replay_live):
    srv = replay_live

    async def go():
        client, bsm = _bsm(srv)
        trades, tickers = [], []
        try:
            async with bsm.trade_socket("ETHUSDT") as ts, bsm.symbol_book_ticker_socket("BTCUSDT") as bs:
                for _ in range(15):
                    trades.append(await _recv(ts))
                for _ in range(10):
                    tickers.append(await _recv(bs))
        finally:
            await client.close_connection()
        return trades, tickers

    trades, tickers = rt.run(go())
    m = srv.model
    assert set(trades[0]) == {"e", "E", "s", "t", "p", "q", "T", "m", "M"}  # Binance "Trade Streams": no b/a since 2023
    ids = [t["t"] for t in trades]
    assert ids == list(range(ids[0], ids[0] + len(ids)))  # no gaps, no duplicates
    for t in trades:
        expected = m.trade("ETHUSDT", t["t"])
        assert (t["p"], t["q"], t["T"], t["m"]) == (
            f"{expected.price:.8f}", f"{expected.qty:.8f}", expected.time, expected.is_buyer_maker)
        assert t["e"] == "trade" and t["s"] == "ETHUSDT" and t["E"] == t["T"]
    assert set(tickers[0]) == {"u", "s", "b", "B", "a", "A"}
    for bt in tickers:
        assert Decimal(bt["a"]) - Decimal(bt["b"]) == Decimal("0.01")
        t = m.book_time("BTCUSDT", bt["u"] - UPDATE_ID_BASE)
        assert Decimal(bt["b"]) == m.last_trade("BTCUSDT", t).price
    us = [bt["u"] for bt in tickers]
    assert us == sorted(us) and len(set(us)) == len(us)


def test_multiplex_socket_wraps_combined_events(replay_live):
    srv = replay_live

    async def go():
        client, bsm = _bsm(srv)
        got = []
        try:
            async with bsm.multiplex_socket(["btcusdt@trade", "ethusdt@bookTicker", "ethusdt@kline_5m"]) as sock:
                while {m["stream"] for m in got} != {"btcusdt@trade", "ethusdt@bookTicker", "ethusdt@kline_5m"}:
                    got.append(await _recv(sock))
        finally:
            await client.close_connection()
        return got

    got = rt.run(go())
    for msg in got:
        assert set(msg) == {"stream", "data"}
    by = {m["stream"]: m["data"] for m in got}
    assert by["btcusdt@trade"]["e"] == "trade" and by["ethusdt@bookTicker"]["s"] == "ETHUSDT"
    assert by["ethusdt@kline_5m"]["k"]["i"] == "5m"


def test_subscribe_list_unsubscribe_and_errors(replay_live):
    srv = replay_live

    async def go():
        async with websockets.connect(srv.stream_url + "ws") as ws:
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@aggTrade", "ethusdt@depth5"], "id": 1}))
            replies, events = [], []
            while len(events) < 6 or not replies:
                msg = json.loads(await asyncio.wait_for(ws.recv(), 5))
                (replies if "id" in msg or "result" in msg else events).append(msg)
            assert replies[0] == {"result": None, "id": 1}
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 3}))
            await ws.send(json.dumps({"method": "GET_PROPERTY", "params": ["combined"], "id": "abc"}))
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@nonsense"], "id": 4}))
            await ws.send(json.dumps({"method": "FOO", "id": 5}))
            await ws.send("not json")
            await ws.send(json.dumps({"method": "UNSUBSCRIBE", "params": ["btcusdt@aggTrade", "ethusdt@depth5"], "id": 6}))
            answers = {}
            while 6 not in answers:
                msg = json.loads(await asyncio.wait_for(ws.recv(), 5))
                if "id" in msg:
                    answers[msg["id"]] = msg
            # nothing more after unsubscribing
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(ws.recv(), 0.5)
            return events, answers

    events, answers = rt.run(go())
    kinds = {("agg" if e.get("e") == "aggTrade" else "depth" if "lastUpdateId" in e else "?") for e in events}
    assert kinds == {"agg", "depth"}
    depth = next(e for e in events if "lastUpdateId" in e)
    assert set(depth) == {"lastUpdateId", "bids", "asks"} and len(depth["bids"]) == len(depth["asks"]) == 5
    assert answers[3] == {"result": ["btcusdt@aggTrade", "ethusdt@depth5"], "id": 3}
    assert answers["abc"] == {"result": False, "id": "abc"}
    assert answers[4] == {"error": {"code": 2, "msg": "Invalid request: invalid stream"}, "id": 4}
    assert answers[5]["error"]["code"] == 2 and "unknown variant `FOO`" in answers[5]["error"]["msg"]
    assert answers[None]["error"]["code"] == 3
    assert answers[6] == {"result": None, "id": 6}


@pytest.fixture
def replay_depth():
    """A replay at 10x for the depth-diff stream: each event carries the whole re-centred book
    (~90 KB), and at 60x a loaded machine can fall more than ``max_catchup_ms`` behind, which
    (by design, like a slow consumer) skips events and breaks the id sequence."""
    with ReplayServer(port=0, speed=10, start_wall_ms=START_MS) as srv:
        yield srv


def test_depth_diff_stream_lines_up_with_the_rest_snapshot(replay_depth):
    """Binance's local order book algorithm, over the wire."""
    srv = replay_depth

    async def go():
        client, bsm = _bsm(srv)
        try:
            async with bsm.depth_socket("BTCUSDT", interval=100) as sock:
                first = await _recv(sock)
                snap = await client.get_order_book(symbol="BTCUSDT", limit=1000)
                events = [first]
                # Events buffered before the snapshot are older than it; read on until 25 newer
                # ones have arrived (bounded), however busy the machine was meanwhile.
                while sum(e["u"] > snap["lastUpdateId"] for e in events) < 25 and len(events) < 400:
                    events.append(await _recv(sock))
        finally:
            await client.close_connection()
        return snap, events

    snap, events = rt.run(go())
    assert events[0]["e"] == "depthUpdate"
    bids = {p: q for p, q in snap["bids"]}
    asks = {p: q for p, q in snap["asks"]}
    last = snap["lastUpdateId"]
    applied = 0
    for e in events:
        if e["u"] <= last:
            continue
        assert e["U"] == last + 1 or (applied == 0 and e["U"] <= last + 1 <= e["u"])
        for book, side in ((bids, e["b"]), (asks, e["a"])):
            for p, q in side:
                if Decimal(q) == 0:
                    book.pop(p, None)
                else:
                    book[p] = q
        last = e["u"]
        applied += 1
    assert applied >= 20
    t = srv.model.book_time("BTCUSDT", last - UPDATE_ID_BASE)
    expected = srv.model.depth("BTCUSDT", t, 1000)
    # the diffs also carry levels beyond the snapshot's 1000 (the book holds 5000): compare the top
    assert sorted(((Decimal(p), Decimal(q)) for p, q in bids.items()), reverse=True)[:1000] == expected.bids
    assert sorted((Decimal(p), Decimal(q)) for p, q in asks.items())[:1000] == expected.asks


def test_drop_closes_sockets_and_python_binance_reconnects():
    with ReplayServer(port=0, speed=60, start_wall_ms=START_MS) as srv:

        async def go():
            client, bsm = _bsm(srv)
            try:
                async with websockets.connect(srv.stream_url + "ws/btcusdt@trade") as raw, \
                        bsm.trade_socket("BTCUSDT") as sock:
                    await asyncio.wait_for(raw.recv(), 5)
                    before = await _recv(sock)
                    status, _, body = await asyncio.to_thread(rt.http, "POST", srv.base_url + "/_replay/drop")
                    assert status == 200 and body["closed"] == 2
                    with pytest.raises(websockets.ConnectionClosed) as ei:
                        while True:
                            await asyncio.wait_for(raw.recv(), 5)
                    # python-binance reports the disconnect (error messages), then reconnects by itself
                    errors = []
                    msg = await asyncio.wait_for(sock.recv(), 5)
                    while not errors or msg.get("e") == "error":
                        if msg.get("e") == "error":
                            errors.append(msg)
                        msg = await asyncio.wait_for(sock.recv(), 10)
                    return before, ei.value, errors[0], msg
            finally:
                await client.close_connection()

        before, closed, err, after = rt.run(go(), timeout=30)
        assert closed.rcvd is not None and closed.rcvd.code == 1001
        assert err["type"] in ("ConnectionClosedOK", "ConnectionClosedError", "BinanceWebsocketClosed")
        assert after["e"] == "trade" and after["t"] > before["t"]


def test_pause_freezes_prices_and_streams():
    with ReplayServer(port=0, speed=60, start_wall_ms=START_MS) as srv:
        url = srv.api_url + "/v3/ticker/bookTicker?symbol=BTCUSDT"
        status, _, state = rt.http("POST", srv.base_url + "/_replay/clock", {"paused": True})
        assert status == 200 and state["paused"] is True
        frozen_at = state["replay_time_ms"]
        a = rt.http("GET", url)[2]
        time.sleep(1.2)  # 72 replay seconds if it were running
        b = rt.http("GET", url)[2]
        assert a == b
        assert srv.clock.now_ms() == frozen_at
        assert rt.http("GET", srv.base_url + "/_replay/state")[2]["replay_time_ms"] == frozen_at

        async def silent():
            async with websockets.connect(srv.stream_url + "ws/btcusdt@trade") as ws:
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(ws.recv(), 0.6)

        rt.run(silent())
        status, _, state = rt.http("POST", srv.base_url + "/_replay/clock", {"paused": False, "speed": 600})
        assert state["paused"] is False and state["speed"] == 600
        time.sleep(0.3)
        assert srv.clock.now_ms() - frozen_at >= 100_000  # resumed from where it froze, 600x
        assert rt.http("POST", srv.base_url + "/_replay/clock", {"speed": -1})[0] == 400


def test_any_ws_path_is_a_connection_that_subscribes_malformed_combined_is_refused_unknown_symbol_silent(replay_live):
    """Binance accepts ``/ws/<anything>`` (ccxt.pro opens ``/ws/0`` and then sends SUBSCRIBE)."""
    srv = replay_live

    async def go():
        async with websockets.connect(srv.stream_url + "ws/0") as ws:
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 7}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"result": None, "id": 7}
            trade = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert (trade["e"], trade["s"]) == ("trade", "BTCUSDT")
        async with websockets.connect(srv.stream_url + "ws/btcusdt@bogus") as ws:  # nothing subscribed
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 1}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"result": [], "id": 1}
        with pytest.raises(websockets.InvalidStatus) as ei:
            async with websockets.connect(srv.stream_url + "stream?streams=btcusdt@bogus"):
                pass
        async with websockets.connect(srv.stream_url + "ws/dogeusdt@trade") as ws:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(ws.recv(), 0.5)
        return ei.value

    exc = rt.run(go())
    assert exc.response.status_code == 400


def test_server_pings_and_drops_silent_clients():
    with ReplayServer(port=0, start_wall_ms=START_MS, paused=True, ping_interval=0.2, pong_timeout=0.5) as srv:

        async def go():
            async with aiohttp.ClientSession() as s:
                async with s.ws_connect(srv.stream_url + "ws", autoping=False) as ws:
                    msg = await ws.receive(timeout=2)
                    assert msg.type == aiohttp.WSMsgType.PING
                    await ws.ping(b"hi")  # the server answers our pings
                    while True:
                        msg = await ws.receive(timeout=3)
                        if msg.type == aiohttp.WSMsgType.PONG:
                            assert msg.data == b"hi"
                            break
                    # we never pong: the server gives up after pong_timeout
                    while msg.type not in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                        msg = await ws.receive(timeout=3)
                    return msg

        msg = rt.run(go())
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1008


def test_clock_jump_sends_a_bounded_burst_then_stays_current():
    with ReplayServer(port=0, start_wall_ms=START_MS, paused=True) as srv:

        async def go():
            async with websockets.connect(srv.stream_url + "ws/ethusdt@aggTrade") as ws:
                status, _, state = await asyncio.to_thread(
                    rt.http, "POST", srv.base_url + "/_replay/clock", {"advance_ms": 600_000})
                assert status == 200 and state["replay_time_ms"] >= START_MS + 600_000
                got = []
                with pytest.raises(asyncio.TimeoutError):
                    while True:
                        got.append(json.loads(await asyncio.wait_for(ws.recv(), 0.5)))
                return got, state

        got, state = rt.run(go())
        now = srv.clock.now_ms()
        m = srv.model
        # one replay minute of trades, not ten
        assert m.trade_index("ETHUSDT", now - 55_000) - m.trade_index("ETHUSDT", now - 60_000) > 10
        assert m.trade_index("ETHUSDT", now) - m.trade_index("ETHUSDT", now - 55_000) <= len(got)
        assert len(got) <= m.trade_index("ETHUSDT", now) - m.trade_index("ETHUSDT", now - 60_000)
        assert got[-1]["a"] == srv.model.last_trade("ETHUSDT", now).id
        assert [g["a"] for g in got] == list(range(got[0]["a"], got[-1]["a"] + 1))
        st = srv.state()
        assert st["paused"] and st["symbols"]["ETHUSDT"]["tape_index"] == 610


def test_avg_price_stream_and_depth_diffs_only_on_change(replay_live):
    """``<s>@avgPrice`` (Binance "Average Price" payload) equals ``GET avgPrice``'s model value at
    its event time; ``<s>@depth`` sends no empty diff and its events chain ``U = previous u + 1``."""
    srv = replay_live

    async def go():
        got = {"avg": [], "depth": []}
        async with websockets.connect(srv.stream_url + "stream?streams=btcusdt@avgPrice/btcusdt@depth") as ws:
            while len(got["avg"]) < 5 or len(got["depth"]) < 3:
                msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
                got["avg" if msg["stream"].endswith("avgPrice") else "depth"].append(msg["data"])
        return got

    got = rt.run(go(), 60)
    m = srv.model
    for a in got["avg"]:
        assert set(a) == {"e", "E", "s", "i", "w", "T"} and (a["e"], a["s"], a["i"]) == ("avgPrice", "BTCUSDT", "5m")
        expected = m.avg_price("BTCUSDT", a["E"])
        assert (a["w"], a["T"]) == (f"{expected.price:.8f}", expected.close_time)
    depth = got["depth"]
    assert all(d["b"] or d["a"] for d in depth)
    assert all(b["U"] == a["u"] + 1 for a, b in zip(depth, depth[1:]))
