"""The market-data MCP tools in-process (POST /mcp) against the replay exchange: markets,
tickers, order book, klines by time range, fees, and live-stream subscriptions."""
import asyncio
import threading
from decimal import Decimal

from test_mcp import call

from conftest import sqlite_pass_only, wait_until
from marketdata import services
from marketdata.binance import make_client
from replay import wire


def test_list_markets_paginates_and_filters(quotes, trader):
    _, _, key = trader
    services.tickers_24h_sync()
    err, page1 = call(key, "list_markets", page_size=1)
    assert not err, page1
    assert (page1["total"], page1["page"], page1["nextPage"]) == (2, 1, 2) and "page=2" in page1["hint"]
    btc = page1["markets"][0]
    assert (btc["symbol"], btc["baseAsset"], btc["quoteAsset"], btc["status"]) == ("BTCUSDT", "BTC", "USDT", "TRADING")
    assert btc["tickSize"] == "0.01000000" and any(f["filterType"] == "LOT_SIZE" for f in btc["filters"])
    venue = make_client().get_ticker(symbol="BTCUSDT")  # clock paused: same answer
    assert (btc["lastPrice"], btc["volume"]) == (venue["lastPrice"], venue["volume"])
    err, page2 = call(key, "list_markets", page=2, page_size=1)
    assert [m["symbol"] for m in page2["markets"]] == ["ETHUSDT"] and page2["nextPage"] is None
    err, none = call(key, "list_markets", quote_asset="btc", status="TRADING")
    assert not err and none["total"] == 0 and none["markets"] == []
    err, text = call(key, "list_markets", page_size=501)
    assert err and "page_size must be at most 500" in text
    err, text = call(key, "list_markets", page=2**62, page_size=500)  # an offset no database integer holds
    assert err and "page must be at most" in text


def test_market_data_ticker_24h_and_order_book(quotes, trader, replay):
    _, _, key = trader
    err, md = call(key, "get_market_data", symbols=["ETHUSDT", "btcusdt"])
    assert not err, md
    by = {m["symbol"]: m for m in md["markets"]}
    assert set(by) == {"BTCUSDT", "ETHUSDT"}
    now = replay.clock.now_ms()
    for sym, m in by.items():
        tk = wire.ticker_24h_rest(replay.model.ticker_24h(sym, now))
        assert (m["bidPrice"], m["askPrice"]) == (quotes[sym]["bidPrice"], quotes[sym]["askPrice"])
        assert Decimal(m["spread"]) == Decimal(m["askPrice"]) - Decimal(m["bidPrice"]) > 0
        assert (m["volume"], m["highPrice"], m["lowPrice"], m["priceChangePercent"]) == (
            tk["volume"], tk["highPrice"], tk["lowPrice"], tk["priceChangePercent"])
        assert m["quoteSource"] == "stream"
    err, t24 = call(key, "get_ticker_24h")
    assert not err and [t["symbol"] for t in t24["tickers"]] == ["BTCUSDT", "ETHUSDT"]
    assert t24["tickers"][1]["lastPrice"] == wire.ticker_24h_rest(replay.model.ticker_24h("ETHUSDT", now))["lastPrice"]
    err, text = call(key, "get_market_data", symbols=["BTCUSDT", "BTCUSTD"])
    assert err and "[-1121]" in text and "BTCUSDT" in text
    err, book = call(key, "get_order_book", symbol="BTCUSDT", limit=7)
    assert not err
    assert book == {"symbol": "BTCUSDT", **wire.depth_rest(replay.model.depth("BTCUSDT", now, 7))}
    assert len(book["bids"]) == 7 and Decimal(book["bids"][0][0]) < Decimal(book["asks"][0][0])
    err, text = call(key, "get_order_book", symbol="BTCUSDT", limit=5001)
    assert err and "limit must be an integer from 1 to 5000" in text


def test_get_klines_by_time_range_pages_through_stored_and_venue_candles(symbols, trader):
    replay = symbols
    _, _, key = trader
    services.klines_sync(symbol="BTCUSDT", interval="1m")
    t0 = replay.model.tape_start_ms("BTCUSDT")
    err, page = call(key, "get_klines", symbol="BTCUSDT", interval="1m", start_time=t0, limit=3)
    assert not err, page
    assert [k["openTime"] for k in page["klines"]] == [t0, t0 + 60_000, t0 + 120_000]
    assert page["nextStartTime"] == t0 + 120_001
    err, page2 = call(key, "get_klines", symbol="BTCUSDT", interval="1m", start_time=page["nextStartTime"], limit=3)
    assert page2["klines"][0]["openTime"] == t0 + 180_000
    now = replay.clock.now_ms()
    want = [wire.kline_row(k) for k in replay.model.klines("BTCUSDT", "1m", now, start_time=t0, limit=3)]
    assert [[k["openTime"], k["open"], k["high"], k["low"], k["close"], k["volume"]] for k in page["klines"]] == \
        [r[:6] for r in want]
    # A 5m range comes from the venue; end_time bounds it.
    t5 = -(-t0 // 300_000) * 300_000  # the first 5m bucket that opens at or after t0
    err, five = call(key, "get_klines", symbol="BTCUSDT", interval="5m", start_time=t5, end_time=t5 + 600_000)
    assert not err and [k["openTime"] for k in five["klines"]] == [t5, t5 + 300_000, t5 + 600_000]
    assert five["klines"][0]["close"] == wire.kline_row(replay.model.klines("BTCUSDT", "5m", now, start_time=t5, limit=1)[0])[4]
    assert five["nextStartTime"] is None
    err, text = call(key, "get_klines", symbol="BTCUSDT", interval="1m", limit=1001)
    assert err and "limit must be an integer from 1 to 1000" in text
    err, text = call(key, "get_klines", symbol="BTCUSDT", interval="2m")
    assert err and "[-1120]" in text and "Valid intervals:" in text


def test_get_fees_defaults_and_account_rates(symbols, trader):
    _, account, key = trader
    account.maker_fee_rate, account.taker_fee_rate = Decimal("0.00075"), Decimal("0.00075")
    account.save()
    err, fees = call(key, "get_fees", symbols=["BTCUSDT"])
    assert not err, fees
    assert fees["fees"] == [{"symbol": "BTCUSDT", "makerCommission": "0.001", "takerCommission": "0.001", "source": "default"}]
    assert fees["accounts"] == [{"accountId": account.id, "name": account.name, "venue": "paper",
                                 "makerCommission": "0.00075000", "takerCommission": "0.00075000"}]
    err, all_fees = call(key, "get_fees")
    assert [f["symbol"] for f in all_fees["fees"]] == ["BTCUSDT", "ETHUSDT"]


class IngesterThread:
    """The real ingester on its own event loop in a thread (as ``manage.py ingest`` runs it)."""

    def __init__(self, symbols, **kwargs):
        from marketdata.ingester import Ingester

        self.ingester = None
        self._kwargs, self._symbols, self._ready = kwargs, symbols, threading.Event()
        self._loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self._cls = Ingester

    def _run(self):
        asyncio.set_event_loop(self._loop)
        self.ingester = self._cls(self._symbols, **self._kwargs)
        self._ready.set()
        self._loop.run_until_complete(self.ingester.run())

    def __enter__(self):
        self.thread.start()
        self._ready.wait(5)
        return self.ingester

    def __exit__(self, *exc):
        self._loop.call_soon_threadsafe(self.ingester.stop)
        self.thread.join(30)
        assert not self.thread.is_alive(), "the ingester stops promptly"


@sqlite_pass_only
def test_stream_subscriptions_reach_the_running_ingester(symbols, trader, django_capture_on_commit_callbacks):
    _, _, key = trader
    err, text = call(key, "subscribe_stream", stream="btcusdt@candles")
    assert err and "kinds: trade, aggTrade, bookTicker" in text
    err, text = call(key, "subscribe_stream", stream="btcusd@trade")
    assert err and "[-1121]" in text and "BTCUSDT" in text
    err, text = call(key, "get_stream_messages", stream="btcusdt@trade")
    assert err and "subscribe_stream('btcusdt@trade')" in text
    with IngesterThread(["BTCUSDT"], store_klines=False) as ingester:
        wait_until(lambda: ingester.connects == 1, timeout=10, what="the ingester's connection")
        with django_capture_on_commit_callbacks(execute=True):
            err, sub = call(key, "subscribe_stream", stream="BTCUSDT@trade")
        assert not err and sub == {"stream": "btcusdt@trade", "subscribed": True, "created": True}
        # Added to the open connection (SUBSCRIBE), no reconnect; trades arrive once per second.
        got = wait_until(lambda: (lambda r: r if not r[0] and r[1]["count"] >= 2 else None)(
            call(key, "get_stream_messages", stream="btcusdt@trade", limit=10)), timeout=15, what="trade messages")[1]
        assert ingester.connects == 1
        trades = got["messages"]
        assert all(m["e"] == "trade" and m["s"] == "BTCUSDT" for m in trades)
        ids = [m["t"] for m in trades]
        assert ids == sorted(ids) and got["latest"] == trades[-1]
        t = symbols.model.trade("BTCUSDT", ids[-1])
        assert (trades[-1]["p"], trades[-1]["q"]) == (format(t.price, "f"), format(t.qty, "f"))
        err, streams = call(key, "list_streams")
        by = {s["stream"]: s for s in streams["streams"]}
        assert by["btcusdt@trade"]["subscribed"] and by["btcusdt@trade"]["buffered"] >= 2
        assert by["btcusdt@bookTicker"]["default"] and not by["btcusdt@bookTicker"]["subscribed"]
        err, book_msgs = call(key, "get_stream_messages", stream="btcusdt@bookTicker", limit=1)
        assert not err and book_msgs["count"] == 1 and book_msgs["messages"][0]["s"] == "BTCUSDT"
        with django_capture_on_commit_callbacks(execute=True):
            err, unsub = call(key, "unsubscribe_stream", stream="btcusdt@trade")
        assert unsub == {"stream": "btcusdt@trade", "unsubscribed": True}
        wait_until(lambda: "btcusdt@trade" not in ingester._streams, timeout=5, what="the unsubscription")
    err, streams = call(key, "list_streams")
    assert "btcusdt@trade" not in {s["stream"] for s in streams["streams"]}


def test_stream_messages_limit_is_bounded(symbols, trader):
    _, _, key = trader
    err, text = call(key, "get_stream_messages", stream="btcusdt@bookTicker", limit=0)
    assert err and "limit must be an integer from 1 to 200" in text


def test_stream_subscriptions_are_capped_per_user(symbols, trader, settings):
    """A token cannot make the ingester open streams without bound: past the cap, subscribe_stream
    is a tool error naming the limit; re-subscribing to a held stream still works."""
    from test_mcp import call

    settings.MAX_STREAM_SUBSCRIPTIONS = 2
    _, _, key = trader
    assert not call(key, "subscribe_stream", stream="btcusdt@trade")[0]
    assert not call(key, "subscribe_stream", stream="ethusdt@trade")[0]
    is_error, text = call(key, "subscribe_stream", stream="btcusdt@aggTrade")
    assert is_error and "At most 2 stream subscriptions" in text
    assert not call(key, "subscribe_stream", stream="btcusdt@trade")[0]
    assert not call(key, "unsubscribe_stream", stream="ethusdt@trade")[0]
    assert not call(key, "subscribe_stream", stream="btcusdt@aggTrade")[0]
