"""Market data pulled from the replay exchange with python-binance: exchangeInfo, closed klines,
and the ingester's stream → Redis cache → Channels path."""
import asyncio
from decimal import Decimal

import pytest
from channels.layers import get_channel_layer

from core.redis import get_redis
from marketdata.cache import book_key, kline_key, loads
from marketdata.ingester import Ingester, market_group
from marketdata.models import Kline, Symbol
from marketdata.services import exchange_info_sync, klines_sync


def test_exchange_info_sync_stores_symbols_with_filters(symbols):
    btc = Symbol.objects.get(symbol="BTCUSDT")
    assert (btc.base_asset, btc.quote_asset, btc.status) == ("BTC", "USDT", "TRADING")
    # Recorded exchangeInfo of 2021-10-12: tickSize 0.01, stepSize 0.00001, minNotional 10.
    assert (btc.tick_size, btc.step_size, btc.min_notional) == (Decimal("0.01"), Decimal("0.00001"), Decimal("10"))
    assert any(f["filterType"] == "LOT_SIZE" for f in btc.filters)


def test_klines_sync_stores_closed_candles_once(symbols):
    replay = symbols
    stored = klines_sync(symbol="BTCUSDT", interval="1m")
    rows = list(Kline.objects.filter(symbol="BTCUSDT", interval="1m").order_by("open_time"))
    assert stored == len(rows) > 100
    opens = [k.open_time for k in rows]
    assert all(b - a == 60_000 for a, b in zip(opens, opens[1:])), "no gaps"
    # Every stored candle is closed on the replay clock, and equals the venue's answer for it.
    now = replay.clock.now_ms()
    assert rows[-1].close_time < now
    first = rows[0]
    from marketdata.binance import make_client

    venue = make_client().get_klines(symbol="BTCUSDT", interval="1m", startTime=first.open_time, limit=1)[0]
    assert (format(first.open, "f"), format(first.close, "f"), format(first.volume, "f")) == (venue[1], venue[4], venue[5])
    again = klines_sync(symbol="BTCUSDT", interval="1m")
    assert Kline.objects.filter(symbol="BTCUSDT", interval="1m").count() == len(rows) + again
    assert again <= 2, "a second sync only adds candles that closed since"


@pytest.mark.django_db
def test_ingester_caches_quotes_and_pushes_to_the_market_group(replay):
    layer = get_channel_layer()

    async def run():
        channel = await layer.new_channel()
        await layer.group_add(market_group("BTCUSDT"), channel)
        ingester = Ingester(["BTCUSDT"], store_klines=False)  # no DB writes from other threads in a django_db test
        task = asyncio.create_task(ingester.run())
        try:
            got = {}
            while {"bookTicker", "kline_1m"} - set(got):
                msg = await asyncio.wait_for(layer.receive(channel), timeout=15)
                got[msg["stream"]] = msg
            return got, ingester
        finally:
            ingester.stop()
            await asyncio.wait_for(task, 10)

    got, ingester = asyncio.run(run())
    assert ingester.connects == 1 and ingester.messages > 0
    book = loads(get_redis().get(book_key("BTCUSDT")))
    assert Decimal(book["askPrice"]) > Decimal(book["bidPrice"]) > 0
    assert got["bookTicker"]["type"] == "market.update" and got["bookTicker"]["symbol"] == "BTCUSDT"
    kline = loads(get_redis().get(kline_key("BTCUSDT", "1m")))
    assert kline["s"] == "BTCUSDT" and kline["i"] == "1m"
