"""The replay exchange: an aiohttp server speaking Binance's spot REST and WebSocket APIs.

Point python-binance at it exactly as at the real exchange/testnet::

    client.API_URL = srv.api_url          # "http://127.0.0.1:<port>/api"
    bsm = BinanceSocketManager(client)
    bsm.STREAM_URL = srv.stream_url       # "ws://127.0.0.1:<port>/"

(``AsyncClient.create()`` pings the default URL before returning, so either build
``AsyncClient(...)``, set ``API_URL`` and ping, or subclass with ``API_URL = srv.api_url`` as a
class attribute. Keep ``testnet=False``: with ``testnet=True`` python-binance uses its
``API_TESTNET_URL``/``STREAM_TESTNET_URL`` instead.)

REST (Binance "Market Data endpoints", paths under ``/api/v3/``; GET; params in the query string):
``ping``, ``time``, ``exchangeInfo``, ``depth``, ``trades``, ``historicalTrades``, ``aggTrades``,
``klines``, ``uiKlines``, ``avgPrice``, ``ticker/24hr``, ``ticker/price``, ``ticker/bookTicker``.
Answers carry Binance's field names and numbers-as-strings; errors are ``{"code", "msg"}`` with
Binance's codes and texts (see ``errors.py``). Every answer carries ``X-MBX-USED-WEIGHT`` and
``X-MBX-USED-WEIGHT-1M``: the request weight used by the client IP in the current wall-clock
minute, with Binance's documented weights; above ``weight_limit`` (default 6000) the answer is
HTTP 429 -1003 with ``Retry-After`` (seconds to the next minute). ``serverTime`` is the **wall**
clock (signed requests are checked against it); every market value is at the **replay** time.

WebSocket (Binance "WebSocket Streams"): ``/ws/<stream>[/<stream>...]`` (raw payloads),
``/ws`` then ``SUBSCRIBE``/``UNSUBSCRIBE``/``LIST_SUBSCRIPTIONS``/``SET_PROPERTY``/
``GET_PROPERTY`` JSON messages (answered ``{"result": ..., "id": ...}``), and
``/stream?streams=<a>/<b>`` (combined: ``{"stream": name, "data": payload}``). Every tick
(``tick_ms``, default 100 ms wall) each connection is sent, in event-time order, every event whose
replay time passed since its previous send; if more than ``max_catchup_ms`` of replay time (default
one replay minute) passed, only the last ``max_catchup_ms`` are sent (a gap, like a slow consumer
would see on Binance). The cap keeps a burst at <= 60 events per once-a-second stream, below
python-binance's 100-message socket queue; it is only reached above 600x or after a clock jump. The server pings every ``ping_interval`` s (20) and closes a connection whose
pongs stop for ``pong_timeout`` s (60); it answers client pings. A malformed stream name in the URL
is refused at the handshake (HTTP 400, ``{"code": 2, "msg": "Invalid request: invalid stream"}``);
a malformed one in ``SUBSCRIBE`` gets ``{"error": {"code": 2, "msg": "Invalid request: invalid
stream"}, "id": ...}``; a well-formed stream of a symbol without a tape stays silent (as on Binance).

Signed endpoints (Binance "Trading endpoints", "Account endpoints", "User Data Streams"; HMAC-SHA256
``signature``, ``timestamp``/``recvWindow`` against the wall clock): orders, cancels, ``account``,
``myTrades``, ``userDataStream`` and ``/ws/<listenKey>``, with matching against the replayed book
and prints; see ``account.py``.

Control API (not Binance's), JSON: ``GET /_replay/state``; ``POST /_replay/clock``
``{"speed"?: float, "paused"?: bool, "advance_ms"?: int}``; ``POST /_replay/drop`` (close every
WebSocket, code 1001); ``POST /_replay/fail`` ``{"status": 429|418|500|503, "count": n,
"retry_after": s, "paths": ["/api/v3/klines", ...]?}`` (the next ``n`` REST calls whose path starts
with one of ``paths`` - default all of ``/api/`` - answer that error with Binance's body and
``Retry-After``); ``DELETE /_replay/fail`` clears pending failures.

Embedding: :class:`ReplayServer` runs the app in a background thread with its own event loop
(``start()``/``stop()``, or ``with ReplayServer(...) as srv:``); ``start_async()``/``stop_async()``
run it on the caller's loop. ``python -m replay`` is the CLI.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Iterable

from aiohttp import WSCloseCode, WSMsgType, web

from . import refdata, wire
from .clock import ReplayClock
from .account import ReplayAccounts
from .errors import (
    BAD_COMBO,
    DISCONNECTED,
    INVALID_INTERVAL,
    INVALID_TICKER_TYPE,
    SERVER_BUSY,
    SYMBOL_AND_SYMBOLS,
    BinanceError,
    err,
    invalid_param,
    ip_banned,
    too_much_weight,
)
from .model import INTERVAL_MS, ReplayModel
from .params import Params, Reply, dumps, json_response, read_json_body
from .streams import StreamSpec, parse_stream, stream_events
from .wsapi import WsApi

log = logging.getLogger(__name__)

_WS_METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
_WS_ID_RE = re.compile(r"^[A-Za-z0-9]{1,36}$")
FAILABLE_STATUSES = (418, 429, 500, 503)


# ------------------------------------------------------------------------------------------------
# request weight (Binance "LIMITS": per IP, per wall-clock minute)
# ------------------------------------------------------------------------------------------------
def _symbols_count(raw: str | None) -> int:
    return raw.count(",") + 1 if raw and raw.strip("[] ") else 0


def weight_depth(q) -> int:
    """``GET /api/v3/depth``: 1-100 -> 5, 101-500 -> 25, 501-1000 -> 50, 1001-5000 -> 250."""
    raw = q.get("limit", "100")
    n = int(raw) if raw.isdigit() else 100
    return 5 if n <= 100 else 25 if n <= 500 else 50 if n <= 1000 else 250


def weight_ticker_24h(q) -> int:
    """``GET /api/v3/ticker/24hr``: symbol 2; symbols 1-20 -> 2, 21-100 -> 40, 101+ -> 80; all 80."""
    if "symbol" in q:
        return 2
    if "symbols" in q:
        n = _symbols_count(q.get("symbols"))
        return 2 if n <= 20 else 40 if n <= 100 else 80
    return 80


def weight_ticker_multi(q) -> int:
    """``ticker/price``, ``ticker/bookTicker``: symbol 2, symbols or all 4."""
    return 2 if "symbol" in q else 4


class WeightTracker:
    """Used request weight per client IP in the current wall-clock minute."""

    def __init__(self, wall_ms: Callable[[], int]):
        self._wall_ms = wall_ms
        self._used: dict[str, tuple[int, int]] = {}

    def add(self, ip: str, weight: int) -> tuple[int, int]:
        """Add ``weight`` for ``ip``; return (used this minute, seconds until the next minute)."""
        now = self._wall_ms()
        minute = now // 60_000
        m, used = self._used.get(ip, (minute, 0))
        if m != minute:
            used = 0
        used += weight
        self._used[ip] = (minute, used)
        return used, max(1, -(-((minute + 1) * 60_000 - now) // 1000))

    def used(self, ip: str) -> int:
        """Weight used by ``ip`` in the current minute."""
        m, used = self._used.get(ip, (0, 0))
        return used if m == self._wall_ms() // 60_000 else 0


class BanTracker:
    """Binance "LIMITS": "Repeatedly violating rate limits and/or failing to back off after
    receiving 429s will result in an automated IP ban (HTTP status 418)", "from 2 minutes to 3
    days" for repeat offenders. An IP that gets a 429 and sends ``ban_after`` more requests that
    also exceed the limit before its ``Retry-After`` passed is banned for 2 minutes, doubling with
    each ban (at most 3 days)."""

    def __init__(self, wall_ms: Callable[[], int], ban_after: int):
        self._wall_ms = wall_ms
        self.ban_after = ban_after
        self._retry_at: dict[str, int] = {}
        self._ignored: dict[str, int] = {}
        self._until: dict[str, int] = {}
        self._bans: dict[str, int] = {}

    def banned(self, ip: str) -> BinanceError | None:
        """The 418 -1003 answer while ``ip`` is banned, else None."""
        until, now = self._until.get(ip, 0), self._wall_ms()
        if now < until:
            return ip_banned(until, max(1, -(-(until - now) // 1000)))
        return None

    def on_429(self, ip: str, retry_after_s: int) -> BinanceError | None:
        """Count a request over the limit; the 418 answer when it is one too many, else None."""
        now = self._wall_ms()
        ignored = self._ignored.get(ip, 0) + 1 if now < self._retry_at.get(ip, 0) else 0
        self._ignored[ip] = ignored
        self._retry_at[ip] = max(self._retry_at.get(ip, 0), now + retry_after_s * 1000)
        if self.ban_after and ignored >= self.ban_after:
            n = self._bans.get(ip, 0)
            self._bans[ip] = n + 1
            self._until[ip] = now + min(120_000 * 2**n, 3 * 86_400_000)
            self._ignored[ip] = 0
            return self.banned(ip)
        return None


@dataclass
class FailRule:
    """An armed failure (``POST /_replay/fail``): the next ``count`` matching REST calls fail."""

    status: int
    count: int
    retry_after: int
    paths: tuple[str, ...]

    def matches(self, path: str) -> bool:
        """True if ``path`` starts with one of the rule's prefixes."""
        return any(path.startswith(p) for p in self.paths)


# ------------------------------------------------------------------------------------------------
# WebSocket connections
# ------------------------------------------------------------------------------------------------
@dataclass(eq=False)
class _Conn:
    ws: web.WebSocketResponse
    combined: bool
    last_t: int
    peer: str
    streams: dict[str, tuple[StreamSpec, int]] = field(default_factory=dict)
    micros: bool = False  # timeUnit=MICROSECOND: time fields in µs
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_pong: float = field(default_factory=time.monotonic)
    sent: int = 0

    async def send(self, text: str) -> None:
        async with self.lock:
            await self.ws.send_str(text)
        self.sent += 1


class ReplayApp:
    """The aiohttp application and its state (model, clock, connections, weights, failures).

    Args: see :class:`ReplayServer`. Build the ``web.Application`` with :meth:`build`.
    ``rest_routes`` maps ``(method, "/api/v3/<path>")`` to ``(weight_fn, handler)``; other parts
    of the project may register more endpoints there before :meth:`build`.
    """

    def __init__(
        self,
        clock: ReplayClock,
        model: ReplayModel,
        *,
        weight_limit: int = 6000,
        ban_after_ignored_429: int = 5,
        ping_interval: float = 20.0,
        pong_timeout: float = 60.0,
        tick_ms: int = 100,
        max_catchup_ms: int = 60_000,
        full_exchange_info: bool = False,
        data_dir: str | None = None,
        accounts: dict[str, str] | None = None,
        starting_balances: dict | None = None,
    ):
        self.clock = clock
        self.model = model
        self.weight_limit = weight_limit
        self.ping_interval = ping_interval
        self.pong_timeout = pong_timeout
        self.tick_ms = tick_ms
        self.max_catchup_ms = max_catchup_ms
        self.weights = WeightTracker(clock.wall_ms)
        self.bans = BanTracker(clock.wall_ms, ban_after_ignored_429)
        self.fail_rules: list[FailRule] = []
        self.conns: set[_Conn] = set()
        info = refdata.exchange_info(data_dir)
        for rl in info.get("rateLimits", []):
            if rl.get("rateLimitType") == "REQUEST_WEIGHT":
                rl["limit"] = weight_limit
        self.rate_limits = info.get("rateLimits", [])
        self._exchange_filters = info.get("exchangeFilters", [])
        self._timezone = info.get("timezone", "UTC")
        all_entries = {s["symbol"]: refdata.current_entry(s) for s in info["symbols"]}
        self.entries = {s: all_entries[s] for s in model.symbols}
        self._info_entries = all_entries if full_exchange_info else self.entries
        w = lambda n: (lambda q: n)  # noqa: E731
        self.rest_routes: dict[tuple[str, str], tuple[Callable, Callable[..., Awaitable]]] = {
            ("GET", "/api/v3/ping"): (w(1), self.h_ping),
            ("GET", "/api/v3/time"): (w(1), self.h_time),
            ("GET", "/api/v3/exchangeInfo"): (w(20), self.h_exchange_info),
            ("GET", "/api/v3/depth"): (weight_depth, self.h_depth),
            ("GET", "/api/v3/trades"): (w(25), self.h_trades),
            ("GET", "/api/v3/historicalTrades"): (w(25), self.h_historical_trades),
            ("GET", "/api/v3/aggTrades"): (w(4), self.h_agg_trades),
            ("GET", "/api/v3/klines"): (w(2), self.h_klines),
            ("GET", "/api/v3/uiKlines"): (w(2), self.h_klines),
            ("GET", "/api/v3/avgPrice"): (w(2), self.h_avg_price),
            ("GET", "/api/v3/ticker/24hr"): (weight_ticker_24h, self.h_ticker_24h),
            ("GET", "/api/v3/ticker/price"): (weight_ticker_multi, self.h_ticker_price),
            ("GET", "/api/v3/ticker/bookTicker"): (weight_ticker_multi, self.h_book_ticker),
        }
        # Signed endpoints (orders, account, user data streams): see account.py.
        self.accounts = ReplayAccounts(self, accounts, starting_balances=starting_balances)
        self.accounts.register(self.rest_routes)
        self.wsapi = WsApi(self, self.accounts)

    # -- app ---------------------------------------------------------------------------------------
    def build(self) -> web.Application:
        """The aiohttp application with REST, WebSocket and control routes."""
        app = web.Application()
        app.router.add_route("*", "/api/{tail:.*}", self.dispatch_rest)
        app.router.add_get("/ws", self.h_ws)
        app.router.add_get("/ws/{streams:.*}", self.h_ws)
        app.router.add_get("/stream", self.h_ws)
        app.router.add_get("/stream/", self.h_ws)
        app.router.add_get("/ws-api/v3", self.wsapi.handler)
        app.router.add_get("/_replay/state", self.c_state)
        app.router.add_post("/_replay/clock", self.c_clock)
        app.router.add_post("/_replay/drop", self.c_drop)
        app.router.add_post("/_replay/fail", self.c_fail)
        app.router.add_delete("/_replay/fail", self.c_fail_clear)
        self.accounts.install(app)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def _on_shutdown(self, app) -> None:
        await self.drop_all(WSCloseCode.GOING_AWAY)

    # -- REST dispatch --------------------------------------------------------------------------------
    async def dispatch_rest(self, request: web.Request) -> web.Response:
        """Route ``/api/...``: injected failures, weight accounting, the handler, error mapping."""
        path = request.path
        ip = request.remote or "unknown"
        rule = next((r for r in self.fail_rules if r.count > 0 and r.matches(path)), None)
        if rule is not None:
            rule.count -= 1
            if rule.count <= 0:
                self.fail_rules.remove(rule)
            e = self._failure(rule)
            headers = {**e.headers, "X-MBX-USED-WEIGHT": str(self.weights.used(ip)),
                       "X-MBX-USED-WEIGHT-1M": str(self.weights.used(ip))}
            return json_response(e.body(), e.status, headers)
        route = self.rest_routes.get((request.method, path))
        if route is None:
            return web.Response(status=404)
        banned = self.bans.banned(ip)
        if banned is not None:
            return json_response(banned.body(), banned.status, banned.headers)
        weight_fn, handler = route
        used, retry_after = self.weights.add(ip, weight_fn(request.query))
        wh = {"X-MBX-USED-WEIGHT": str(used), "X-MBX-USED-WEIGHT-1M": str(used)}
        if used > self.weight_limit:
            e = self.bans.on_429(ip, retry_after) or too_much_weight(self.weight_limit, retry_after)
            return json_response(e.body(), e.status, {**wh, **e.headers})
        try:
            body = await handler(request)
        except BinanceError as e:
            return json_response(e.body(), e.status, {**wh, **e.headers})
        headers = wh
        if isinstance(body, Reply):
            body, headers = body.body, {**wh, **body.headers}
        if wire.is_microsecond(request.headers.get("X-MBX-TIME-UNIT")):
            body = wire.rest_micros(body, klines=path.endswith(("/klines", "/uiKlines")))
        return json_response(body, 200, headers)

    def _failure(self, rule: FailRule) -> BinanceError:
        ra = rule.retry_after
        if rule.status == 429:
            return too_much_weight(self.weight_limit, ra)
        if rule.status == 418:
            return ip_banned(self.clock.wall_ms() + ra * 1000, ra)
        e = err(DISCONNECTED, 500) if rule.status == 500 else err(SERVER_BUSY, 503)
        if ra:
            e.headers["Retry-After"] = str(ra)
        return e

    def _now(self) -> int:
        return self.clock.now_ms()

    # -- REST handlers (Binance "General endpoints" and "Market Data endpoints") -----------------------
    async def h_ping(self, request):
        """``GET /api/v3/ping`` -> ``{}``."""
        Params(request, ()).done()
        return {}

    async def h_time(self, request):
        """``GET /api/v3/time`` -> ``{"serverTime": <wall ms>}``."""
        Params(request, ()).done()
        return {"serverTime": self.clock.wall_ms()}

    async def h_exchange_info(self, request):
        """``GET /api/v3/exchangeInfo``: ``symbol`` | ``symbols`` | ``permissions``, ``symbolStatus``.

        Serves the recorded entries of the replayed symbols (all recorded symbols with
        ``full_exchange_info``), the recorded rateLimits with REQUEST_WEIGHT = ``weight_limit``.
        """
        p = Params(request, ("symbol", "symbols", "permissions", "showPermissionSets", "symbolStatus"))
        known = self._info_entries.__contains__
        if p.has("symbol") and p.has("symbols"):
            raise err(SYMBOL_AND_SYMBOLS)
        sym = p.symbol(known, required=False)
        syms = p.symbols(known)
        perms_raw = p.str("permissions")
        status = p.str("symbolStatus")
        p.str("showPermissionSets")
        p.done()
        if perms_raw is not None and (sym or syms is not None):
            raise err(BAD_COMBO)
        if status is not None and status not in ("TRADING", "HALT", "BREAK"):
            raise BinanceError(-1122, "Invalid symbolStatus.")
        if sym:
            entries = [self._info_entries[sym]]
        elif syms is not None:
            entries = [self._info_entries[s] for s in syms]
        else:
            entries = list(self._info_entries.values())
        if perms_raw is not None:
            if perms_raw.startswith("["):
                try:
                    wanted = set(json.loads(perms_raw))
                except ValueError:
                    raise invalid_param("permissions") from None
            else:
                wanted = {perms_raw}
            entries = [e for e in entries if any(wanted & set(ps) for ps in e.get("permissionSets", []))]
        if status is not None:
            entries = [e for e in entries if e.get("status") == status]
        return {
            "timezone": self._timezone,
            "serverTime": self.clock.wall_ms(),
            "rateLimits": self.rate_limits,
            "exchangeFilters": self._exchange_filters,
            "symbols": entries,
        }

    async def h_depth(self, request):
        """``GET /api/v3/depth``: symbol, limit (default 100, max 5000; 1000 levels exist)."""
        p = Params(request, ("symbol", "limit"))
        sym = p.symbol(self.model.has_symbol)
        limit = p.limit(100, 5000)
        p.done()
        return wire.depth_rest(self.model.depth(sym, self._now(), limit))

    async def h_trades(self, request):
        """``GET /api/v3/trades``: symbol, limit (default 500, max 1000); oldest first."""
        p = Params(request, ("symbol", "limit"))
        sym = p.symbol(self.model.has_symbol)
        limit = p.limit(500, 1000)
        p.done()
        return [wire.trade_rest(t) for t in self.model.recent_trades(sym, self._now(), limit)]

    async def h_historical_trades(self, request):
        """``GET /api/v3/historicalTrades``: symbol, limit, fromId (default: most recent)."""
        p = Params(request, ("symbol", "limit", "fromId"))
        sym = p.symbol(self.model.has_symbol)
        limit = p.limit(500, 1000)
        from_id = p.int("fromId")
        p.done()
        now = self._now()
        if from_id is None:
            trades = self.model.recent_trades(sym, now, limit)
        else:
            trades = self.model.trades_from_id(sym, now, from_id, limit)
        return [wire.trade_rest(t) for t in trades]

    async def h_agg_trades(self, request):
        """``GET /api/v3/aggTrades``: symbol, fromId | startTime/endTime, limit (500, max 1000)."""
        p = Params(request, ("symbol", "fromId", "startTime", "endTime", "limit"))
        sym = p.symbol(self.model.has_symbol)
        from_id = p.int("fromId")
        start = p.int("startTime")
        end = p.int("endTime")
        limit = p.limit(500, 1000)
        p.done()
        if from_id is not None and (start is not None or end is not None):
            raise err(BAD_COMBO)
        now = self._now()
        if from_id is not None:
            trades = self.model.trades_from_id(sym, now, from_id, limit)
        elif start is not None or end is not None:
            trades = self.model.trades_between(sym, now, start, end, limit)
        else:
            trades = self.model.recent_trades(sym, now, limit)
        return [wire.agg_trade_rest(t) for t in trades]

    async def h_klines(self, request):
        """``GET /api/v3/klines`` and ``uiKlines``: symbol, interval, startTime, endTime,
        timeZone, limit (default 500, max 1000). Intervals 1m..1M; ``1s`` and others -> -1120."""
        p = Params(request, ("symbol", "interval", "startTime", "endTime", "limit", "timeZone"))
        sym = p.symbol(self.model.has_symbol)
        interval = p.str("interval", required=True)
        if interval not in INTERVAL_MS:
            raise err(INVALID_INTERVAL)
        start = p.int("startTime")
        end = p.int("endTime")
        limit = p.limit(500, 1000)
        tz = p.tz_ms()
        p.done()
        ks = self.model.klines(sym, interval, self._now(), start, end, limit, tz)
        return [wire.kline_row(k) for k in ks]

    async def h_avg_price(self, request):
        """``GET /api/v3/avgPrice``: symbol -> ``{"mins": 5, "price", "closeTime"}``."""
        p = Params(request, ("symbol",))
        sym = p.symbol(self.model.has_symbol)
        p.done()
        return wire.avg_price_rest(self.model.avg_price(sym, self._now()))

    def _multi(self, p: Params) -> tuple[list[str], bool]:
        """symbol | symbols | neither -> (symbols, single)."""
        if p.has("symbol") and p.has("symbols"):
            raise err(SYMBOL_AND_SYMBOLS)
        sym = p.symbol(self.model.has_symbol, required=False)
        if sym:
            return [sym], True
        syms = p.symbols(self.model.has_symbol)
        return (list(self.model.symbols) if syms is None else syms), False

    async def h_ticker_24h(self, request):
        """``GET /api/v3/ticker/24hr``: symbol | symbols | all; type FULL (default) | MINI."""
        p = Params(request, ("symbol", "symbols", "type"))
        syms, single = self._multi(p)
        typ = p.str("type") or "FULL"
        if typ not in ("FULL", "MINI"):
            raise err(INVALID_TICKER_TYPE)
        p.done()
        now = self._now()
        out = [wire.ticker_24h_rest(self.model.ticker_24h(s, now), typ == "MINI") for s in syms]
        return out[0] if single else out

    async def h_ticker_price(self, request):
        """``GET /api/v3/ticker/price``: symbol | symbols | all -> last trade price."""
        p = Params(request, ("symbol", "symbols"))
        syms, single = self._multi(p)
        p.done()
        now = self._now()
        out = [wire.price_ticker_rest(s, self.model.last_trade(s, now).price_e8) for s in syms]
        return out[0] if single else out

    async def h_book_ticker(self, request):
        """``GET /api/v3/ticker/bookTicker``: symbol | symbols | all -> best bid/ask."""
        p = Params(request, ("symbol", "symbols"))
        syms, single = self._multi(p)
        p.done()
        now = self._now()
        out = [wire.book_ticker_rest(self.model.book_ticker(s, now)) for s in syms]
        return out[0] if single else out

    # -- WebSocket ------------------------------------------------------------------------------------
    async def h_ws(self, request: web.Request):
        """``/ws``, ``/ws/<streams>``, ``/stream?streams=...`` (Binance "WebSocket Streams")."""
        path = request.path
        if path.startswith("/stream"):
            combined = True
            raw = request.query.get("streams", "")
        else:
            combined = False
            raw = request.match_info.get("streams", "")
        names = [n for n in raw.split("/") if n]
        specs = [parse_stream(n) for n in names]
        if combined and any(s is None for s in specs):
            return json_response({"code": 2, "msg": "Invalid request: invalid stream"}, 400)
        # /ws/<anything>: Binance accepts the connection (ccxt.pro opens /ws/0, then SUBSCRIBEs);
        # path segments that are not stream names subscribe to nothing.
        specs = [s for s in specs if s is not None]
        ws = web.WebSocketResponse(autoping=False, max_msg_size=1 << 20, compress=False)
        if not ws.can_prepare(request).ok:
            return json_response({"code": 2, "msg": "Invalid request: expected a WebSocket upgrade"}, 400)
        await ws.prepare(request)
        now = self._now()
        conn = _Conn(ws=ws, combined=combined, last_t=now, peer=request.remote or "unknown",
                     micros=wire.is_microsecond(request.query.get("timeUnit")))
        for spec in specs:
            conn.streams.setdefault(spec.name, (spec, now))
        self.conns.add(conn)
        tasks = [asyncio.create_task(self._pump(conn)), asyncio.create_task(self._pinger(conn))]
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._on_message(conn, msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await self._on_message(conn, msg.data.decode("utf-8", "replace"))
                elif msg.type == WSMsgType.PING:
                    async with conn.lock:
                        await ws.pong(msg.data)
                elif msg.type == WSMsgType.PONG:
                    conn.last_pong = time.monotonic()
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.conns.discard(conn)
            if not ws.closed:
                await ws.close()
        return ws

    async def _pump(self, conn: _Conn) -> None:
        """Every tick, send the events whose replay time passed since the last send."""
        tick = self.tick_ms / 1000
        ws = conn.ws
        try:
            while not ws.closed:
                await asyncio.sleep(tick)
                t1 = self._now()
                if t1 <= conn.last_t:
                    continue
                t0 = max(conn.last_t, t1 - self.max_catchup_ms)
                batch = []
                for order, (name, (spec, since)) in enumerate(list(conn.streams.items())):
                    for et, payload in stream_events(self.model, spec, max(t0, since), t1):
                        batch.append((et, order, name, payload))
                conn.last_t = t1
                batch.sort(key=lambda x: (x[0], x[1]))
                for _et, _o, name, payload in batch:
                    if ws.closed:
                        return
                    if conn.micros:
                        payload = wire.event_micros(payload)
                    await conn.send(dumps({"stream": name, "data": payload} if conn.combined else payload))
        except (ConnectionError, asyncio.CancelledError):
            return
        except Exception:  # a bug must not leave a silently dead stream behind
            log.exception("replay stream pump failed; closing the connection")
            await ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"replay: internal error")

    async def _pinger(self, conn: _Conn) -> None:
        """Ping every ``ping_interval`` s; close after ``pong_timeout`` s without a pong."""
        ws = conn.ws
        try:
            while not ws.closed:
                await asyncio.sleep(self.ping_interval)
                if time.monotonic() - conn.last_pong > self.pong_timeout:
                    await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"Pong timeout")
                    return
                async with conn.lock:
                    await ws.ping()
        except (ConnectionError, RuntimeError, asyncio.CancelledError):  # closing under our feet
            return

    async def _reply(self, conn: _Conn, body: dict) -> None:
        await conn.send(dumps(body))

    async def _ws_error(self, conn: _Conn, code: int, msg: str, req_id=None) -> None:
        await self._reply(conn, {"error": {"code": code, "msg": msg}, "id": req_id})

    async def _on_message(self, conn: _Conn, text: str) -> None:
        """Binance "Live Subscribing/Unsubscribing to streams" requests."""
        try:
            req = json.loads(text)
        except ValueError as e:
            line = getattr(e, "lineno", 1)
            col = getattr(e, "colno", 1)
            await self._ws_error(conn, 3, f"Invalid JSON: expected value at line {line} column {col}")
            return
        if not isinstance(req, dict):
            await self._ws_error(conn, 3, "Invalid JSON: expected value at line 1 column 1")
            return
        req_id = req.get("id")
        valid_id = req_id is None and "id" in req or (
            isinstance(req_id, int) and not isinstance(req_id, bool) and -(2**63) <= req_id < 2**63
        ) or (isinstance(req_id, str) and _WS_ID_RE.match(req_id))
        if not valid_id:
            await self._ws_error(conn, 2, "Invalid request: request ID must be an unsigned integer")
            return
        method = req.get("method")
        if method is None:
            await self._ws_error(conn, 2, f"Invalid request: missing field `method` at line 1 column {len(text)}", req_id)
            return
        if method not in _WS_METHODS:
            expected = ", ".join(f"`{m}`" for m in _WS_METHODS)
            await self._ws_error(
                conn, 2, f"Invalid request: unknown variant `{method}`, expected one of {expected} at line 1 column 28", req_id
            )
            return
        params = req.get("params", [])
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not isinstance(params, list):
                await self._ws_error(conn, 2, "Invalid request: invalid stream", req_id)
                return
            specs = [parse_stream(n) for n in params]
            if any(s is None for s in specs):
                await self._ws_error(conn, 2, "Invalid request: invalid stream", req_id)
                return
            now = self._now()
            for spec in specs:
                if method == "SUBSCRIBE":
                    conn.streams.setdefault(spec.name, (spec, now))
                else:
                    conn.streams.pop(spec.name, None)
            await self._reply(conn, {"result": None, "id": req_id})
        elif method == "LIST_SUBSCRIPTIONS":
            await self._reply(conn, {"result": list(conn.streams), "id": req_id})
        elif method == "SET_PROPERTY":
            if not isinstance(params, list) or len(params) != 2 or not isinstance(params[0], str):
                await self._ws_error(conn, 2, "Invalid request: property name must be a string", req_id)
            elif params[0] != "combined":
                await self._ws_error(conn, 0, "Unknown property", req_id)
            elif not isinstance(params[1], bool):
                await self._ws_error(conn, 1, "Invalid value type: expected Boolean", req_id)
            else:
                conn.combined = params[1]
                await self._reply(conn, {"result": None, "id": req_id})
        else:  # GET_PROPERTY
            if not isinstance(params, list) or len(params) != 1 or not isinstance(params[0], str):
                await self._ws_error(conn, 2, "Invalid request: property name must be a string", req_id)
            elif params[0] != "combined":
                await self._ws_error(conn, 0, "Unknown property", req_id)
            else:
                await self._reply(conn, {"result": conn.combined, "id": req_id})

    async def drop_all(self, code: int = WSCloseCode.GOING_AWAY) -> int:
        """Close every WebSocket connection; return how many were open."""
        conns = list(self.conns)
        for c in conns:
            try:
                await c.ws.close(code=code, message=b"replay: dropped")
            except Exception:  # noqa: BLE001 - already broken connections are fine to skip
                pass
        return len(conns) + await self.wsapi.close_all(code, b"replay: dropped")

    # -- control API --------------------------------------------------------------------------------
    def state(self) -> dict:
        """Clock, symbols (T0, offset, lap, last price), connections and weight settings."""
        st = self.clock.state()
        now = st["replay_time_ms"]
        symbols = {}
        for s in self.model.symbols:
            tape = self.model.tape(s)
            t0 = self.model.tape_start_ms(s)
            minute = max(0, (now - t0) // 60_000)
            symbols[s] = {
                "tape_start_ms": t0,
                "offset_ms": self.model.offset_ms(s),
                "tape_minutes": tape.length,
                "recorded_from_ms": tape.first_open_ms,
                "lap": minute // tape.length,
                "tape_index": minute % tape.length,
                "last_price": wire.f8(self.model.last_trade(s, now).price_e8) if now >= t0 else None,
            }
        st.update(
            {
                "history_minutes": self.model.history_minutes,
                "symbols": symbols,
                "connections": len(self.conns),
                "ws_api_sessions": len(self.wsapi.sessions),
                "streams": sorted({n for c in self.conns for n in c.streams}),
                "weight_limit": self.weight_limit,
                "pending_failures": [r.__dict__ for r in self.fail_rules],
            }
        )
        return st

    async def c_state(self, request):
        """``GET /_replay/state``."""
        return json_response(self.state())

    async def c_clock(self, request):
        """``POST /_replay/clock`` ``{"speed"?: float > 0, "paused"?: bool, "advance_ms"?: int >= 0}``."""
        body = await read_json_body(request)
        try:
            if "speed" in body:
                self.clock.set_speed(float(body["speed"]))
            if "paused" in body:
                if not isinstance(body["paused"], bool):
                    raise ValueError("paused must be a boolean")
                self.clock.pause() if body["paused"] else self.clock.resume()
            if "advance_ms" in body:
                self.clock.advance(int(body["advance_ms"]))
        except (TypeError, ValueError) as e:
            return json_response({"error": str(e)}, 400)
        return json_response(self.state())

    async def c_drop(self, request):
        """``POST /_replay/drop``: close every WebSocket (clients see a disconnect)."""
        n = await self.drop_all()
        return json_response({"closed": n})

    async def c_fail(self, request):
        """``POST /_replay/fail`` ``{"status", "count", "retry_after"?, "paths"?}``."""
        body = await read_json_body(request)
        try:
            status = int(body.get("status", 429))
            count = int(body.get("count", 1))
            retry_after = int(body.get("retry_after", 1 if status in (418, 429) else 0))
            paths = body.get("paths") or ["/api/"]
            if isinstance(paths, str):
                paths = [paths]
            if status not in FAILABLE_STATUSES or count < 0 or retry_after < 0:
                raise ValueError(f"status must be one of {FAILABLE_STATUSES}, count and retry_after >= 0")
            if not all(isinstance(p, str) for p in paths):
                raise ValueError("paths must be a list of path prefixes")
        except (TypeError, ValueError) as e:
            return json_response({"error": str(e)}, 400)
        if count:
            self.fail_rules.append(FailRule(status, count, retry_after, tuple(paths)))
        return json_response({"armed": [r.__dict__ for r in self.fail_rules]})

    async def c_fail_clear(self, request):
        """``DELETE /_replay/fail``: forget pending failures."""
        self.fail_rules.clear()
        return json_response({"armed": []})


# ------------------------------------------------------------------------------------------------
# embedding
# ------------------------------------------------------------------------------------------------
class ReplayServer:
    """The replay exchange, embeddable in tests and apps.

    Args:
        host: interface to bind (default ``127.0.0.1``).
        port: TCP port; 0 picks a free one (read it back from :attr:`port`).
        speed: replay ms per wall ms (1 = real time, 60 = a replay minute per second).
        start_wall_ms: replay time at start (ms since epoch UTC); default = wall now.
        paused: start with the replay clock frozen.
        history_minutes: closed minutes before the start (default 600; see ``model.py``).
        symbols: replayed symbols (default: every symbol with a tape).
        weight_limit: REQUEST_WEIGHT per IP per minute before 429 (default 6000).
        ban_after_ignored_429: requests over the limit an IP may send after a 429 before its
            ``Retry-After`` before it is banned (418, 2 minutes doubling); 0 never bans (default 5).
        ping_interval / pong_timeout: WebSocket keepalive in seconds (20 / 60).
        tick_ms: WebSocket send period in wall ms (100).
        max_catchup_ms: most replay ms of events sent in one tick (60000).
        full_exchange_info: serve all 1,695 recorded symbols in exchangeInfo (default: only the
            replayed ones; market endpoints only ever know replayed symbols).
        data_dir: override of the bundled data directory.
        accounts: ``{api_key: secret}`` for the signed endpoints, besides the demo pair
            (``account.DEMO_API_KEY`` / ``DEMO_API_SECRET``); see ``account.py``.
        starting_balances: ``{asset: amount}`` each key starts with (default 10,000 USDT).

    ``start()`` runs the server in a daemon thread with its own event loop and returns once it is
    listening; ``stop()`` closes connections and joins the thread. Also a context manager.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        speed: float = 1.0,
        start_wall_ms: int | None = None,
        paused: bool = False,
        history_minutes: int = 600,
        symbols: Iterable[str] | None = None,
        weight_limit: int = 6000,
        ban_after_ignored_429: int = 5,
        ping_interval: float = 20.0,
        pong_timeout: float = 60.0,
        tick_ms: int = 100,
        max_catchup_ms: int = 60_000,
        full_exchange_info: bool = False,
        data_dir: str | None = None,
        accounts: dict[str, str] | None = None,
        starting_balances: dict | None = None,
    ):
        self.host = host
        self._requested_port = port
        self.port: int | None = None
        self.clock = ReplayClock(speed=speed, start_wall_ms=start_wall_ms, paused=paused)
        self.model = ReplayModel(self.clock.start_wall_ms, history_minutes, symbols, data_dir)
        self.app = ReplayApp(
            self.clock,
            self.model,
            weight_limit=weight_limit,
            ban_after_ignored_429=ban_after_ignored_429,
            ping_interval=ping_interval,
            pong_timeout=pong_timeout,
            tick_ms=tick_ms,
            max_catchup_ms=max_catchup_ms,
            full_exchange_info=full_exchange_info,
            data_dir=data_dir,
            accounts=accounts,
            starting_balances=starting_balances,
        )
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_evt: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # -- URLs ------------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        """``http://<host>:<port>``."""
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        """python-binance ``API_URL``: ``http://<host>:<port>/api``."""
        return f"{self.base_url}/api"

    @property
    def ws_api_url(self) -> str:
        """Binance's WebSocket API base (python-binance ``WebsocketAPI(url=...)``): ``ws://<host>:<port>/ws-api/v3``."""
        return f"ws://{self.host}:{self.port}/ws-api/v3"

    @property
    def stream_url(self) -> str:
        """python-binance ``BinanceSocketManager.STREAM_URL``: ``ws://<host>:<port>/``."""
        return f"ws://{self.host}:{self.port}/"

    # -- async lifecycle --------------------------------------------------------------------------
    async def start_async(self) -> "ReplayServer":
        """Start listening on the running event loop (for apps that own their loop)."""
        self._runner = web.AppRunner(self.app.build(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._requested_port, reuse_address=True)
        await site.start()
        addresses = self._runner.addresses  # (host, port[, ...]) of each listening socket
        self.port = addresses[0][1] if addresses else self._requested_port
        return self

    async def stop_async(self) -> None:
        """Close every connection and stop listening."""
        if self._runner is not None:
            await self.app.drop_all()
            await self._runner.cleanup()
            self._runner = None

    # -- threaded lifecycle -----------------------------------------------------------------------------
    def start(self, timeout: float = 15.0) -> "ReplayServer":
        """Run in a background thread; return once listening (raises what startup raised)."""
        if self._thread is not None:
            return self
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(target=self._run, name="replay-exchange", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("replay exchange did not start in time")
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            self._stop_evt = asyncio.Event()
            loop.run_until_complete(self.start_async())
        except BaseException as e:  # noqa: BLE001 - handed to the starting thread
            self._error = e
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_until_complete(self._stop_evt.wait())
            loop.run_until_complete(self.stop_async())
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the background server and join its thread (idempotent)."""
        if self._thread is None:
            return
        if self._loop is not None and self._stop_evt is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop_evt.set)
        self._thread.join(timeout)
        self._thread = None

    def run_coro(self, coro, timeout: float = 15.0):
        """Run a coroutine on the server's loop from another thread and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    @property
    def accounts(self):
        """The signed endpoints' state (:class:`~.account.ReplayAccounts`)."""
        return self.app.accounts

    def add_key(self, api_key: str, secret: str, balances: dict | None = None):
        """Create an API key with ``balances`` on the running server (thread-safe)."""
        async def _add():
            return self.app.accounts.add_key(api_key, secret, balances)

        if self._loop is not None and self._loop.is_running():
            return self.run_coro(_add())
        return self.app.accounts.add_key(api_key, secret, balances)

    def drop_connections(self) -> int:
        """Close every WebSocket (same as ``POST /_replay/drop``); thread-safe."""
        return self.run_coro(self.app.drop_all())

    def state(self) -> dict:
        """Same as ``GET /_replay/state`` (computed on the server's loop when it runs)."""
        if self._loop is not None and self._loop.is_running():
            async def _state():
                return self.app.state()

            return self.run_coro(_state())
        return self.app.state()

    def __enter__(self) -> "ReplayServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<ReplayServer {self.base_url if self.port else '(not started)'} speed={self.clock.speed}>"
