"""VenueClient against the replay exchange's real 429/418/5xx injection (POST /_replay/fail):
Retry-After honoured, the back-off shared through Redis, weight headers read, hot reads cached."""
import time

import pytest
from django.conf import settings

from marketdata.binance import VenueClient, VenueRateLimited, backoff_clear, backoff_until_ms, used_weight
from replay.testing import http


@pytest.fixture
def venue(replay):
    """The session replay exchange with no armed failures and no back-off, before and after."""
    http("DELETE", f"{replay.base_url}/_replay/fail")
    backoff_clear()
    yield replay
    http("DELETE", f"{replay.base_url}/_replay/fail")
    backoff_clear()


def arm(replay, status, count=1, retry_after=0, paths=("/api/v3/ticker/24hr",)):
    code, _, body = http("POST", f"{replay.base_url}/_replay/fail",
                         {"status": status, "count": count, "retry_after": retry_after, "paths": list(paths)})
    assert code == 200, body


def pending(replay) -> list[dict]:
    return http("GET", f"{replay.base_url}/_replay/state")[2]["pending_failures"]


def test_429_waits_retry_after_then_succeeds_and_weight_is_read(venue):
    arm(venue, 429, retry_after=1)
    t0 = time.monotonic()
    ticker = VenueClient(max_wait_s=5).call("get_ticker", symbol="BTCUSDT")
    elapsed = time.monotonic() - t0
    assert ticker["symbol"] == "BTCUSDT"
    assert elapsed >= 0.9, "honoured Retry-After: 1"
    assert pending(venue) == [], "the 429 was answered, then the retry went through"
    assert used_weight() and used_weight() >= 2  # X-MBX-USED-WEIGHT-1M of the successful answer


def test_418_longer_than_we_wait_refuses_and_nothing_more_is_sent(venue):
    arm(venue, 418, retry_after=30)
    client = VenueClient(max_wait_s=2)
    with pytest.raises(VenueRateLimited) as exc:
        client.call("get_ticker", symbol="BTCUSDT")
    assert exc.value.code == -1003 and "HTTP 418" in str(exc.value) and "retry after 30 s" in str(exc.value)
    assert 28_000 < backoff_until_ms() - time.time() * 1000 <= 30_000
    # Another process (a fresh client) respects the shared back-off without calling the venue:
    arm(venue, 429, retry_after=1)
    with pytest.raises(VenueRateLimited) as exc:
        VenueClient(max_wait_s=2).call("get_ticker", symbol="BTCUSDT")
    assert "nothing was sent" in str(exc.value) and exc.value.details["retryAfterS"] > 25
    assert [r["status"] for r in pending(venue)] == [429], "the armed 429 was never consumed"


def test_5xx_is_retried_with_backoff(venue):
    arm(venue, 503, count=2)
    assert VenueClient(max_wait_s=1).call("get_ticker", symbol="ETHUSDT")["symbol"] == "ETHUSDT"
    assert pending(venue) == []
    arm(venue, 500, count=5)
    from binance.exceptions import BinanceAPIException

    with pytest.raises(BinanceAPIException) as exc:
        VenueClient(max_wait_s=1, retries=1).call("get_ticker", symbol="ETHUSDT")
    assert exc.value.status_code == 500


def test_soft_weight_limit_backs_off_until_the_next_minute(venue, settings):
    settings.BINANCE_WEIGHT_SOFT_LIMIT = 1
    VenueClient().call("get_ticker", symbol="BTCUSDT")
    next_minute_ms = (int(time.time() // 60) + 1) * 60_000
    assert abs(backoff_until_ms() - next_minute_ms) <= 1000


def test_hot_reads_are_cached_in_redis(venue):
    client = VenueClient(max_wait_s=1, retries=0)
    first = client.ticker_24h("BTCUSDT")
    book = client.depth("BTCUSDT", 5)
    arm(venue, 500, count=1, paths=("/api/v3/ticker/24hr", "/api/v3/depth"))
    assert client.ticker_24h("BTCUSDT") == first, "served from the cache, venue not asked"
    assert client.depth("BTCUSDT", 5) == book
    assert len(pending(venue)) == 1
    info = client.exchange_info()
    assert {s["symbol"] for s in info["symbols"]} >= {"BTCUSDT", "ETHUSDT"}
    assert settings.BINANCE_CACHE_TTL_S["depth"] <= 1.0


def test_mcp_tool_during_a_ban_is_a_typed_error(venue, symbols, trader):
    from test_mcp import call

    _, _, key = trader
    arm(venue, 418, retry_after=60, paths=("/api/v3/depth",))
    err, text = call(key, "get_order_book", symbol="BTCUSDT", limit=10)
    assert err and "[-1003] The venue answered HTTP 418" in text and "retry after 60 s" in text
