"""WebSocket market streams: stream-name parsing and event generation by replay time (pure).

Stream names follow Binance's "WebSocket Streams" documentation (lowercase symbol, then ``@`` and
the stream type):

=============================== ==============================================================
``<s>@trade``                    one event per replay trade (``E`` = ``T`` = its print time)
``<s>@aggTrade``                 one event per replay trade (an aggregate of one trade)
``<s>@kline_<interval>[@+08:00]`` one update per replay second (the trades printed by then); the
                                 update for the bucket's last second is sent at the bucket's
                                 close time with ``x: true``
``<s>@bookTicker``               one event per replay second (the book changes once a second)
``<s>@depth<5|10|20>[@100ms]``   partial book, one per replay second (the book only changes on
                                 whole seconds, so the 100 ms variant has nothing more to say)
``<s>@depth[@100ms]``            ``depthUpdate`` diffs for each replay second whose book differs
                                 from the previous second's (none when nothing changed; ``U`` is
                                 the previous event's ``u`` + 1)
``<s>@ticker``, ``@miniTicker``  rolling 24 h statistics, one per replay second
``<s>@avgPrice``                 the 5-minute average price, one per replay second
=============================== ==============================================================

Well-formed names Binance has but the replay does not produce (``kline_1s``,
``@ticker_<window>``, ``!ticker@arr``, ``!miniTicker@arr``, ``!bookTicker``, ...) and well-formed
names for symbols without a tape (or written in upper case: Binance's stream symbols are lower
case) are accepted and stay silent, which is what Binance does for a symbol it does not list. Malformed names are rejected (see ``server.py``).

:func:`stream_events` returns the events whose *event time* (replay ms) lies in a window
``(t0, t1]``, in time order; the server calls it every tick with the window since its last send.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from . import wire
from .model import KLINE_INTERVALS, NoData, ReplayModel

_ALL_KLINE = KLINE_INTERVALS + ("1s",)
_STREAM_RE = re.compile(
    r"^(?P<sym>[A-Za-z0-9\-_.]{1,20})@(?:"
    r"(?P<trade>trade)|(?P<agg>aggTrade)|(?P<bt>bookTicker)|(?P<avg>avgPrice)"
    r"|kline_(?P<kiv>" + "|".join(re.escape(i) for i in _ALL_KLINE) + r")(?:@(?P<tz>[+-]\d{1,2}:\d{2}))?"
    r"|depth(?P<lvl>5|10|20)?(?:@(?P<spd>100ms|1000ms))?"
    r"|(?P<tick>ticker)|(?P<mini>miniTicker)|ticker_(?P<win>1h|4h|1d)"
    r")$"
)
_MARKET_RE = re.compile(r"^!(ticker@arr|miniTicker@arr|bookTicker|ticker_(1h|4h|1d)@arr)(@\d+ms)?$")


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """A parsed stream name.

    ``name``: as subscribed; ``symbol``: upper-case symbol (``""`` for all-market streams);
    ``kind``: ``trade``, ``aggTrade``, ``kline``, ``bookTicker``, ``depthDiff``, ``depthPartial``,
    ``ticker``, ``miniTicker``, ``avgPrice`` or ``silent`` (valid on Binance, not produced here);
    ``interval``: kline interval; ``levels``: partial depth levels; ``tz_ms``: kline time-zone
    offset (``<s>@kline_<i>@+08:00``) in ms.
    """

    name: str
    symbol: str
    kind: str
    interval: str = ""
    levels: int = 0
    tz_ms: int = 0


def parse_stream(name: str) -> StreamSpec | None:
    """Parse a Binance stream name; ``None`` if it is malformed (Binance: "invalid stream")."""
    if not isinstance(name, str):
        return None
    if _MARKET_RE.match(name):
        return StreamSpec(name, "", "silent")
    m = _STREAM_RE.match(name)
    if not m:
        return None
    # Binance stream symbols are lower case; an upper-case one matches no market (silent stream)
    sym = m["sym"].upper() if m["sym"] == m["sym"].lower() else "?" + m["sym"]
    if m["trade"]:
        return StreamSpec(name, sym, "trade")
    if m["agg"]:
        return StreamSpec(name, sym, "aggTrade")
    if m["bt"]:
        return StreamSpec(name, sym, "bookTicker")
    if m["kiv"]:
        if m["kiv"] == "1s":
            return StreamSpec(name, sym, "silent", interval="1s")
        tz = 0
        if m["tz"]:
            hh, mm = m["tz"][1:].split(":")
            tz = (1 if m["tz"][0] == "+" else -1) * (int(hh) * 60 + int(mm)) * 60_000
        return StreamSpec(name, sym, "kline", interval=m["kiv"], tz_ms=tz)
    if m["tick"]:
        return StreamSpec(name, sym, "ticker")
    if m["mini"]:
        return StreamSpec(name, sym, "miniTicker")
    if m["avg"]:
        return StreamSpec(name, sym, "avgPrice")
    if m["win"]:
        return StreamSpec(name, sym, "silent")
    # depth variants (the regex guarantees this is a depth stream)
    if m["lvl"]:
        return StreamSpec(name, sym, "depthPartial", levels=int(m["lvl"]))
    return StreamSpec(name, sym, "depthDiff")


def _second_range(model: ReplayModel, symbol: str, t0: int, t1: int) -> range:
    """Replay seconds (counted from ``T0``) whose start lies in ``(t0, t1]``."""
    base = model.tape_start_ms(symbol)
    lo = max(0, (t0 - base) // 1000 + 1)
    hi = (t1 - base) // 1000
    return range(lo, hi + 1)


def _trade_range(model: ReplayModel, symbol: str, t0: int, t1: int) -> range:
    """Global indices of the trades printed in ``(t0, t1]``."""
    lo = model.trade_index(symbol, t0) + 1 if t0 >= model.tape_start_ms(symbol) else 0
    return range(lo, model.trade_index(symbol, t1) + 1)


def stream_events(model: ReplayModel, spec: StreamSpec, t0: int, t1: int) -> list[tuple[int, dict]]:
    """Events of stream ``spec`` with event time in ``(t0, t1]`` (replay ms), oldest first.

    Returns ``[(event_time_ms, payload_dict), ...]``; payloads are Binance's raw stream payloads
    (not wrapped). Unknown symbols and silent streams give ``[]``. O(number of events).
    """
    sym = spec.symbol
    if spec.kind == "silent" or not model.has_symbol(sym) or t1 <= t0:
        return []
    kind = spec.kind
    try:
        if kind in ("trade", "aggTrade"):
            fmt_trade = wire.trade_event if kind == "trade" else wire.agg_trade_event
            return [(tr.time, fmt_trade(sym, tr))
                    for tr in map(lambda g: model.trade_at_index(sym, g), _trade_range(model, sym, t0, t1))]
        idx = _second_range(model, sym, t0, t1)
    except NoData:
        return []
    if kind == "bookTicker":
        base = model.tape_start_ms(sym)
        return [(base + g * 1000, wire.book_ticker_event(model.book_ticker(sym, base + g * 1000))) for g in idx]
    if kind == "kline":
        iv = spec.interval
        out = []
        # the last second of a bucket is sent at the bucket close (up to 999 ms later): look one back
        for g in range(max(0, idx.start - 1), idx.stop):
            et = model.kline_event_time(sym, iv, g, spec.tz_ms)
            if t0 < et <= t1:
                out.append((et, wire.kline_event(sym, model.kline_at_index(sym, iv, g, spec.tz_ms), et)))
        return out
    if kind == "depthDiff":
        out = []
        for g in idx:
            du = model.depth_update(sym, g)
            if du.bid_changes or du.ask_changes:  # Binance sends no empty diffs
                out.append((du.time, wire.depth_update_event(du)))
        return out
    if kind == "depthPartial":
        out = []
        for g in idx:
            d = model.depth_at_second(sym, g, spec.levels)
            out.append((d.time, wire.depth_rest(d)))
        return out
    if kind == "avgPrice":
        base = model.tape_start_ms(sym)
        return [(base + g * 1000, wire.avg_price_event(sym, model.avg_price(sym, base + g * 1000), base + g * 1000))
                for g in idx]
    if kind in ("ticker", "miniTicker"):
        fmt: Callable = wire.ticker_event if kind == "ticker" else wire.mini_ticker_event
        base = model.tape_start_ms(sym)
        return [(base + g * 1000, fmt(model.ticker_24h(sym, base + g * 1000), base + g * 1000)) for g in idx]
    return []
