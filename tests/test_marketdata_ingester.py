"""The ingester on a fast replay (60x: a replay minute per wall second): forced disconnects and
connection roll-overs leave the stored 1m series identical to the recording, with no gap and no
duplicate; the recent-message buffer stays bounded."""
import time

import pytest
from django.conf import settings

from conftest import wait_until
from core.redis import get_redis
from marketdata.cache import buffer_key
from marketdata.models import IndicatorSnapshot, Kline
from replay import wire
from replay.server import ReplayServer
from replay.testing import http
from test_marketdata_tools import IngesterThread


@pytest.fixture
def fast_replay(transactional_db):
    """A private replay exchange at 60x with settings pointed at it (restored afterwards), and its
    exchangeInfo stored."""
    # A clean series to compare with the recording: processes of earlier multi-process tests can
    # commit a last kline after their test's flush.
    Kline.objects.all().delete()
    IndicatorSnapshot.objects.all().delete()
    server = ReplayServer(port=0, speed=60, history_minutes=120).start()
    old = (settings.BINANCE_API_URL, settings.BINANCE_STREAM_URL)
    settings.BINANCE_API_URL, settings.BINANCE_STREAM_URL = server.api_url, server.stream_url
    from marketdata.services import exchange_info_sync

    exchange_info_sync()
    yield server
    settings.BINANCE_API_URL, settings.BINANCE_STREAM_URL = old
    server.stop()


def assert_series_is_the_recording(replay, symbol: str, min_rows: int):
    rows = list(Kline.objects.filter(symbol=symbol, interval="1m").order_by("open_time"))
    assert len(rows) >= min_rows
    opens = [k.open_time for k in rows]
    assert len(set(opens)) == len(opens), "no duplicates"
    assert all(b - a == 60_000 for a, b in zip(opens, opens[1:])), "no gaps"
    now = replay.clock.now_ms()
    assert rows[-1].close_time < now, "only closed candles"
    want = []
    start = opens[0]
    while start <= opens[-1]:
        page = replay.model.klines(symbol, "1m", now, start_time=start, limit=1000)
        want += [wire.kline_row(k) for k in page]
        start = page[-1].open_time + 60_000
    want = [w for w in want if w[0] <= opens[-1]]
    got = [[k.open_time, format(k.open, "f"), format(k.high, "f"), format(k.low, "f"), format(k.close, "f"),
            format(k.volume, "f"), k.close_time, format(k.quote_volume, "f"), k.trades, format(k.taker_buy_base, "f"),
            format(k.taker_buy_quote, "f")] for k in rows]
    assert got == [w[:11] for w in want], "identical to the recording"
    return rows


def test_forced_disconnects_and_rollovers_leave_no_gap_and_no_duplicate(fast_replay):
    replay = fast_replay
    with IngesterThread(["BTCUSDT", "ETHUSDT"]) as ing:
        wait_until(lambda: ing.backfills >= 1 and ing.closed_stored >= 4, timeout=45, what="first closed candles")
        # Two forced disconnects mid-replay (as POST /_replay/drop does); several minutes close meanwhile.
        for n in (2, 3):
            closed = ing.closed_stored
            assert replay.drop_connections() >= 1
            wait_until(lambda: ing.connects >= n and ing.backfills >= n, timeout=45, what=f"reconnect #{n}")
            wait_until(lambda: ing.closed_stored >= closed + 4, timeout=45, what="candles after the reconnect")
        # Roll the connection over (as before Binance's 24 h limit) while streaming.
        ing.max_age_s = 1.5
        wait_until(lambda: ing.connects >= 5, timeout=45, what="two roll-overs")
        ing.max_age_s = 3600
        wait_until(lambda: ing.backfills >= 5, timeout=45, what="backfills after the roll-overs")
        closed = ing.closed_stored
        wait_until(lambda: ing.closed_stored >= closed + 2, timeout=45, what="candles after the roll-overs")
        time.sleep(0.3)
    replay.clock.pause()
    for symbol in ("BTCUSDT", "ETHUSDT"):
        # 120 minutes of history plus the candles streamed across the reconnects (at least 4 + 4 + 2
        # waited for above; more on a fast machine): the series must hold more than the history.
        rows = assert_series_is_the_recording(replay, symbol, min_rows=125)
        # Each closed candle after the warm-up has its indicator snapshot.
        snaps = set(IndicatorSnapshot.objects.filter(symbol=symbol, interval="1m").values_list("open_time", flat=True))
        assert {k.open_time for k in rows[49:]} <= snaps
    # The recent-message buffer is bounded.
    r = get_redis()
    assert r.llen(buffer_key("btcusdt@bookTicker")) == settings.MARKET_STREAM_BUFFER
    assert ing.connects >= 5 and ing.messages > 1000


def test_drop_over_the_control_api_is_survived(fast_replay):
    replay = fast_replay
    with IngesterThread(["ETHUSDT"], snapshots=False) as ing:
        wait_until(lambda: ing.closed_stored >= 2, timeout=45, what="first closed candles")
        code, _, body = http("POST", f"{replay.base_url}/_replay/drop")
        assert code == 200 and body["closed"] >= 1
        wait_until(lambda: ing.connects >= 2, timeout=45, what="the reconnect")
        closed = ing.closed_stored
        wait_until(lambda: ing.closed_stored >= closed + 3, timeout=45, what="candles after the reconnect")
    replay.clock.pause()
    assert_series_is_the_recording(replay, "ETHUSDT", min_rows=120)
