"""Reads of market data shared by MCP tools, REST views, pages and the paper venue."""
from __future__ import annotations

import difflib
import re
import time
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from redis.exceptions import RedisError

from core.errors import InvalidInput, MarketDataMissing, MarketDataUnavailable, UnknownSymbol
from core.workers import run_sync
from marketdata import cache, indicators as ind
from marketdata.binance import VenueClient
from marketdata.models import IndicatorSnapshot, Kline, StreamSubscription, Symbol, TradeFee

KLINE_INTERVALS = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M")


SYMBOL_CACHE_TTL_S = 30.0
_symbol_cache: dict[str, tuple[float, Symbol]] = {}


def symbol_cache_clear() -> None:
    """Forget this process's cached ``Symbol`` rows (``exchange_info_sync`` calls it)."""
    _symbol_cache.clear()


def symbol_get(symbol: str) -> Symbol:
    """Return the ``Symbol`` row for a symbol name (case-insensitive).

    Rows are cached in-process for ``SYMBOL_CACHE_TTL_S`` (30 s): every order and market read
    validates its symbol, and exchangeInfo changes hourly at most. Treat the row as read-only.
    Raises ``UnknownSymbol`` (code -1121) naming the closest valid symbols.
    """
    name = _symbol_name(symbol)
    hit = _symbol_cached(name)
    if hit is not None:
        return hit
    now = time.monotonic()
    row = Symbol.objects.filter(symbol=name).first()
    if row is not None:
        _symbol_cache[name] = (now, row)
    if row is None:
        names = list(Symbol.objects.values_list("symbol", flat=True))
        close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
        hint = f" Closest valid symbols: {', '.join(close)}." if close else ""
        raise UnknownSymbol(f"Invalid symbol {name!r}.{hint}", details={"closest": close})
    return row


def _symbol_name(symbol) -> str:
    """The upper-case name of a well-formed symbol argument, else ``UnknownSymbol``."""
    if not isinstance(symbol, str) or not symbol.strip() or len(symbol) > 32 or not symbol.strip().isalnum():
        raise UnknownSymbol(f"Invalid symbol {symbol!r}: expected letters and digits such as 'BTCUSDT'.")
    return symbol.strip().upper()


def _symbol_cached(name: str) -> Symbol | None:
    """The in-process cached ``Symbol`` row of ``name`` while it is fresh, else None."""
    hit = _symbol_cache.get(name)
    if hit is not None and time.monotonic() - hit[0] < SYMBOL_CACHE_TTL_S:
        return hit[1]
    return None


async def symbol_get_async(symbol: str) -> Symbol:
    """``symbol_get`` for async callers (the MCP endpoint's event loop): answered from the
    in-process cache without leaving the loop; on a miss the DB lookup runs in a worker thread
    (``core.workers.run_sync``: the caller's thread under ``async_to_sync``, else the MCP tool
    pool, whose threads manage their DB connections). Same errors as ``symbol_get``."""
    name = _symbol_name(symbol)
    hit = _symbol_cached(name)
    if hit is not None:
        return hit
    return await run_sync(symbol_get, name)


async def symbols_check_async(symbols, *, max_count: int = 100) -> list[Symbol]:
    """``symbols_check`` for async callers (see ``symbol_get_async``); same arguments and errors."""
    names = _symbols_arg(symbols, max_count)
    rows = [await symbol_get_async(s) for s in names]
    return list({r.symbol: r for r in rows}.values())


def symbol_names_matching(prefix: str, *, only=None, limit: int = 100) -> tuple[list[str], int]:
    """The stored symbols (exchangeInfo) whose names start with ``prefix`` (case-insensitive),
    alphabetical, the first ``limit`` of them, and how many match in all. ``only``: a collection
    of names to stay within (a token's symbol restriction); empty or None = every symbol."""
    qs = Symbol.objects.filter(symbol__startswith=str(prefix or "").strip().upper())
    if only:
        qs = qs.filter(symbol__in=list(only))
    return list(qs.order_by("symbol").values_list("symbol", flat=True)[:limit]), qs.count()


def interval_check(interval: str) -> str:
    """Return ``interval`` if Binance supports it, else raise ``InvalidInput`` listing valid ones."""
    if interval not in KLINE_INTERVALS:
        raise InvalidInput(f"Invalid interval {interval!r}. Valid intervals: {', '.join(KLINE_INTERVALS)}.", code=-1120)
    return interval


@dataclass(frozen=True)
class Quote:
    """Best bid/ask of a symbol (prices in quote asset, quantities in base asset).

    ``received_at_ms``: wall time (ms UTC) the ingester received it; ``update_id``: bookTicker ``u``.
    """

    symbol: str
    bid_price: Decimal
    bid_qty: Decimal
    ask_price: Decimal
    ask_qty: Decimal
    update_id: int
    received_at_ms: int
    last_price: Decimal | None = None

    @property
    def age_s(self) -> float:
        return max(0.0, time.time() - self.received_at_ms / 1000)

    def as_dict(self) -> dict:
        """Binance bookTicker names, numbers as strings, plus ``lastPrice``, ``spread`` and ``ageMs``."""
        return {
            "symbol": self.symbol,
            "bidPrice": format(self.bid_price, "f"),
            "bidQty": format(self.bid_qty, "f"),
            "askPrice": format(self.ask_price, "f"),
            "askQty": format(self.ask_qty, "f"),
            "lastPrice": None if self.last_price is None else format(self.last_price, "f"),
            "spread": format(self.ask_price - self.bid_price, "f"),
            "updateId": self.update_id,
            "receivedAt": self.received_at_ms,
            "ageMs": int(self.age_s * 1000),
        }


def quote_get(symbol: str, *, max_age_s: float | None = None) -> Quote:
    """The latest cached quote of ``symbol``.

    Args:
        symbol: upper-case symbol name (validate with ``symbol_get`` first).
        max_age_s: refuse a quote older than this (seconds); None accepts any age.

    Raises ``MarketDataUnavailable`` when the ingester has not cached one yet, it is too old, or
    the cache (Redis) cannot be reached.
    """
    try:
        raw_book, raw_kline = cache.mget(*quote_keys(symbol))  # read ahead by /mcp
    except RedisError as exc:
        raise _cache_unreachable(symbol, exc) from None
    return _quote_from_cache(symbol, raw_book, raw_kline, max_age_s)


def _cache_unreachable(symbol: str, exc: Exception) -> MarketDataUnavailable:
    return MarketDataUnavailable(f"No live quote for {symbol}: the market-data cache (Redis) is unreachable "
                                 f"({type(exc).__name__}); nothing was changed, retry in a few seconds.")


def quote_keys(symbol: str) -> tuple[str, str]:
    """The cache keys a quote of ``symbol`` is read from: (bookTicker, 1m kline)."""
    return cache.book_key(symbol), cache.kline_key(symbol, "1m")


async def quote_get_async(symbol: str, *, max_age_s: float | None = None) -> Quote:
    """``quote_get`` for async callers: one MGET on the event loop's shared asyncio Redis client
    (``cache.async_redis_shared``), no thread, or none when the MCP endpoint read the keys ahead
    with the token check (``cache.read_ahead``). Same arguments, result and errors as ``quote_get``."""
    try:
        raw_book, raw_kline = await cache.mget_async(*quote_keys(symbol))
    except RedisError as exc:
        raise _cache_unreachable(symbol, exc) from None
    return _quote_from_cache(symbol, raw_book, raw_kline, max_age_s)


def _quote_from_cache(symbol: str, raw_book: bytes | None, raw_kline: bytes | None, max_age_s: float | None) -> Quote:
    """A ``Quote`` from the cached bookTicker and 1m kline JSON (``md:book``/``md:kline``); raises
    ``MarketDataUnavailable`` when there is no book or it is older than ``max_age_s``."""
    book = cache.loads(raw_book)
    if book is None:
        raise MarketDataUnavailable(f"No live quote for {symbol} yet: is the market-data ingester running?")
    kline = cache.loads(raw_kline)
    quote = Quote(
        symbol=symbol,
        bid_price=Decimal(book["bidPrice"]),
        bid_qty=Decimal(book["bidQty"]),
        ask_price=Decimal(book["askPrice"]),
        ask_qty=Decimal(book["askQty"]),
        update_id=int(book["updateId"]),
        received_at_ms=int(book["receivedAt"]),
        last_price=Decimal(kline["c"]) if kline else None,
    )
    if max_age_s is not None and quote.age_s > max_age_s:
        raise MarketDataUnavailable(
            f"The latest quote for {symbol} is {quote.age_s:.0f} s old (limit {max_age_s:.0f} s): market data is stale."
        )
    return quote


def kline_forming(symbol: str, interval: str = "1m") -> dict | None:
    """The forming candle from the stream cache (Binance kline event ``k`` object), or None."""
    return cache.loads(cache.get_redis().get(cache.kline_key(symbol, interval)))


def kline_as_dict(k: Kline) -> dict:
    """A stored kline with Binance's names (numbers as strings, times in ms UTC)."""
    return {
        "openTime": k.open_time,
        "open": format(k.open, "f"),
        "high": format(k.high, "f"),
        "low": format(k.low, "f"),
        "close": format(k.close, "f"),
        "volume": format(k.volume, "f"),
        "closeTime": k.close_time,
        "quoteVolume": format(k.quote_volume, "f"),
        "trades": k.trades,
        "closed": True,
    }


def klines_list(*, symbol: str, interval: str, limit: int) -> list[dict]:
    """The latest ``limit`` stored closed klines, oldest first, plus the forming one from the
    stream cache when it is newer (``closed: false``)."""
    rows = list(Kline.objects.filter(symbol=symbol, interval=interval).order_by("-open_time")[:limit])
    out = [kline_as_dict(k) for k in reversed(rows)]
    forming = kline_forming(symbol, interval)
    if forming and (not out or forming["t"] > out[-1]["openTime"]):
        out.append({
            "openTime": forming["t"], "open": forming["o"], "high": forming["h"], "low": forming["l"],
            "close": forming["c"], "volume": forming["v"], "closeTime": forming["T"],
            "quoteVolume": forming["q"], "trades": forming["n"], "closed": bool(forming["x"]),
        })
        out = out[-limit:]
    return out


def watched_symbols() -> list[str]:
    """Symbols the ingester streams (``settings.WATCHED_SYMBOLS``)."""
    return list(settings.WATCHED_SYMBOLS)


def klines_fetch(*, symbol: str, interval: str, limit: int, start_time: int | None = None, end_time: int | None = None) -> list[dict]:
    """Klines read from the venue (``GET /api/v3/klines`` through ``VenueClient``: rate limits
    honoured); same shape as ``klines_list``; ``closed`` is false for the newest row (the venue
    cannot tell us whether it is still forming; the next page repeats it if it was)."""
    params = {"symbol": symbol, "interval": interval, "limit": limit}
    if start_time is not None:
        params["startTime"] = start_time
    if end_time is not None:
        params["endTime"] = end_time
    rows = VenueClient(max_wait_s=2.0).klines(**params)
    return [
        {
            "openTime": r[0], "open": r[1], "high": r[2], "low": r[3], "close": r[4], "volume": r[5],
            "closeTime": r[6], "quoteVolume": r[7], "trades": r[8], "closed": i < len(rows) - 1,
        }
        for i, r in enumerate(rows)
    ]


# ------------------------------------------------------------------------------------------------
# Markets, tickers, order books, fees
# ------------------------------------------------------------------------------------------------
def dstr(d) -> str | None:
    """A Decimal (or decimal string) as a plain string (``format(d, "f")``); None stays None."""
    return None if d is None else format(Decimal(d), "f")


def symbols_check(symbols, *, max_count: int = 100) -> list[Symbol]:
    """Validate a symbol or list of symbols (``"BTCUSDT"`` or ``["BTCUSDT", "ETHUSDT"]``); returns
    the ``Symbol`` rows in the given order without duplicates. Raises ``UnknownSymbol`` naming the
    closest valid symbols, or ``InvalidInput`` for an empty/oversized list."""
    rows = [symbol_get(s) for s in _symbols_arg(symbols, max_count)]
    return list({r.symbol: r for r in rows}.values())


def _symbols_arg(symbols, max_count: int) -> list:
    """The list form of a ``symbols`` argument (a list, or a comma-separated string), checked for
    emptiness and size (``InvalidInput``)."""
    if isinstance(symbols, str):
        symbols = [s for s in symbols.replace(" ", "").split(",") if s]
    if not isinstance(symbols, (list, tuple)) or not symbols:
        raise InvalidInput("symbols must be a non-empty list of symbols such as [\"BTCUSDT\", \"ETHUSDT\"].")
    if len(symbols) > max_count:
        raise InvalidInput(f"At most {max_count} symbols per call, got {len(symbols)}; split the list.")
    return list(symbols)


def ticker_24h_cached(names: list[str]) -> dict[str, dict]:
    """The cached 24h tickers (``md:ticker24h:<SYMBOL>``, refreshed each minute by beat) of
    ``names``; symbols without one are left out."""
    if not names:
        return {}
    return _tickers_from(names, cache.get_redis().mget([cache.ticker_24h_key(n) for n in names]))


def _tickers_from(names: list[str], raws: list[bytes | None]) -> dict[str, dict]:
    """``{name: ticker}`` from the cached JSON of ``names`` (in order); missing ones left out."""
    return {n: cache.loads(raw) for n, raw in zip(names, raws) if raw is not None}


def ticker_24h_rows(names: list[str], *, max_wait_s: float = 2.0) -> dict[str, dict]:
    """24h tickers (Binance ``GET /api/v3/ticker/24hr`` entries, numbers as strings) of ``names``:
    from the beat-refreshed cache, else fetched through ``VenueClient`` (cached a few seconds).
    Raises ``VenueRateLimited`` while the venue's rate limit is in force."""
    out = ticker_24h_cached(names)
    missing = [n for n in names if n not in out]
    if missing:
        out.update(_ticker_24h_fetch(missing, max_wait_s))
    return out


async def ticker_24h_rows_async(names: list[str], *, max_wait_s: float = 2.0) -> dict[str, dict]:
    """``ticker_24h_rows`` for async callers: the cache read on the event loop (asyncio Redis), a
    venue fetch for the missing ones in a worker thread. Same result and errors."""
    out = {}
    if names:
        out = _tickers_from(names, await cache.async_redis_shared().mget([cache.ticker_24h_key(n) for n in names]))
    missing = [n for n in names if n not in out]
    if missing:
        out.update(await run_sync(_ticker_24h_fetch, missing, max_wait_s))
    return out


def _ticker_24h_fetch(missing: list[str], max_wait_s: float) -> dict[str, dict]:
    """The venue's 24h tickers of ``missing`` (``VenueClient``: rate limits honoured, cached briefly)."""
    venue = VenueClient(max_wait_s=max_wait_s)
    if len(missing) > 20:
        rows = venue.ticker_24h()
    else:
        rows = [venue.ticker_24h(n) for n in missing]
    return {r["symbol"]: r for r in rows if r["symbol"] in missing}


TICKER_FIELDS = (
    "symbol", "priceChange", "priceChangePercent", "weightedAvgPrice", "prevClosePrice", "lastPrice", "lastQty",
    "bidPrice", "bidQty", "askPrice", "askQty", "openPrice", "highPrice", "lowPrice", "volume", "quoteVolume",
    "openTime", "closeTime", "firstId", "lastId", "count",
)


def ticker_24h_list(names: list[str] | None = None) -> dict:
    """Binance's rolling 24 h statistics (``GET /api/v3/ticker/24hr``) of ``names`` (checked
    symbol names), or of every stored symbol (first 500) when None: ``{"tickers": [{TICKER_FIELDS}]}``,
    in the order asked, leaving out symbols the venue has no ticker for. Prices quote asset,
    volume base asset, quoteVolume quote asset, openTime/closeTime ms UTC."""
    if names is None:
        names = [m["symbol"] for m in markets_list(page_size=500)["markets"]]
    rows = ticker_24h_rows(names)
    return {"tickers": [{k: rows[n].get(k) for k in TICKER_FIELDS} for n in names if n in rows]}


def markets_list(*, quote_asset: str | None = None, status: str | None = None, page: int = 1, page_size: int = 100) -> dict:
    """Stored symbols (exchangeInfo), filtered by ``quote_asset`` (e.g. "USDT") and ``status``
    (e.g. "TRADING"), ``page_size`` per page (1..500), with lastPrice/volume/quoteVolume of the
    cached 24h ticker when known (else null). Returns ``{"markets", "page", "pageSize", "total",
    "nextPage", "hint"}``."""
    for name, value in (("page", page), ("page_size", page_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidInput(f"{name} must be a positive integer, got {value!r}.")
    if page_size > 500:
        raise InvalidInput(f"page_size must be at most 500, got {page_size}.")
    if page > 1_000_000:  # the offset must fit the database's integer (found by tests/test_fuzz_mcp.py)
        raise InvalidInput(f"page must be at most 1000000, got {page}.")
    qs = Symbol.objects.all()
    if quote_asset:
        qs = qs.filter(quote_asset=str(quote_asset).strip().upper())
    if status:
        qs = qs.filter(status=str(status).strip().upper())
    total = qs.count()
    rows = list(qs.order_by("symbol")[(page - 1) * page_size: page * page_size])
    tickers = ticker_24h_cached([r.symbol for r in rows])
    markets = []
    for r in rows:
        t = tickers.get(r.symbol) or {}
        markets.append({
            "symbol": r.symbol, "status": r.status, "baseAsset": r.base_asset, "quoteAsset": r.quote_asset,
            "baseAssetPrecision": r.base_asset_precision, "quoteAssetPrecision": r.quote_asset_precision,
            "tickSize": dstr(r.tick_size), "stepSize": dstr(r.step_size), "minQty": dstr(r.min_qty),
            "maxQty": dstr(r.max_qty), "minNotional": dstr(r.min_notional), "orderTypes": r.order_types,
            "permissions": r.permissions, "filters": r.filters,
            "lastPrice": t.get("lastPrice"), "volume": t.get("volume"), "quoteVolume": t.get("quoteVolume"),
        })
    next_page = page + 1 if page * page_size < total else None
    hint = (f"More markets: call list_markets again with page={next_page} (same filters)." if next_page
            else "This is the last page.")
    return {"markets": markets, "page": page, "pageSize": page_size, "total": total, "nextPage": next_page, "hint": hint}


def market_data(names: list[str]) -> list[dict]:
    """Per symbol: lastPrice, bidPrice/askPrice/bidQty/askQty (live quote from the ingester when
    cached, else the 24h ticker's), spread and spreadBps, and the 24h volume, quoteVolume,
    highPrice, lowPrice, priceChange, priceChangePercent (quote asset / base asset / percent)."""
    tickers = ticker_24h_rows(names)
    keys = _quotes_keys(names)
    try:
        raws = cache.mget(*keys) if keys else []  # read ahead by /mcp
    except RedisError:
        raws = [None] * len(keys)  # no live quotes: the 24h tickers' prices
    return _market_rows(names, tickers, raws)


async def market_data_async(names: list[str]) -> list[dict]:
    """``market_data`` for async callers: the 24h tickers (``ticker_24h_rows_async``) and every
    symbol's quote in one MGET on the event loop. Same result and errors."""
    tickers = await ticker_24h_rows_async(names)
    keys = _quotes_keys(names)
    raws = await cache.async_redis_shared().mget(keys) if keys else []
    return _market_rows(names, tickers, raws)


def _quotes_keys(names: list[str]) -> list[str]:
    """The quote keys of ``names`` in order, two per symbol (``quote_keys``)."""
    return [k for n in names for k in quote_keys(n)]


def _market_rows(names: list[str], tickers: dict[str, dict], raws: list[bytes | None]) -> list[dict]:
    """``market_data`` rows of ``names`` from their 24h tickers and the cached quote JSON read with
    ``_quotes_keys`` (two values per symbol); a symbol without a usable quote gets the ticker's prices."""
    out = []
    for i, name in enumerate(names):
        try:
            q = _quote_from_cache(name, raws[2 * i], raws[2 * i + 1], None)
        except MarketDataUnavailable:
            q = None
        out.append(_market_row(name, tickers.get(name) or {}, q))
    return out


def _market_row(name: str, t: dict, q: Quote | None) -> dict:
    """One ``market_data`` row from the symbol's 24h ticker ``t`` ({} if none) and live quote ``q``
    (None if none). Raises ``MarketDataUnavailable`` when there is neither."""
    if q is not None:
        bid, ask, bid_qty, ask_qty = q.bid_price, q.ask_price, q.bid_qty, q.ask_qty
        last = q.last_price if q.last_price is not None else (Decimal(t["lastPrice"]) if t.get("lastPrice") else None)
        source = "stream"
    else:
        if not t:
            raise MarketDataUnavailable(f"No market data for {name} yet (no live quote, no 24h ticker).")
        bid, ask = Decimal(t["bidPrice"]), Decimal(t["askPrice"])
        bid_qty, ask_qty = Decimal(t["bidQty"]), Decimal(t["askQty"])
        last = Decimal(t["lastPrice"])
        source = "ticker24h"
    mid = (bid + ask) / 2
    return {
        "symbol": name, "lastPrice": dstr(last), "bidPrice": dstr(bid), "bidQty": dstr(bid_qty),
        "askPrice": dstr(ask), "askQty": dstr(ask_qty), "spread": dstr(ask - bid),
        "spreadBps": dstr(((ask - bid) / mid * 10000).quantize(Decimal("0.01"))) if mid else None,
        "volume": t.get("volume"), "quoteVolume": t.get("quoteVolume"), "highPrice": t.get("highPrice"),
        "lowPrice": t.get("lowPrice"), "priceChange": t.get("priceChange"),
        "priceChangePercent": t.get("priceChangePercent"), "quoteSource": source,
    }


def order_book(*, symbol: str, limit: int = 100) -> dict:
    """The venue's order book (``GET /api/v3/depth``, cached ~1 s): ``{"symbol", "lastUpdateId",
    "bids": [[price, qty], ...] best first, "asks": [...]}``; prices quote asset, qty base asset."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 5000:
        raise InvalidInput(f"limit must be an integer from 1 to 5000, got {limit!r}.")
    book = VenueClient(max_wait_s=2.0).depth(symbol, limit)
    return {"symbol": symbol, "lastUpdateId": book["lastUpdateId"], "bids": book["bids"][:limit], "asks": book["asks"][:limit]}


def fees_list(*, names: list[str] | None = None, user=None) -> dict:
    """Maker/taker commission rates (fractions: "0.001" = 0.1 % of the notional).

    Per symbol: the venue's synced rate (``TradeFee``) else ``settings.BINANCE_DEFAULT_FEE_RATES``;
    plus, for ``user``, each of their accounts' own rates (the rates their fills are charged).
    ``names`` None = every stored symbol (first 500).
    """
    default = settings.BINANCE_DEFAULT_FEE_RATES
    if names is None:
        names = list(Symbol.objects.order_by("symbol").values_list("symbol", flat=True)[:500])
    synced = {f.symbol: f for f in TradeFee.objects.filter(symbol__in=names)}
    fees = []
    for n in names:
        f = synced.get(n)
        fees.append({
            "symbol": n,
            "makerCommission": dstr(f.maker_rate) if f else default["maker"],
            "takerCommission": dstr(f.taker_rate) if f else default["taker"],
            "source": "venue" if f else "default",
        })
    accounts = []
    if user is not None and getattr(user, "is_authenticated", False):
        accounts = [
            {"accountId": a.id, "name": a.name, "venue": a.venue, "makerCommission": dstr(a.maker_fee_rate),
             "takerCommission": dstr(a.taker_fee_rate)}
            for a in user.trading_accounts.order_by("id")  # trading.Account rows (related_name)
        ]
    return {"fees": fees, "accounts": accounts,
            "note": "Rates are fractions of the trade's notional (0.001 = 0.1 %); your account's rates apply to your fills."}


# ------------------------------------------------------------------------------------------------
# Klines by time range, indicators
# ------------------------------------------------------------------------------------------------
def _ms_arg(name: str, value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(f"{name} must be ms since the epoch UTC (a non-negative integer), got {value!r}.")
    return value


def klines_range(*, symbol: str, interval: str, limit: int = 100, start_time: int | None = None, end_time: int | None = None) -> dict:
    """Klines of ``symbol``/``interval``, oldest first, at most ``limit`` (1..1000).

    Without times: the latest (stored 1m series plus the forming candle; other intervals from the
    venue). With ``start_time``/``end_time`` (ms UTC, open times, inclusive): the stored closed 1m
    candles of that range when they cover it, else the venue's. Returns ``{"symbol", "interval",
    "klines", "nextStartTime"}``: call again with ``start_time=nextStartTime`` for the next page
    (null when the range is exhausted).
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
        raise InvalidInput(f"limit must be an integer from 1 to 1000, got {limit!r}.")
    start_time, end_time = _ms_arg("start_time", start_time), _ms_arg("end_time", end_time)
    if start_time is not None and end_time is not None and end_time < start_time:
        raise InvalidInput(f"end_time ({end_time}) is before start_time ({start_time}).")
    if start_time is None and end_time is None:
        rows = klines_list(symbol=symbol, interval=interval, limit=limit) if interval == "1m" else \
            klines_fetch(symbol=symbol, interval=interval, limit=limit)
        return {"symbol": symbol, "interval": interval, "klines": rows, "nextStartTime": None}
    rows = []
    if interval == "1m":
        qs = Kline.objects.filter(symbol=symbol, interval=interval)
        if start_time is not None:
            qs = qs.filter(open_time__gte=start_time)
        if end_time is not None:
            qs = qs.filter(open_time__lte=end_time)
        qs = qs.order_by("open_time") if start_time is not None else qs.order_by("-open_time")
        stored = list(qs[:limit])
        if start_time is None:
            stored.reverse()
        covered = stored and (start_time is None or stored[0].open_time <= start_time + 60_000)
        if covered:
            rows = [kline_as_dict(k) for k in stored]
    if not rows:
        rows = klines_fetch(symbol=symbol, interval=interval, limit=limit, start_time=start_time, end_time=end_time)
    next_start = None
    if len(rows) == limit and start_time is not None:
        nxt = rows[-1]["openTime"] + 1
        if end_time is None or nxt <= end_time:
            next_start = nxt
    return {"symbol": symbol, "interval": interval, "klines": rows, "nextStartTime": next_start}


def candles_rows(*, symbol: str, interval: str, lookback: int = 1000) -> list[tuple]:
    """The latest ``lookback`` stored closed candles, oldest first, as ``(open_time, open, high, low,
    close, volume, close_decimal)`` tuples: the five OHLCV values cast to double precision by the
    database (for TA-Lib's math only: converting Decimals in Python costs ~0.4 µs a value, most of
    an indicator run), plus the exact ``Decimal`` close for what is stored."""
    from django.db.models import FloatField
    from django.db.models.functions import Cast

    casts = {f"f_{n}": Cast(n, FloatField()) for n in ("open", "high", "low", "close", "volume")}
    rows = list(
        Kline.objects.filter(symbol=symbol, interval=interval).order_by("-open_time").annotate(**casts)
        .values_list("open_time", "f_open", "f_high", "f_low", "f_close", "f_volume", "close")[:lookback]
    )
    rows.reverse()
    return rows


def indicators_compute(*, symbol: str, interval: str, indicators: list[str] | None = None, params: dict | None = None,
                       lookback: int = 1000) -> dict:
    """The indicator set (``marketdata.indicators``) of ``symbol``/``interval`` at its latest closed
    candle, computed now from the latest ``lookback`` closed candles: the stored ones when there are
    enough, else the venue's klines. Returns ``{"symbol", "interval", "openTime", "close",
    "values", "signals", "candles"}`` (values and prices as strings; see ``indicators``)."""
    resolved = ind.resolve(indicators, params)
    rows = candles_rows(symbol=symbol, interval=interval, lookback=lookback)
    if len(rows) < min(lookback, 200):
        fetched = [r for r in klines_fetch(symbol=symbol, interval=interval, limit=lookback) if r["closed"]]
        if len(fetched) > len(rows):
            rows = [(r["openTime"], r["open"], r["high"], r["low"], r["close"], r["volume"]) for r in fetched]
    if not rows:
        raise MarketDataMissing(f"No closed {interval} candles of {symbol} yet.")
    candles = ind.Candles.from_rows(rows)
    snap = ind.snapshot(candles, resolved)
    return {"symbol": symbol, "interval": interval, **snap, "candles": len(rows)}


def indicator_snapshot_latest(*, symbol: str, interval: str):
    """The newest stored ``IndicatorSnapshot`` of ``symbol``/``interval``, or None."""
    return IndicatorSnapshot.objects.filter(symbol=symbol, interval=interval).order_by("-open_time").first()


# ------------------------------------------------------------------------------------------------
# Streams
# ------------------------------------------------------------------------------------------------
STREAM_RE = re.compile(
    r"^(?P<symbol>[a-z0-9]{2,20})@(?P<kind>trade|aggTrade|bookTicker|ticker|miniTicker|"
    r"kline_(?P<interval>1m|3m|5m|15m|30m|1h|2h|4h|6h|8h|12h|1d|3d|1w|1M)|depth(?:5|10|20)?(?:@100ms)?)$"
)
STREAM_KINDS = "trade, aggTrade, bookTicker, ticker, miniTicker, kline_<interval>, depth, depth5|10|20 (optionally @100ms)"


def stream_check(stream: str) -> str:
    """Validate a Binance stream name ``<symbol>@<kind>`` (e.g. ``btcusdt@trade``,
    ``ethusdt@kline_5m``, ``btcusdt@depth20@100ms``) for a known symbol; returns it with the symbol
    in lower case, as Binance names streams. Raises ``InvalidInput`` listing the valid kinds, or
    ``UnknownSymbol`` with the closest symbols."""
    if not isinstance(stream, str) or "@" not in stream:
        raise InvalidInput(f"Invalid stream {stream!r}: expected <symbol>@<kind>, kinds: {STREAM_KINDS}.")
    sym, _, kind = stream.strip().partition("@")
    name = f"{sym.lower()}@{kind}"
    if not STREAM_RE.match(name):
        raise InvalidInput(f"Invalid stream {stream!r}: expected <symbol>@<kind>, kinds: {STREAM_KINDS}.")
    symbol_get(sym)
    return name


def default_streams() -> list[str]:
    """Streams the ingester always runs: bookTicker and kline_1m of each watched symbol."""
    return [f"{s.lower()}@bookTicker" for s in watched_symbols()] + [f"{s.lower()}@kline_1m" for s in watched_symbols()]


def streams_list(*, user) -> list[dict]:
    """The default streams and ``user``'s subscriptions, each ``{"stream", "subscribed", "default",
    "buffered" (messages held), "lastEventTime" (ms, null if none yet)}``."""
    mine = set(StreamSubscription.objects.filter(user=user).values_list("stream", flat=True)) if user is not None else set()
    names = list(dict.fromkeys(default_streams() + sorted(mine)))
    r = cache.get_redis()
    pipe = r.pipeline(transaction=False)
    for n in names:
        pipe.llen(cache.buffer_key(n))
        pipe.get(cache.last_key(n))
    res = pipe.execute()
    out = []
    for i, n in enumerate(names):
        last = cache.loads(res[2 * i + 1])
        out.append({"stream": n, "subscribed": n in mine, "default": n in default_streams(), "buffered": res[2 * i],
                    "lastEventTime": (last or {}).get("E")})
    return out


def stream_messages(*, user, stream: str, limit: int = 50) -> dict:
    """The newest ``limit`` (1..MARKET_STREAM_BUFFER) buffered messages of a stream the user
    subscribed to (or a default stream), oldest first, as Binance sends them. Returns
    ``{"stream", "messages", "count", "latest"}``."""
    name = stream_check(stream)
    cap = settings.MARKET_STREAM_BUFFER
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= cap:
        raise InvalidInput(f"limit must be an integer from 1 to {cap}, got {limit!r}.")
    if name not in default_streams() and not StreamSubscription.objects.filter(user=user, stream=name).exists():
        raise InvalidInput(f"Not subscribed to {name}: call subscribe_stream({name!r}) first, then read its messages.")
    raw = cache.get_redis().lrange(cache.buffer_key(name), 0, limit - 1)
    messages = [cache.loads(x) for x in reversed(raw)]
    return {"stream": name, "messages": messages, "count": len(messages), "latest": messages[-1] if messages else None}


def ingester_age_s(now_ms: int | None = None, *, client=None) -> float | None:
    """Seconds since the ingester last wrote a watched symbol's bookTicker (None: never).
    ``client``: the Redis client to read with (the readiness probe passes one with short timeouts)."""
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    raws = (client or cache.get_redis()).mget([cache.book_key(s) for s in settings.WATCHED_SYMBOLS]) if settings.WATCHED_SYMBOLS else []
    stamps = [cache.loads(raw).get("receivedAt") for raw in raws if raw is not None]
    stamps = [s for s in stamps if isinstance(s, (int, float))]
    return None if not stamps else max(0.0, (now_ms - max(stamps)) / 1000.0)
