"""Binance JSON shapes for the model's records (pure formatting, no I/O).

Field names, order and types follow Binance's spot API documentation ("Market Data endpoints" of
the REST API, "Detailed Stream information" of the WebSocket Streams) and the recorded real
responses in ``/work/shared/data/binance/rest/`` (BTCUSDT, 2021-10-22): numbers that are amounts
are strings with 8 decimals (``"7195.24000000"``), ids and times are JSON integers (ms),
``priceChangePercent`` has 3 decimals.

Values come in as exact 1e-8 fixed-point integers (``*_e8``) and are formatted without going
through ``float``.
"""
from __future__ import annotations

from .model import (
    ORDER_ID_BASE,
    AvgPrice,
    BookTicker,
    Depth,
    DepthUpdate,
    Kline,
    Ticker24h,
    Trade,
)

_E8 = 100_000_000


def f8(n: int) -> str:
    """Format an integer number of 1e-8 units as Binance does: ``719524000000 -> "7195.24000000"``."""
    if n < 0:
        n = -n
        return f"-{n // _E8}.{n % _E8:08d}"
    return f"{n // _E8}.{n % _E8:08d}"


# -- REST ---------------------------------------------------------------------------------------
def kline_row(k: Kline) -> list:
    """``GET /api/v3/klines`` row: [openTime, open, high, low, close, volume, closeTime,
    quoteVolume, trades, takerBuyBase, takerBuyQuote, "0"]."""
    return [
        k.open_time, f8(k.open_e8), f8(k.high_e8), f8(k.low_e8), f8(k.close_e8), f8(k.volume_e8),
        k.close_time, f8(k.quote_volume_e8), k.trades, f8(k.taker_buy_base_e8),
        f8(k.taker_buy_quote_e8), "0",
    ]


def trade_rest(t: Trade) -> dict:
    """``GET /api/v3/trades`` item."""
    return {
        "id": t.id,
        "price": f8(t.price_e8),
        "qty": f8(t.qty_e8),
        "quoteQty": f8(t.quote_qty_e8),
        "time": t.time,
        "isBuyerMaker": t.is_buyer_maker,
        "isBestMatch": True,
    }


def agg_trade_rest(t: Trade) -> dict:
    """``GET /api/v3/aggTrades`` item (one aggregate per replay trade)."""
    return {
        "a": t.id, "p": f8(t.price_e8), "q": f8(t.qty_e8), "f": t.id, "l": t.id,
        "T": t.time, "m": t.is_buyer_maker, "M": True,
    }


def book_ticker_rest(b: BookTicker) -> dict:
    """``GET /api/v3/ticker/bookTicker`` item."""
    return {
        "symbol": b.symbol,
        "bidPrice": f8(b.bid_price_e8),
        "bidQty": f8(b.bid_qty_e8),
        "askPrice": f8(b.ask_price_e8),
        "askQty": f8(b.ask_qty_e8),
    }


def price_ticker_rest(symbol: str, price_e8: int) -> dict:
    """``GET /api/v3/ticker/price`` item."""
    return {"symbol": symbol, "price": f8(price_e8)}


_LEVEL_CACHE: dict[int, str] = {}
_LEVEL_CACHE_MAX = 400_000  # book prices and sizes recur second after second; bound the memory


def _levels(levels) -> list[list[str]]:
    """``[[price, qty], ...]`` strings for book levels, memoising the formatted numbers (a diff
    event of a moving book has thousands of levels, and they recur every second)."""
    cache = _LEVEL_CACHE
    if len(cache) > _LEVEL_CACHE_MAX:
        cache.clear()
    get = cache.get
    out = []
    append = out.append
    for p, q in levels:
        sp = get(p)
        if sp is None:
            sp = cache[p] = f8(p)
        sq = get(q)
        if sq is None:
            sq = cache[q] = f8(q)
        append([sp, sq])
    return out


def depth_rest(d: Depth) -> dict:
    """``GET /api/v3/depth`` body (also the partial-depth stream payload)."""
    return {"lastUpdateId": d.last_update_id, "bids": _levels(d.bid_levels), "asks": _levels(d.ask_levels)}


def ticker_24h_rest(tk: Ticker24h, mini: bool = False) -> dict:
    """``GET /api/v3/ticker/24hr`` item, ``type=FULL`` (default) or ``MINI``."""
    if mini:
        return {
            "symbol": tk.symbol,
            "openPrice": f8(tk.open_price_e8),
            "highPrice": f8(tk.high_price_e8),
            "lowPrice": f8(tk.low_price_e8),
            "lastPrice": f8(tk.last_price_e8),
            "volume": f8(tk.volume_e8),
            "quoteVolume": f8(tk.quote_volume_e8),
            "openTime": tk.open_time,
            "closeTime": tk.close_time,
            "firstId": tk.first_id,
            "lastId": tk.last_id,
            "count": tk.count,
        }
    return {
        "symbol": tk.symbol,
        "priceChange": f8(tk.price_change_e8),
        "priceChangePercent": f"{tk.price_change_percent:.3f}",
        "weightedAvgPrice": f8(tk.weighted_avg_price_e8),
        "prevClosePrice": f8(tk.prev_close_price_e8),
        "lastPrice": f8(tk.last_price_e8),
        "lastQty": f8(tk.last_qty_e8),
        "bidPrice": f8(tk.bid_price_e8),
        "bidQty": f8(tk.bid_qty_e8),
        "askPrice": f8(tk.ask_price_e8),
        "askQty": f8(tk.ask_qty_e8),
        "openPrice": f8(tk.open_price_e8),
        "highPrice": f8(tk.high_price_e8),
        "lowPrice": f8(tk.low_price_e8),
        "volume": f8(tk.volume_e8),
        "quoteVolume": f8(tk.quote_volume_e8),
        "openTime": tk.open_time,
        "closeTime": tk.close_time,
        "firstId": tk.first_id,
        "lastId": tk.last_id,
        "count": tk.count,
    }


def avg_price_rest(a: AvgPrice) -> dict:
    """``GET /api/v3/avgPrice`` body."""
    return {"mins": a.mins, "price": f8(a.price_e8), "closeTime": a.close_time}


# -- WebSocket stream payloads -------------------------------------------------------------------
def trade_event(symbol: str, t: Trade) -> dict:
    """``<symbol>@trade`` payload (``E`` = ``T`` = trade time in replay ms). Binance removed the
    buyer/seller order ids ``b``/``a`` from it (spot API changelog 2023-12)."""
    return {
        "e": "trade", "E": t.time, "s": symbol, "t": t.id, "p": f8(t.price_e8), "q": f8(t.qty_e8),
        "T": t.time, "m": t.is_buyer_maker, "M": True,
    }


def avg_price_event(symbol: str, a: AvgPrice, event_time: int) -> dict:
    """``<symbol>@avgPrice`` payload (Binance "Average Price": interval ``i``, price ``w``, last
    trade time ``T``)."""
    return {"e": "avgPrice", "E": event_time, "s": symbol, "i": f"{a.mins}m", "w": f8(a.price_e8), "T": a.close_time}


def agg_trade_event(symbol: str, t: Trade) -> dict:
    """``<symbol>@aggTrade`` payload."""
    return {
        "e": "aggTrade", "E": t.time, "s": symbol, "a": t.id, "p": f8(t.price_e8), "q": f8(t.qty_e8),
        "f": t.id, "l": t.id, "T": t.time, "m": t.is_buyer_maker, "M": True,
    }


def kline_event(symbol: str, k: Kline, event_time: int) -> dict:
    """``<symbol>@kline_<interval>`` payload."""
    return {
        "e": "kline",
        "E": event_time,
        "s": symbol,
        "k": {
            "t": k.open_time, "T": k.close_time, "s": symbol, "i": k.interval,
            "f": k.first_trade_id, "L": k.last_trade_id,
            "o": f8(k.open_e8), "c": f8(k.close_e8), "h": f8(k.high_e8), "l": f8(k.low_e8),
            "v": f8(k.volume_e8), "n": k.trades, "x": k.closed, "q": f8(k.quote_volume_e8),
            "V": f8(k.taker_buy_base_e8), "Q": f8(k.taker_buy_quote_e8), "B": "0",
        },
    }


def book_ticker_event(b: BookTicker) -> dict:
    """``<symbol>@bookTicker`` payload (no event time, as on Binance spot)."""
    return {
        "u": b.update_id, "s": b.symbol,
        "b": f8(b.bid_price_e8), "B": f8(b.bid_qty_e8),
        "a": f8(b.ask_price_e8), "A": f8(b.ask_qty_e8),
    }


def depth_update_event(u: DepthUpdate) -> dict:
    """``<symbol>@depth[@100ms]`` ``depthUpdate`` payload."""
    return {
        "e": "depthUpdate", "E": u.time, "s": u.symbol,
        "U": u.first_update_id, "u": u.final_update_id,
        "b": _levels(u.bid_changes), "a": _levels(u.ask_changes),
    }


def ticker_event(tk: Ticker24h, event_time: int) -> dict:
    """``<symbol>@ticker`` (``24hrTicker``) payload."""
    return {
        "e": "24hrTicker", "E": event_time, "s": tk.symbol,
        "p": f8(tk.price_change_e8), "P": f"{tk.price_change_percent:.3f}",
        "w": f8(tk.weighted_avg_price_e8), "x": f8(tk.prev_close_price_e8),
        "c": f8(tk.last_price_e8), "Q": f8(tk.last_qty_e8),
        "b": f8(tk.bid_price_e8), "B": f8(tk.bid_qty_e8),
        "a": f8(tk.ask_price_e8), "A": f8(tk.ask_qty_e8),
        "o": f8(tk.open_price_e8), "h": f8(tk.high_price_e8), "l": f8(tk.low_price_e8),
        "v": f8(tk.volume_e8), "q": f8(tk.quote_volume_e8),
        "O": tk.open_time, "C": tk.close_time, "F": tk.first_id, "L": tk.last_id, "n": tk.count,
    }


def mini_ticker_event(tk: Ticker24h, event_time: int) -> dict:
    """``<symbol>@miniTicker`` (``24hrMiniTicker``) payload."""
    return {
        "e": "24hrMiniTicker", "E": event_time, "s": tk.symbol,
        "c": f8(tk.last_price_e8), "o": f8(tk.open_price_e8), "h": f8(tk.high_price_e8),
        "l": f8(tk.low_price_e8), "v": f8(tk.volume_e8), "q": f8(tk.quote_volume_e8),
    }


# -- timeUnit=MICROSECOND ------------------------------------------------------------------------
#: Binance "General API Information": "All time and timestamp related fields in the JSON responses
#: are in milliseconds by default. To receive the information in microseconds, please add the
#: header X-MBX-TIME-UNIT:MICROSECOND or X-MBX-TIME-UNIT:microsecond" (REST), or the parameter
#: ``timeUnit=MICROSECOND`` / ``timeUnit=microsecond`` in the URL (WebSocket Streams, WebSocket API).
MICROSECOND_UNITS = frozenset({"MICROSECOND", "microsecond"})

#: Time fields of REST answers and WebSocket API results (ms since epoch).
REST_TIME_KEYS = frozenset({
    "serverTime", "time", "transactTime", "transactionTime", "updateTime", "workingTime", "openTime",
    "closeTime", "T", "authorizedSince", "connectedSince",
})
#: Time fields of stream and user-data events, by event type ``e`` (``E`` always). In ``@trade``
#: and ``executionReport`` ``t`` is a trade id; in a kline's ``k`` object ``t``/``T`` are times.
EVENT_TIME_KEYS: dict[str, tuple[str, ...]] = {
    "trade": ("E", "T"), "aggTrade": ("E", "T"), "kline": ("E",), "depthUpdate": ("E",),
    "24hrTicker": ("E", "O", "C"), "24hrMiniTicker": ("E",), "avgPrice": ("E", "T"),
    "executionReport": ("E", "O", "T", "W"), "outboundAccountPosition": ("E", "u"),
    "balanceUpdate": ("E", "T"), "listStatus": ("E", "T"), "externalLockUpdate": ("E", "T"),
    "eventStreamTerminated": ("E",),
}


def is_microsecond(unit: str | None) -> bool:
    """True when a ``X-MBX-TIME-UNIT`` header or ``timeUnit`` parameter asks for microseconds
    (any other value, or none, keeps milliseconds)."""
    return unit in MICROSECOND_UNITS


def _us(v):
    return v * 1000 if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else v


def _us_end(v):
    """A kline's close time: the last µs before the next open (Binance's µs kline dumps have
    close_time = open_time + interval - 1 µs), not the last ms scaled."""
    return (v + 1) * 1000 - 1 if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else v


def rest_micros(body, klines: bool = False):
    """A REST answer (or WebSocket API ``result``) with its time fields in µs (a new object).
    ``klines``: the body is ``GET /api/v3/klines`` rows (open and close time at 0 and 6)."""
    if klines and isinstance(body, list):
        return [[_us(r[0]), *r[1:6], _us_end(r[6]), *r[7:]] if isinstance(r, list) and len(r) > 6 else r for r in body]
    if isinstance(body, list):
        return [rest_micros(x) for x in body]
    if isinstance(body, dict):
        return {k: (_us(v) if k in REST_TIME_KEYS else rest_micros(v)) for k, v in body.items()}
    return body


def event_micros(event):
    """A stream payload or user-data event with its time fields in µs (a new object; payloads
    without times, like ``@bookTicker`` and partial depth, come back unchanged)."""
    if not isinstance(event, dict) or "e" not in event:
        return event
    keys = EVENT_TIME_KEYS.get(event["e"], ("E",))
    out = {k: (_us(v) if k in keys else v) for k, v in event.items()}
    if event["e"] == "kline" and isinstance(event.get("k"), dict):
        k = event["k"]
        out["k"] = {**k, "t": _us(k.get("t")), "T": _us_end(k.get("T"))}
    return out
