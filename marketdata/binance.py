"""python-binance clients pointed at the configured venue.

The venue's URLs come from settings (``BINANCE_API_URL``, ``BINANCE_STREAM_URL``): the bundled
replay exchange by default, Binance's spot testnet or live with ``BINANCE_VENUE``. python-binance
reads ``API_URL`` per request and ``BinanceSocketManager.STREAM_URL`` per connection, so setting
them on the instances is all it takes; no code changes between venues.
"""
from __future__ import annotations

import logging
import random
import time

from binance import AsyncClient, BinanceSocketManager, Client
from binance.exceptions import BinanceAPIException
from binance.ws.websocket_api import WebsocketAPI
from django.conf import settings

from core.errors import MarketDataUnavailable
from core.redis import get_redis
from marketdata.cache import dumps, loads

log = logging.getLogger(__name__)


def _secret(api_secret: str | None, private_key: str | None) -> str | None:
    """The HMAC secret to hand python-binance: none with an Ed25519 ``private_key`` (it signs)."""
    if private_key:
        return None
    return api_secret or settings.BINANCE_API_SECRET


def make_client(*, api_key: str | None = None, api_secret: str | None = None, private_key: str | None = None,
                api_url: str | None = None) -> Client:
    """A synchronous ``binance.Client`` for the venue (no ping at construction). ``private_key``:
    an Ed25519 private key PEM (python-binance then signs with it instead of HMAC); ``api_url``:
    this client's REST base (default ``settings.BINANCE_API_URL``)."""
    client = Client(api_key or settings.BINANCE_API_KEY, _secret(api_secret, private_key), ping=False,
                    private_key=private_key or None)
    client.API_URL = api_url or settings.BINANCE_API_URL
    return client


async def make_async_client(*, api_key: str | None = None, api_secret: str | None = None,
                            private_key: str | None = None, api_url: str | None = None,
                            ws_api_url: str | None = None) -> AsyncClient:
    """An ``AsyncClient`` for the venue, pinged and with its server-time offset measured.

    ``AsyncClient.create()`` would ping Binance's default URL before we could repoint it, so this
    builds the client, sets ``API_URL``, then does what ``create()`` does. ``private_key``: an
    Ed25519 private key PEM; ``api_url`` / ``ws_api_url``: REST base and WebSocket API
    (``.../ws-api/v3``, python-binance's ``client.ws_api``, used by its ``ws_*`` methods and
    ``BinanceSocketManager.user_socket()``), default ``settings.BINANCE_API_URL`` /
    ``BINANCE_WS_API_URL``. Raises whatever the ping raises (e.g. ``aiohttp.ClientConnectorError``
    while the venue is unreachable).
    """
    client = AsyncClient(api_key or settings.BINANCE_API_KEY, _secret(api_secret, private_key),
                         private_key=private_key or None)
    client.API_URL = api_url or settings.BINANCE_API_URL
    client.ws_api = WebsocketAPI(url=ws_api_url or settings.BINANCE_WS_API_URL)
    try:
        await client.ping()
        server_time = await client.get_server_time()
        client.timestamp_offset = server_time["serverTime"] - int(time.time() * 1000)
    except BaseException:
        await client.close_connection()
        raise
    return client


def make_socket_manager(client: AsyncClient) -> BinanceSocketManager:
    """A ``BinanceSocketManager`` whose streams connect to the venue's stream URL."""
    bsm = BinanceSocketManager(client)
    bsm.STREAM_URL = settings.BINANCE_STREAM_URL
    return bsm


# ------------------------------------------------------------------------------------------------
# Rate limits and cached hot reads
# ------------------------------------------------------------------------------------------------


class VenueRateLimited(MarketDataUnavailable):
    """The venue refused us for request weight (HTTP 429) or banned this IP (HTTP 418), or we are
    still backing off from that: nothing was sent; retry after ``details["retryAfterS"]`` s."""

    code = -1003


def _rl_key(name: str) -> str:
    return f"{settings.REDIS_KEY_PREFIX}md:rl:{name}"


def backoff_until_ms() -> int:
    """Wall time (ms UTC) until which every process refrains from calling the venue (0 = none)."""
    raw = get_redis().get(_rl_key("until"))
    return int(raw) if raw else 0


def backoff_set(seconds: float, *, reason: str) -> int:
    """Make every process back off from the venue for ``seconds`` (never shortens a longer
    back-off already set); returns the back-off's end (wall ms UTC)."""
    until = int(time.time() * 1000 + seconds * 1000)
    r = get_redis()
    if until > backoff_until_ms():
        r.set(_rl_key("until"), until, px=max(1, int(seconds * 1000)))
        log.warning("venue back-off for %.1f s: %s", seconds, reason)
    return max(until, backoff_until_ms())


def backoff_clear() -> None:
    """Forget any back-off (admin/test use)."""
    get_redis().delete(_rl_key("until"), _rl_key("weight"))


def used_weight() -> int | None:
    """The last ``X-MBX-USED-WEIGHT-1M`` the venue reported in this wall minute (None if unknown)."""
    raw = get_redis().hgetall(_rl_key("weight"))
    if not raw or int(raw.get(b"minute", 0)) != int(time.time() // 60):
        return None
    return int(raw[b"used"])


class VenueClient:
    """A python-binance ``Client`` that honours Binance's REST rate limits and caches hot reads.

    Binance Spot API docs, "LIMITS": every answer carries ``X-MBX-USED-WEIGHT-1M`` (request weight
    used by this IP in the current minute; the REQUEST_WEIGHT limit is 6000/min); over it the
    venue answers HTTP 429 with ``Retry-After`` (seconds), and an IP that keeps going gets HTTP
    418 (banned, ``Retry-After`` up to days). This wrapper:

    - after every call reads ``client.response.headers["X-MBX-USED-WEIGHT-1M"]`` (python-binance
      keeps the last ``requests.Response`` on ``client.response``) and stores it in Redis; at or
      over ``settings.BINANCE_WEIGHT_SOFT_LIMIT`` it backs off until the next minute on its own;
    - on 429/418 stores a back-off shared by every process (Redis) for ``Retry-After`` seconds,
      sleeps it when it is at most ``max_wait_s`` and retries, else raises ``VenueRateLimited``
      without sending anything until the back-off ends;
    - retries 5xx answers (Binance -1001/-1008) with exponential backoff and jitter;
    - caches hot reads in Redis (``cached``): 24h tickers, depth, exchangeInfo, with TTLs from
      ``settings.BINANCE_CACHE_TTL_S``.

    Args: ``client`` (default ``make_client()``); ``max_wait_s``: longest back-off to sleep through
    before giving up (default ``settings.BINANCE_MAX_BACKOFF_S``; use ~2 s on request paths);
    ``retries``: attempts after the first.
    """

    def __init__(self, client: Client | None = None, *, max_wait_s: float | None = None, retries: int = 3):
        self.client = client or make_client()
        self.max_wait_s = settings.BINANCE_MAX_BACKOFF_S if max_wait_s is None else max_wait_s
        self.retries = retries

    def _wait_for_backoff(self) -> None:
        remaining = (backoff_until_ms() - time.time() * 1000) / 1000
        if remaining <= 0:
            return
        if remaining > self.max_wait_s:
            raise VenueRateLimited(
                f"The venue's rate limit is in force for {remaining:.0f} more s; nothing was sent. Retry after that.",
                details={"retryAfterS": round(remaining, 3)},
            )
        time.sleep(remaining)

    def _record_weight(self) -> None:
        response = getattr(self.client, "response", None)
        if response is None:
            return
        raw = response.headers.get("X-MBX-USED-WEIGHT-1M")
        if raw is None or not str(raw).isdigit():
            return
        used = int(raw)
        minute = int(time.time() // 60)
        get_redis().hset(_rl_key("weight"), mapping={"used": used, "minute": minute})
        get_redis().expire(_rl_key("weight"), 120)
        if used >= settings.BINANCE_WEIGHT_SOFT_LIMIT:
            backoff_set((minute + 1) * 60 - time.time(), reason=f"used weight {used} >= soft limit {settings.BINANCE_WEIGHT_SOFT_LIMIT}")

    def call(self, method: str, **params):
        """Call ``Client.<method>(**params)`` under the rate-limit rules above; returns its result.

        Raises ``VenueRateLimited`` (see above), python-binance's ``BinanceAPIException`` for other
        venue errors (e.g. -1121 invalid symbol), or a connection error.
        """
        attempt = 0
        while True:
            self._wait_for_backoff()
            self.client.response = None
            try:
                return getattr(self.client, method)(**params)
            except BinanceAPIException as exc:
                if exc.status_code in (418, 429):
                    raw = (exc.response.headers.get("Retry-After") if exc.response is not None else None) or "1"
                    retry_after = float(raw) if str(raw).replace(".", "", 1).isdigit() else 1.0
                    until = backoff_set(retry_after, reason=f"HTTP {exc.status_code} {exc.message}")
                    if attempt < self.retries and retry_after <= self.max_wait_s:
                        attempt += 1
                        continue
                    raise VenueRateLimited(
                        f"The venue answered HTTP {exc.status_code} ({'IP banned' if exc.status_code == 418 else 'too much request weight'}); "
                        f"retry after {retry_after:.0f} s.",
                        details={"retryAfterS": retry_after, "until": until, "status": exc.status_code},
                    ) from None
                if exc.status_code >= 500 and attempt < self.retries:
                    attempt += 1
                    time.sleep(min(self.max_wait_s, 0.2 * 2 ** attempt) * (0.5 + random.random()))
                    continue
                raise
            finally:
                self._record_weight()

    def cached(self, method: str, *, ttl_s: float, **params):
        """``call`` through a Redis cache of ``ttl_s`` seconds keyed by method and params."""
        key = f"{settings.REDIS_KEY_PREFIX}md:rest:{method}:" + "&".join(f"{k}={params[k]}" for k in sorted(params))
        r = get_redis()
        hit = r.get(key)
        if hit is not None:
            return loads(hit)
        value = self.call(method, **params)
        r.set(key, dumps(value), px=max(1, int(ttl_s * 1000)))
        return value

    # -- hot reads ---------------------------------------------------------------------------------
    def exchange_info(self, *, fresh: bool = False) -> dict:
        """``GET /api/v3/exchangeInfo`` (weight 20), cached ``BINANCE_CACHE_TTL_S["exchangeInfo"]`` s."""
        if fresh:
            return self.call("get_exchange_info")
        return self.cached("get_exchange_info", ttl_s=settings.BINANCE_CACHE_TTL_S["exchangeInfo"])

    def ticker_24h(self, symbol: str | None = None) -> list[dict] | dict:
        """``GET /api/v3/ticker/24hr`` for one symbol or all (weight 2 / 80), cached briefly."""
        params = {"symbol": symbol} if symbol else {}
        return self.cached("get_ticker", ttl_s=settings.BINANCE_CACHE_TTL_S["ticker24h"], **params)

    def depth(self, symbol: str, limit: int = 100) -> dict:
        """``GET /api/v3/depth`` (weight 5..250 by limit), cached ``BINANCE_CACHE_TTL_S["depth"]`` s."""
        return self.cached("get_order_book", ttl_s=settings.BINANCE_CACHE_TTL_S["depth"], symbol=symbol, limit=limit)

    def klines(self, **params) -> list[list]:
        """``GET /api/v3/klines`` (weight 2), not cached (callers page through history)."""
        return self.call("get_klines", **params)
