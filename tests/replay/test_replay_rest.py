"""REST API of the replay exchange, driven through python-binance exactly as against Binance."""
from __future__ import annotations

import time
from decimal import Decimal

import pytest
from binance import AsyncClient, Client
from binance.exceptions import BinanceAPIException

from replay import refdata
from replay import testing as rt
from replay.server import ReplayServer
from replay.wire import kline_row


START_MS = 1_800_000_012_345  # 2027-01-15T08:00:12.345Z: a fixed replay start, reproducible values


@pytest.fixture(scope="module")
def replay_paused():
    """A replay exchange frozen at START_MS (deterministic REST answers)."""
    with ReplayServer(port=0, speed=60, start_wall_ms=START_MS, paused=True) as srv:
        yield srv


def test_python_binance_klines_are_the_recorded_rows(replay_paused):
    """get_klines(startTime = shifted 2020-01-01T00:00Z, limit=3) == the first three CSV rows."""
    rows = rt.recorded_rows("BTCUSDT")[:3]
    srv = replay_paused
    start = srv.model.shift("BTCUSDT", 1577836800000)  # 2020-01-01T00:00:00Z on the replay clock
    assert start == srv.model.tape_start_ms("BTCUSDT")
    shift = start - 1577836800000

    async def go():
        client = rt.async_client(srv.api_url)
        try:
            return await client.get_klines(symbol="BTCUSDT", interval="1m", startTime=start, limit=3)
        finally:
            await client.close_connection()

    got = rt.run(go())
    # OHLC, times, trade count as recorded; volumes on today's stepSize 0.00001 (the recording has 6
    # decimals), quote volumes the sums of the replayed trades
    expected = [[int(r[0]) + shift, *r[1:5], int(r[6]) + shift, int(r[8]), r[11]] for r in rows]
    assert [g[:5] + [g[6], g[8], g[11]] for g in got] == expected
    assert got[0][1:6] == ["7195.24000000", "7196.25000000", "7183.14000000", "7186.68000000", "51.64281000"]
    for g, r in zip(got, rows):
        for i in (5, 9):
            assert abs(Decimal(g[i]) - Decimal(r[i])) <= Decimal("0.000005") and Decimal(g[i]) % Decimal("0.00001") == 0


def test_aggregated_1h_kline_equals_independent_aggregation(replay_paused):
    srv = replay_paused
    rows = rt.recorded_rows("BTCUSDT")
    t0 = srv.model.tape_start_ms("BTCUSDT")
    shift = t0 - int(rows[0][0])
    hour = t0 - t0 % 3_600_000 + 3 * 3_600_000  # a full hour inside the history

    async def go():
        client = rt.async_client(srv.api_url)
        try:
            one = await client.get_klines(symbol="BTCUSDT", interval="1h", startTime=hour, limit=1)
            ui = await client.get_ui_klines(symbol="BTCUSDT", interval="1h", startTime=hour, limit=1)
            return one, ui
        finally:
            await client.close_connection()

    (k,), (ui,) = rt.run(go())
    first = (hour - t0) // 60_000
    expected = rt.aggregate_rows(rows[first:first + 60])
    expected[0] += shift
    expected[6] += shift
    ones = srv.model.klines("BTCUSDT", "1m", srv.clock.now_ms(), start_time=hour, limit=60)
    assert k == ui and k[:5] + [k[6], k[8]] == expected[:5] + [expected[6], expected[8]]
    assert [Decimal(k[i]) for i in (5, 7, 9, 10)] == [
        sum(getattr(x, f) for x in ones) for f in ("volume", "quote_volume", "taker_buy_base", "taker_buy_quote")]
    assert k[0] == hour and k[6] == hour + 3_599_999


def test_tickers_depth_and_trades_match_the_model(replay_paused):
    srv = replay_paused
    now = srv.clock.now_ms()
    m = srv.model

    async def go():
        client = rt.async_client(srv.api_url)
        try:
            return (
                await client.get_orderbook_ticker(symbol="BTCUSDT"),
                await client.get_order_book(symbol="BTCUSDT", limit=500),
                await client.get_symbol_ticker(symbol="ETHUSDT"),
                await client.get_all_tickers(),
                await client.get_ticker(symbol="BTCUSDT"),
                await client.get_avg_price(symbol="BTCUSDT"),
                await client.get_recent_trades(symbol="ETHUSDT", limit=5),
            )
        finally:
            await client.close_connection()

    bt, depth, price, prices, t24, avg, trades = rt.run(go())
    tick = Decimal("0.01")
    assert Decimal(bt["askPrice"]) - Decimal(bt["bidPrice"]) == tick * m.spread_ticks("BTCUSDT") == tick
    mbt = m.book_ticker("BTCUSDT", now)
    assert (Decimal(bt["bidPrice"]), Decimal(bt["bidQty"]), Decimal(bt["askPrice"])) == (
        mbt.bid_price, mbt.bid_qty, mbt.ask_price)
    assert bt["bidPrice"] == f"{mbt.bid_price:.8f}" and len(bt["bidPrice"].split(".")[1]) == 8

    assert depth["lastUpdateId"] == mbt.update_id
    bids = [(Decimal(p), Decimal(q)) for p, q in depth["bids"]]
    asks = [(Decimal(p), Decimal(q)) for p, q in depth["asks"]]
    assert len(bids) == len(asks) == 500
    assert bids == m.depth("BTCUSDT", now, 500).bids
    assert all(a[0] > b[0] for a, b in zip(bids, bids[1:])) and all(a[0] < b[0] for a, b in zip(asks, asks[1:]))
    assert all(p % tick == 0 for p, _ in bids + asks)
    assert bids[0][0] == Decimal(bt["bidPrice"]) and asks[0][0] == Decimal(bt["askPrice"])

    assert Decimal(price["price"]) == m.last_trade("ETHUSDT", now).price
    assert {p["symbol"] for p in prices} == {"BTCUSDT", "ETHUSDT"}
    assert list(t24) == [
        "symbol", "priceChange", "priceChangePercent", "weightedAvgPrice", "prevClosePrice", "lastPrice",
        "lastQty", "bidPrice", "bidQty", "askPrice", "askQty", "openPrice", "highPrice", "lowPrice",
        "volume", "quoteVolume", "openTime", "closeTime", "firstId", "lastId", "count"]
    mt = m.ticker_24h("BTCUSDT", now)
    assert Decimal(t24["lastPrice"]) == mt.last_price and Decimal(t24["volume"]) == mt.volume
    assert t24["count"] == mt.count and t24["priceChangePercent"] == f"{mt.price_change_percent:.3f}"
    assert avg["mins"] == 5 and Decimal(avg["price"]) == m.avg_price("BTCUSDT", now).price
    assert [t["id"] for t in trades] == [x.id for x in m.recent_trades("ETHUSDT", now, 5)]
    assert set(trades[0]) == {"id", "price", "qty", "quoteQty", "time", "isBuyerMaker", "isBestMatch"}


def test_trades_of_a_closed_minute_sum_to_the_recorded_volume(replay_paused):
    srv = replay_paused
    now = srv.clock.now_ms()
    minute = now - now % 60_000 - 60_000  # the last closed minute

    async def go():
        client = rt.async_client(srv.api_url)
        try:
            return await client.get_aggregate_trades(symbol="ETHUSDT", startTime=minute, endTime=minute + 59_999)
        finally:
            await client.close_connection()

    aggs = rt.run(go())
    rec = srv.model.recorded_kline("ETHUSDT", minute)
    assert len(aggs) == rec.trades and aggs[0]["T"] == minute and aggs[-1]["T"] <= minute + 59_999
    assert [a["a"] for a in aggs] == list(range(rec.first_trade_id, rec.last_trade_id + 1))
    assert sum(Decimal(a["q"]) for a in aggs) == rec.volume  # ETHUSDT's recorded volumes are on the step
    assert sum(Decimal(a["q"]) for a in aggs if not a["m"]) == rec.taker_buy_base
    assert max(Decimal(a["p"]) for a in aggs) == rec.high and Decimal(aggs[-1]["p"]) == rec.close


def test_binance_error_codes(replay_paused):
    srv = replay_paused

    async def go():
        client = rt.async_client(srv.api_url)
        errors = {}
        try:
            for name, call in {
                "symbol": client.get_klines(symbol="NOPEUSDT", interval="1m"),
                "interval": client.get_klines(symbol="BTCUSDT", interval="2m"),
                "one_second": client.get_klines(symbol="BTCUSDT", interval="1s"),
                "missing": client.get_klines(interval="1m"),
                "lowercase": client.get_order_book(symbol="btcusdt"),
                "unread": client.get_klines(symbol="BTCUSDT", interval="1m", foo="1"),
                "both": client.get_ticker(symbol="BTCUSDT", symbols='["ETHUSDT"]'),
                "limit": client.get_order_book(symbol="BTCUSDT", limit=0),
            }.items():
                with pytest.raises(BinanceAPIException) as ei:
                    await call
                errors[name] = (ei.value.status_code, ei.value.code, ei.value.message)
        finally:
            await client.close_connection()
        return errors

    e = rt.run(go())
    assert e["symbol"] == (400, -1121, "Invalid symbol.")
    assert e["interval"] == e["one_second"] == (400, -1120, "Invalid interval.")
    assert e["missing"] == (400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
    assert e["lowercase"][:2] == (400, -1100)
    assert e["lowercase"][2] == "Illegal characters found in parameter 'symbol'; legal range is '^[A-Z0-9-_.]{1,20}$'."
    assert e["unread"][:2] == (400, -1104)
    assert e["both"][:2] == (400, -1128)
    assert e["limit"] == (400, -1130, "Data sent for parameter 'limit' is not valid.")


def test_injected_429_surfaces_as_binance_api_exception(replay_paused):
    srv = replay_paused
    status, _, armed = rt.http("POST", srv.base_url + "/_replay/fail",
                              {"status": 429, "count": 1, "retry_after": 7, "paths": ["/api/v3/klines"]})
    assert status == 200 and armed["armed"][0]["count"] == 1

    async def go():
        client = rt.async_client(srv.api_url)
        try:
            await client.ping()  # not matching the path prefix: unaffected
            with pytest.raises(BinanceAPIException) as ei:
                await client.get_klines(symbol="BTCUSDT", interval="1m", limit=1)
            again = await client.get_klines(symbol="BTCUSDT", interval="1m", limit=1)  # count was 1
            return ei.value, again
        finally:
            await client.close_connection()

    exc, again = rt.run(go())
    assert exc.status_code == 429 and exc.code == -1003
    assert exc.response.headers["Retry-After"] == "7"
    assert "request weight" in exc.message
    assert len(again) == 1

    rt.http("POST", srv.base_url + "/_replay/fail", {"status": 418, "count": 1, "retry_after": 120})
    status, headers, body = rt.http("GET", srv.api_url + "/v3/time")
    assert status == 418 and body["code"] == -1003 and headers["Retry-After"] == "120"
    assert "IP banned until" in body["msg"]
    for st, code in ((500, -1001), (503, -1008)):
        rt.http("POST", srv.base_url + "/_replay/fail", {"status": st, "count": 1})
        status, _, body = rt.http("GET", srv.api_url + "/v3/ping")
        assert (status, body["code"]) == (st, code)
    assert rt.http("POST", srv.base_url + "/_replay/fail", {"status": 404, "count": 1})[0] == 400


def test_weight_header_and_rate_limit():
    with ReplayServer(port=0, start_wall_ms=START_MS, paused=True, weight_limit=60) as srv:
        url = srv.api_url + "/v3"
        if time.time() % 60 > 57:  # weights are counted per wall-clock minute: stay inside one
            time.sleep(60.2 - time.time() % 60)
        used = []
        for path in ("/ping", "/klines?symbol=BTCUSDT&interval=1m&limit=1", "/depth?symbol=BTCUSDT&limit=500",
                     "/exchangeInfo", "/ticker/24hr?symbol=ETHUSDT", "/ticker/price"):
            status, headers, _ = rt.http("GET", url + path)
            assert status == 200
            used.append(int(headers["X-MBX-USED-WEIGHT-1M"]))
        assert used == [1, 3, 28, 48, 50, 54]
        status, headers, body = rt.http("GET", url + "/depth?symbol=BTCUSDT")  # +5 -> 59
        status, headers, body = rt.http("GET", url + "/avgPrice?symbol=BTCUSDT")  # +2 -> 61 > 60
        assert status == 429 and body["code"] == -1003 and 1 <= int(headers["Retry-After"]) <= 60
        assert "current limit is 60 request weight per 1 MINUTE" in body["msg"]


def test_exchange_info_and_python_binance_create(replay_paused):
    srv = replay_paused

    class ReplayAsyncClient(AsyncClient):
        API_URL = srv.api_url  # AsyncClient.create() pings before returning: point the class at us

    async def go():
        client = await ReplayAsyncClient.create()
        try:
            info = await client.get_exchange_info()
            sym = await client.get_symbol_info("ETHUSDT")
            two = await client._get("exchangeInfo", data={"symbols": '["BTCUSDT","ETHUSDT"]'})
            margin = await client._get("exchangeInfo", data={"permissions": "MARGIN"})
            return client.timestamp_offset, info, sym, two, margin
        finally:
            await client.close_connection()

    offset, info, sym, two, margin = rt.run(go())
    assert abs(offset) < 5000  # serverTime is the wall clock, not replay time
    assert [s["symbol"] for s in info["symbols"]] == ["BTCUSDT", "ETHUSDT"]
    recorded = refdata.symbol_entry("ETHUSDT")
    assert sym == refdata.current_entry(recorded)
    # today's schema (Binance "Exchange information" example) with the recorded values
    documented = {"symbol", "status", "baseAsset", "baseAssetPrecision", "quoteAsset", "quotePrecision",
                  "quoteAssetPrecision", "baseCommissionPrecision", "quoteCommissionPrecision", "orderTypes",
                  "icebergAllowed", "ocoAllowed", "otoAllowed", "opoAllowed", "quoteOrderQtyMarketAllowed",
                  "allowTrailingStop", "cancelReplaceAllowed", "amendAllowed", "pegInstructionsAllowed",
                  "isSpotTradingAllowed", "isMarginTradingAllowed", "filters", "permissions", "permissionSets",
                  "defaultSelfTradePreventionMode", "allowedSelfTradePreventionModes"}
    assert set(sym) == documented
    assert sym["permissionSets"] == [recorded["permissions"]] and sym["permissions"] == []
    assert sym["defaultSelfTradePreventionMode"] in sym["allowedSelfTradePreventionModes"]
    fs, old_fs = {f["filterType"]: f for f in sym["filters"]}, {f["filterType"]: f for f in recorded["filters"]}
    assert not {"MIN_NOTIONAL", "PERCENT_PRICE"} & set(fs) and {"NOTIONAL", "PERCENT_PRICE_BY_SIDE", "TRAILING_DELTA"} <= set(fs)
    assert set(fs["NOTIONAL"]) == {"filterType", "minNotional", "applyMinToMarket", "maxNotional", "applyMaxToMarket",
                                   "avgPriceMins"}
    assert fs["NOTIONAL"]["minNotional"] == old_fs["MIN_NOTIONAL"]["minNotional"]
    assert (fs["PERCENT_PRICE_BY_SIDE"]["bidMultiplierUp"], fs["PERCENT_PRICE_BY_SIDE"]["askMultiplierDown"]) == (
        old_fs["PERCENT_PRICE"]["multiplierUp"], old_fs["PERCENT_PRICE"]["multiplierDown"])
    assert {f["filterType"]: f for f in sym["filters"]}["PRICE_FILTER"]["tickSize"] == "0.01000000"
    weight = next(r for r in info["rateLimits"] if r["rateLimitType"] == "REQUEST_WEIGHT")
    assert weight["limit"] == 6000 and info["timezone"] == "UTC"
    assert [s["symbol"] for s in two["symbols"]] == ["BTCUSDT", "ETHUSDT"]
    assert len(margin["symbols"]) == 2

    # the synchronous client, as marketdata/binance.py builds it
    client = Client(ping=False)
    client.API_URL = srv.api_url
    try:
        assert client.ping() == {}
        k = client.get_klines(symbol="ETHUSDT", interval="1d", limit=2)
        assert len(k) == 2 and k[-1] == kline_row(srv.model.klines("ETHUSDT", "1d", srv.clock.now_ms(), limit=1)[0])
        with pytest.raises(BinanceAPIException) as ei:
            client.get_symbol_ticker(symbol="DOGEUSDT")
        assert ei.value.code == -1121
    finally:
        client.close_connection()


def test_ignoring_429s_gets_the_ip_banned_with_418():
    """Binance "LIMITS": failing to back off after 429s gets an automated IP ban (HTTP 418, -1003
    "Way too much request weight used; IP banned until ..."), 2 minutes for a first offence."""
    with ReplayServer(port=0, paused=True, weight_limit=10, ban_after_ignored_429=2) as srv:
        url = srv.api_url + "/v3/ping"
        statuses = [rt.http("GET", url)[0] for _ in range(10)]
        assert statuses == [200] * 10
        first = rt.http("GET", url)
        assert first[0] == 429 and first[2]["code"] == -1003
        assert rt.http("GET", url)[0] == 429  # one ignored Retry-After
        status, headers, body = rt.http("GET", url)  # two: banned
        assert status == 418 and body["code"] == -1003
        assert body["msg"].startswith("Way too much request weight used; IP banned until ")
        until = int(body["msg"].split("until ")[1].split(".")[0])
        assert 110_000 <= until - srv.clock.wall_ms() <= 120_000 and 110 <= int(headers["Retry-After"]) <= 120
        assert rt.http("GET", srv.api_url + "/v3/time")[0] == 418  # every endpoint, while it lasts
