"""The replay market model: every replayed value as a pure function of (symbol, replay time).

Pure and deterministic: no I/O after construction (tapes and reference data are loaded once), no
randomness, no wall clock. Two :class:`ReplayModel` objects built with the same
``start_wall_ms`` and ``history_minutes`` give identical answers, so a test can build its own
model to compute the values the server must serve (or use ``ReplayServer.model``).

Units everywhere: times are ms since epoch UTC *in replay time*; prices are in the quote asset;
quantities in the base asset. Public results carry exact ``Decimal`` values (8 decimals, like
Binance's strings); internally every price and volume is an exact integer number of 1e-8 units
("E8"; never ``float``) so hot paths stay O(1) and allocation-light.

Derivation rules (also in ``replay/README.md``)
-------------------------------------------------------------
**Time shift.** Each symbol's recording is shifted on its own so that the candle at index
``history_minutes`` (default 600) opens at ``floor_minute(start_wall_ms)``::

    T0     = floor_minute(start_wall_ms) - history_minutes * 60000   # replay open of candle 0
    offset = T0 - first_open_time_of_tape

so ``history_minutes`` of closed candles exist when the replay starts (charts and indicators have
history). Nothing exists before ``T0``.

**Loop.** Replay minute ``M = (t - T0) // 60000`` (``M >= 0``) plays tape candle ``M % L``
(``L`` = tape length in minutes) in lap ``M // L``. Each lap is the same recording shifted by
``L`` minutes more; at a lap boundary the price jumps from the tape's last close to its first open
(BTCUSDT: 7344.96 -> 7195.24, ETHUSDT: 1899.06 -> 1983.55) within one minute; nothing smooths it,
the next lap simply replays the recording again. Trade and update ids keep increasing across laps.

**Trades** (``trades.py``). Each recorded candle is replayed as its recorded number of trades,
quantities on today's ``LOT_SIZE.stepSize`` summing to the recorded volume (rounded half up to the
step), the recorded taker-buy volume shared among the taker buys, sizes and timing following the
recorded ``@aggTrade`` flow, prices on a path open -> nearer extreme -> other extreme -> close.
Global trade index ``g`` counts trades from ``T0``; trade id = ``TRADE_ID_BASE + g``; a candle's
trades have contiguous ids, and each lap replays the same trades with ids continuing.
aggTrades are one per trade (agg id = trade id, ``f = l = id``).

**Book ticker.** The book changes on whole replay seconds: at second ``S`` (``T0 + S*1000``) bid =
the price of the last trade printed at or before it; ask = bid + the recorded depth snapshot's
spread in ticks (BTCUSDT and ETHUSDT: 1 tick); sizes = the snapshot's best sizes (on the step).
Update id ``u = UPDATE_ID_BASE + S``.

**Depth.** The recorded snapshot (1000 levels a side) gives each level's distance from its side's
best price as a fraction of the recorded mid. At second ``S`` the levels are re-centred on the
current bid/ask: ``bid_i = bid - d_i * mid_now / mid_rec`` rounded *down* to tick,
``ask_i = ask + d_i * mid_now / mid_rec`` rounded *up*; then made strictly monotonic and
de-duplicated by pushing a level that collides with (or crosses) the previous one a tick further
out. Levels beyond the recorded ones (up to :data:`MAX_DEPTH_LEVELS`) repeat the recorded offsets
further out, re-centred on a coarse anchor (the bid rounded down to 1/500 of the tape's median
price), so they only move when the price crosses an anchor line. Sizes are the recorded sizes on
the step, level by level. ``lastUpdateId = UPDATE_ID_BASE + S``. The diff stream's event for second
``S`` has ``u = UPDATE_ID_BASE + S``, ``U`` = one past the previous changed second, and lists
every level whose size changed plus removed levels with size 0, so Binance's local-book algorithm
(drop ``u <= lastUpdateId``, first event ``U <= lastUpdateId + 1 <= u``, then ``U == previous u +
1``) reproduces :meth:`ReplayModel.depth` exactly.

**Klines.** Every Binance interval from 1m to 1M (not 1s) is an aggregate of replay minutes in
UTC-aligned buckets (3d buckets are aligned to multiples of 3 days since the epoch, 1w to Monday
00:00 UTC, 1M to calendar months; ``timeZone`` shifts the boundaries like Binance's parameter).
Every bucket, forming or closed, is exactly the replayed trades printed in it so far: o/h/l/c
from their prices, volume and quote volume their sums, taker-buy volumes the sums over the taker
buys (``m`` false), ``n = L - f + 1`` (the first bucket may start at ``T0`` mid-bucket). A closed 1m
kline has the recorded open, high, low, close and trade count.
``x`` (closed) becomes true at the bucket's close time (open + interval - 1 ms).

**24h ticker.** Rolling window ``[t - 24h, t]`` over the replay trades: open = first trade in the
window, last = current trade, high/low/volume over the window, ``count = lastId - firstId + 1``.
When less than 24 h of replay exists (the default history is 10 h), the window starts at ``T0``
and ``openTime = T0``. ``prevClosePrice`` = price of the trade just before the window (the
window's open when there is none). ``avgPrice`` is ``quoteVolume / volume`` over the trailing 5
minutes, like Binance's ``GET /api/v3/avgPrice``.
"""
from __future__ import annotations

import datetime as _dt
import threading
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Iterable

import numpy as np

from .refdata import BookShape, SymbolSpec, book_shape, symbol_spec
from .tape import E8, MINUTE_MS, Tape, from_e8, load_tape, replayed_symbols
from .trades import TradeTape, trade_tape

#: Trade id of the first replayed trade (global trade index 0) of every symbol.
TRADE_ID_BASE = 100_000_000
#: Order-book update id at global trade index 0 (bookTicker ``u``, depth ``lastUpdateId``).
UPDATE_ID_BASE = 1_000_000_000
#: Buyer/seller order ids shown in ``@trade`` events: base + 2G and base + 2G + 1.
ORDER_ID_BASE = 5_000_000_000

SECOND_MS = 1_000
DAY_MS = 86_400_000
WEEK_MS = 7 * DAY_MS
_MONDAY_0 = 4 * DAY_MS  # 1970-01-05T00:00Z, the first Monday after the epoch
_EPOCH_DATE = _dt.date(1970, 1, 1)

#: Binance kline intervals the replay serves (``GET /api/v3/klines`` "Kline/Candlestick data";
#: ``1s`` exists on Binance but is not replayable from 1m data and is rejected with -1120).
INTERVAL_MS: dict[str, int] = {
    "1m": MINUTE_MS,
    "3m": 3 * MINUTE_MS,
    "5m": 5 * MINUTE_MS,
    "15m": 15 * MINUTE_MS,
    "30m": 30 * MINUTE_MS,
    "1h": 60 * MINUTE_MS,
    "2h": 120 * MINUTE_MS,
    "4h": 240 * MINUTE_MS,
    "6h": 360 * MINUTE_MS,
    "8h": 480 * MINUTE_MS,
    "12h": 720 * MINUTE_MS,
    "1d": DAY_MS,
    "3d": 3 * DAY_MS,
    "1w": WEEK_MS,
    "1M": 31 * DAY_MS,  # nominal; calendar months are handled by bucket_open/bucket_next
}
KLINE_INTERVALS: tuple[str, ...] = tuple(INTERVAL_MS)

_BOOK_CACHE = 8  # books kept per symbol (the diff stream needs G and G-1)
#: Levels a side the book holds (Binance ``GET /api/v3/depth`` answers up to 5000).
MAX_DEPTH_LEVELS = 5000
#: The levels beyond the recorded snapshot's move in steps of 1/500 of the tape's median price.
DEEP_ANCHOR_FRACTION = 500


class ReplayError(Exception):
    """Base class of model errors."""


class UnknownSymbol(ReplayError, KeyError):
    """The symbol has no tape (Binance: -1121 "Invalid symbol.")."""


class UnknownInterval(ReplayError, ValueError):
    """Not a replayable kline interval (Binance: -1120 "Invalid interval.")."""


class NoData(ReplayError, LookupError):
    """The replay time is before the symbol's first replayed minute ``T0``."""


# ------------------------------------------------------------------------------------------------
# time helpers
# ------------------------------------------------------------------------------------------------
def floor_minute(ms: int) -> int:
    """Start of the UTC minute containing ``ms`` (ms since epoch)."""
    return ms - ms % MINUTE_MS


def _month_start(local_ms: int) -> int:
    d = _EPOCH_DATE + _dt.timedelta(days=local_ms // DAY_MS)
    return (d.replace(day=1) - _EPOCH_DATE).days * DAY_MS


def _next_month_start(local_month_start_ms: int) -> int:
    d = _EPOCH_DATE + _dt.timedelta(days=local_month_start_ms // DAY_MS)
    nd = _dt.date(d.year + (d.month == 12), d.month % 12 + 1, 1)
    return (nd - _EPOCH_DATE).days * DAY_MS


def check_interval(interval: str) -> int:
    """Return the nominal length in ms of ``interval`` or raise :class:`UnknownInterval`."""
    try:
        return INTERVAL_MS[interval]
    except (KeyError, TypeError):
        raise UnknownInterval(interval) from None


def bucket_open(interval: str, t: int, tz_ms: int = 0) -> int:
    """Open time (ms UTC) of the ``interval`` bucket containing ``t``.

    Buckets follow Binance: fixed-length intervals are aligned to the epoch (in the time zone
    ``tz_ms``, Binance's ``timeZone`` parameter as an offset in ms), ``1w`` starts Monday 00:00,
    ``1M`` on the 1st of the month.
    """
    length = check_interval(interval)
    lt = t + tz_ms
    if interval == "1M":
        start = _month_start(lt)
    elif interval == "1w":
        start = lt - (lt - _MONDAY_0) % WEEK_MS
    else:
        start = lt - lt % length
    return start - tz_ms


def bucket_next(interval: str, open_ms: int, tz_ms: int = 0) -> int:
    """Open time of the bucket after the one opening at ``open_ms`` (= its close time + 1)."""
    if interval == "1M":
        return _next_month_start(open_ms + tz_ms) - tz_ms
    return open_ms + check_interval(interval)


# ------------------------------------------------------------------------------------------------
# result records (E8 ints inside, Decimal properties outside)
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Trade:
    """One replayed trade (Binance ``GET /api/v3/trades`` item / ``@trade`` event).

    ``id``: trade id; ``time``: trade time (replay ms); ``price_e8``/``qty_e8``: price (quote
    asset) and quantity (base asset) in 1e-8 units; ``is_buyer_maker``: the seller was the taker
    (``m``); ``index``: global trade index (``id - TRADE_ID_BASE``).
    """

    id: int
    time: int
    price_e8: int
    qty_e8: int
    is_buyer_maker: bool
    index: int

    @property
    def price(self) -> Decimal:
        """Trade price, quote asset."""
        return from_e8(self.price_e8)

    @property
    def qty(self) -> Decimal:
        """Trade quantity, base asset."""
        return from_e8(self.qty_e8)

    @property
    def quote_qty_e8(self) -> int:
        """price * qty in 1e-8 units of the quote asset, rounded down."""
        return self.price_e8 * self.qty_e8 // E8

    @property
    def quote_qty(self) -> Decimal:
        """price * qty, quote asset, rounded down to 8 decimals."""
        return from_e8(self.quote_qty_e8)


@dataclass(frozen=True, slots=True)
class Kline:
    """One kline (Binance ``GET /api/v3/klines`` row / ``@kline_<i>`` event ``k``).

    ``open_time``/``close_time``: bucket bounds (replay ms; close = next open - 1). Prices in the
    quote asset, ``volume``/``taker_buy_base`` in the base asset, ``quote_volume``/
    ``taker_buy_quote`` in the quote asset (``*_e8`` = 1e-8 units). ``trades``: trade count (``last_trade_id -
    first_trade_id + 1``; a closed 1m kline's is the recorded count). ``first_trade_id``/``last_trade_id``: replay trade ids
    covered so far. ``closed``: the bucket's close time has passed (``x`` in the stream).
    """

    interval: str
    open_time: int
    close_time: int
    open_e8: int
    high_e8: int
    low_e8: int
    close_e8: int
    volume_e8: int
    quote_volume_e8: int
    trades: int
    taker_buy_base_e8: int
    taker_buy_quote_e8: int
    first_trade_id: int
    last_trade_id: int
    closed: bool

    open = property(lambda self: from_e8(self.open_e8), doc="Open price, quote asset.")
    high = property(lambda self: from_e8(self.high_e8), doc="High price, quote asset.")
    low = property(lambda self: from_e8(self.low_e8), doc="Low price, quote asset.")
    close = property(lambda self: from_e8(self.close_e8), doc="Close (last) price, quote asset.")
    volume = property(lambda self: from_e8(self.volume_e8), doc="Volume, base asset.")
    quote_volume = property(lambda self: from_e8(self.quote_volume_e8), doc="Quote volume.")
    taker_buy_base = property(lambda self: from_e8(self.taker_buy_base_e8), doc="Taker buy base.")
    taker_buy_quote = property(lambda self: from_e8(self.taker_buy_quote_e8), doc="Taker buy quote.")

    def ohlcv(self) -> tuple[Decimal, Decimal, Decimal, Decimal, Decimal]:
        """(open, high, low, close, volume) as Decimals."""
        return (self.open, self.high, self.low, self.close, self.volume)


@dataclass(frozen=True, slots=True)
class BookTicker:
    """Best bid/ask (Binance ``GET /api/v3/ticker/bookTicker`` / ``@bookTicker``).

    Prices in the quote asset, quantities in the base asset (``*_e8`` = 1e-8 units);
    ``update_id``: order book update id ``u``; ``time``: replay ms of the book state (the second).
    """

    symbol: str
    bid_price_e8: int
    bid_qty_e8: int
    ask_price_e8: int
    ask_qty_e8: int
    update_id: int
    time: int

    bid_price = property(lambda self: from_e8(self.bid_price_e8), doc="Best bid price.")
    bid_qty = property(lambda self: from_e8(self.bid_qty_e8), doc="Best bid quantity.")
    ask_price = property(lambda self: from_e8(self.ask_price_e8), doc="Best ask price.")
    ask_qty = property(lambda self: from_e8(self.ask_qty_e8), doc="Best ask quantity.")


@dataclass(frozen=True, slots=True)
class Depth:
    """An order book snapshot (Binance ``GET /api/v3/depth``).

    ``bid_levels``/``ask_levels``: tuples of ``(price_e8, qty_e8)``; bids best (highest) first,
    asks best (lowest) first. ``bids``/``asks``: the same as ``(Decimal price, Decimal qty)``.
    """

    symbol: str
    last_update_id: int
    time: int
    bid_levels: tuple[tuple[int, int], ...]
    ask_levels: tuple[tuple[int, int], ...]

    @property
    def bids(self) -> list[tuple[Decimal, Decimal]]:
        """Bid levels as (price, qty) Decimals, highest price first."""
        return [(from_e8(p), from_e8(q)) for p, q in self.bid_levels]

    @property
    def asks(self) -> list[tuple[Decimal, Decimal]]:
        """Ask levels as (price, qty) Decimals, lowest price first."""
        return [(from_e8(p), from_e8(q)) for p, q in self.ask_levels]


@dataclass(frozen=True, slots=True)
class DepthUpdate:
    """A diff-depth event (Binance ``<symbol>@depth`` ``depthUpdate``).

    ``first_update_id`` (``U``) .. ``final_update_id`` (``u``); ``bid_changes``/``ask_changes``:
    ``(price_e8, qty_e8)`` with qty 0 meaning "remove the level"; ``time``: event time (replay ms).
    """

    symbol: str
    first_update_id: int
    final_update_id: int
    time: int
    bid_changes: tuple[tuple[int, int], ...]
    ask_changes: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class Ticker24h:
    """Rolling 24 h statistics (Binance ``GET /api/v3/ticker/24hr``, ``@ticker``/``@miniTicker``).

    Prices in the quote asset, ``volume``/``last_qty``/``bid_qty``/``ask_qty`` in the base asset,
    ``quote_volume`` in the quote asset (``*_e8`` = 1e-8 units). ``price_change_percent`` is a
    Decimal with 3 decimals. ``open_time``/``close_time`` bound the window (replay ms).
    """

    symbol: str
    price_change_e8: int
    price_change_percent: Decimal
    weighted_avg_price_e8: int
    prev_close_price_e8: int
    last_price_e8: int
    last_qty_e8: int
    bid_price_e8: int
    bid_qty_e8: int
    ask_price_e8: int
    ask_qty_e8: int
    open_price_e8: int
    high_price_e8: int
    low_price_e8: int
    volume_e8: int
    quote_volume_e8: int
    open_time: int
    close_time: int
    first_id: int
    last_id: int
    count: int

    last_price = property(lambda self: from_e8(self.last_price_e8), doc="Last trade price.")
    open_price = property(lambda self: from_e8(self.open_price_e8), doc="First trade price in window.")
    high_price = property(lambda self: from_e8(self.high_price_e8), doc="Highest price in window.")
    low_price = property(lambda self: from_e8(self.low_price_e8), doc="Lowest price in window.")
    volume = property(lambda self: from_e8(self.volume_e8), doc="Base volume in window.")
    quote_volume = property(lambda self: from_e8(self.quote_volume_e8), doc="Quote volume in window.")
    price_change = property(lambda self: from_e8(self.price_change_e8), doc="last - open.")
    weighted_avg_price = property(lambda self: from_e8(self.weighted_avg_price_e8), doc="quote/base.")


@dataclass(frozen=True, slots=True)
class AvgPrice:
    """Binance ``GET /api/v3/avgPrice``: ``mins`` window, ``price_e8`` (quote asset, 1e-8 units),
    ``close_time`` = time of the last trade in the window (replay ms)."""

    mins: int
    price_e8: int
    close_time: int

    price = property(lambda self: from_e8(self.price_e8), doc="Average price, quote asset.")


# ------------------------------------------------------------------------------------------------
# per-symbol precomputation
# ------------------------------------------------------------------------------------------------
class _Sym:
    """Everything about one replayed symbol given ``T0`` (the trades come from the cached
    :class:`~replay.trades.TradeTape`, which does not depend on the replay time)."""

    __slots__ = (
        "symbol", "tape", "tt", "spec", "shape", "T0", "offset", "L", "tick", "step", "spread_ticks",
        "near", "deep_bid_offsets", "deep_ask_offsets", "bid_sizes", "ask_sizes", "anchor_ticks",
        "books", "deep", "_lock",
    )

    def __init__(self, symbol: str, tape: Tape, spec: SymbolSpec, shape: BookShape, t0: int, tt: TradeTape):
        self.symbol = symbol
        self.tape = tape
        self.tt = tt
        self.spec = spec
        self.shape = shape
        self.T0 = t0
        self.offset = t0 - tape.first_open_ms
        self.L = tape.length
        self.tick = spec.tick_e8
        self.step = spec.step_e8
        self.spread_ticks = shape.spread_ticks(self.tick)
        # The book beyond the recorded levels: the recorded offsets tiled outwards (each copy one
        # recorded span plus one recorded gap further out), sizes repeated.
        self.near = min(len(shape.bid_offsets_e8), len(shape.ask_offsets_e8))

        def tiled(offsets: tuple[int, ...]) -> tuple[int, ...]:
            n = self.near
            span = offsets[n - 1] + max(offsets[n - 1] - offsets[n - 2] if n > 1 else 0, 1)
            return tuple(offsets[j % n] + (j // n) * span for j in range(n, MAX_DEPTH_LEVELS))

        self.deep_bid_offsets = tiled(shape.bid_offsets_e8)
        self.deep_ask_offsets = tiled(shape.ask_offsets_e8)
        step = self.step

        def on_step(q: int) -> int:  # recorded sizes on today's stepSize (half up, at least one step)
            return max(step, (2 * q + step) // (2 * step) * step)

        self.bid_sizes = tuple(on_step(shape.bid_sizes_e8[j % self.near]) for j in range(MAX_DEPTH_LEVELS))
        self.ask_sizes = tuple(on_step(shape.ask_sizes_e8[j % self.near]) for j in range(MAX_DEPTH_LEVELS))
        mid_ticks = sorted(tt.C)[len(tt.C) // 2]
        self.anchor_ticks = max(1, mid_ticks // DEEP_ANCHOR_FRACTION)
        self.books: dict[int, tuple[list[int], list[int]]] = {}
        self.deep: dict[tuple[int, int], tuple[list[int], list[int]]] = {}
        self._lock = threading.Lock()  # the caches are shared by the server and test threads

    # -- trades: global index g <-> (minute M, candle i, k) ---------------------------------------
    def minute_first(self, m: int) -> int:
        """Global index of the first trade of global minute ``m``."""
        lap, i = divmod(m, self.L)
        return lap * self.tt.per_lap + self.tt.P_n[i]

    def locate(self, g: int) -> tuple[int, int, int]:
        """Global trade index -> (global minute M, candle i, k within the candle)."""
        lap, r = divmod(g, self.tt.per_lap)
        i, k = self.tt.locate(r)
        return lap * self.L + i, i, k

    def index_at(self, t: int) -> int:
        """Global index of the last trade printed at or before replay time ``t`` (>= T0)."""
        m, u = divmod(t - self.T0, MINUTE_MS)
        i = m % self.L
        k = int(np.searchsorted(self.tt.minute(i).offset_ms, u, side="right")) - 1
        return self.minute_first(m) + k

    def first_at_or_after(self, t: int) -> int:
        """Global index of the first trade printed at or after ``t`` (0 when ``t <= T0``)."""
        return 0 if t <= self.T0 else self.index_at(t - 1) + 1

    def trade(self, g: int) -> Trade:
        m, i, k = self.locate(g)
        mt = self.tt.minute(i)
        return Trade(
            id=TRADE_ID_BASE + g,
            time=self.T0 + m * MINUTE_MS + int(mt.offset_ms[k]),
            price_e8=int(mt.price_ticks[k]) * self.tick,
            qty_e8=int(mt.qty_e8[k]),
            is_buyer_maker=not bool(mt.buy[k]),
            index=g,
        )

    def price_at(self, g: int) -> int:
        """Trade price (ticks) at global trade index ``g``."""
        _m, i, k = self.locate(g)
        return int(self.tt.minute(i).price_ticks[k])

    def bid_at_second(self, s: int) -> int:
        """Best bid (ticks) of the book of replay second ``s``: the last trade price at its start."""
        return self.price_at(self.index_at(self.T0 + s * SECOND_MS))

    # -- O(1) range aggregates over global minutes ---------------------------------------------
    def _F(self, prefix: list[int], m: int) -> int:
        lap, i = divmod(m, self.L)
        return lap * prefix[self.L] + prefix[i]

    def full(self, ma: int, mb: int) -> list[int]:
        """Aggregate of whole global minutes ``ma..mb``: [o, h, l, c, v, q, n, tbb, tbq] (E8/int)."""
        tt, L = self.tt, self.L
        if mb - ma + 1 >= L:
            h, lo = tt.max_high, tt.min_low
        else:
            ia, ib = ma % L, mb % L
            if ia <= ib:
                h, lo = tt.range_high(ia, ib), tt.range_low(ia, ib)
            else:
                h = max(tt.range_high(ia, L - 1), tt.range_high(0, ib))
                lo = min(tt.range_low(ia, L - 1), tt.range_low(0, ib))
        F = self._F
        return [
            int(tt.minute(ma % L).price_ticks[0]) * self.tick, h, lo,
            int(tt.minute(mb % L).price_ticks[-1]) * self.tick,
            F(tt.P_v, mb + 1) - F(tt.P_v, ma),
            F(tt.P_q, mb + 1) - F(tt.P_q, ma),
            F(tt.P_n, mb + 1) - F(tt.P_n, ma),
            F(tt.P_tbb, mb + 1) - F(tt.P_tbb, ma),
            F(tt.P_tbq, mb + 1) - F(tt.P_tbq, ma),
        ]

    def partial(self, m: int, a: int, b: int) -> list[int]:
        """Aggregate of trades ``a..b`` (inclusive, positions in the candle) of global minute ``m``."""
        i = m % self.L
        mt = self.tt.minute(i)
        if a == 0 and b == len(mt.price_ticks) - 1:
            return self.full(m, m)
        pr = mt.price_ticks[a:b + 1]
        tick = self.tick
        return [
            int(pr[0]) * tick, int(pr.max()) * tick, int(pr.min()) * tick, int(pr[-1]) * tick,
            int(mt.cum_qty[b + 1] - mt.cum_qty[a]),
            int(mt.cum_quote[b + 1] - mt.cum_quote[a]),
            b - a + 1,
            int(mt.cum_buy_qty[b + 1] - mt.cum_buy_qty[a]),
            int(mt.cum_buy_quote[b + 1] - mt.cum_buy_quote[a]),
        ]

    def agg(self, g0: int, g1: int) -> list[int]:
        """Aggregate over global trade indices ``g0..g1`` (inclusive, ``0 <= g0 <= g1``)."""
        ma, _, ka = self.locate(g0)
        mb, ib, kb = self.locate(g1)
        if ma == mb:
            return self.partial(ma, ka, kb)
        parts = []
        if ka:
            parts.append(self.partial(ma, ka, self.tt.N[ma % self.L] - 1))
            ma += 1
        tail = None
        if kb != self.tt.N[ib] - 1:
            tail = self.partial(mb, 0, kb)
            mb -= 1
        if ma <= mb:
            parts.append(self.full(ma, mb))
        if tail is not None:
            parts.append(tail)
        out = parts[0]
        for p in parts[1:]:
            out = [
                out[0], max(out[1], p[1]), min(out[2], p[2]), p[3],
                out[4] + p[4], out[5] + p[5], out[6] + p[6], out[7] + p[7], out[8] + p[8],
            ]
        return out

    # -- order book ----------------------------------------------------------------------------
    def _deep(self, bid: int) -> tuple[list[int], list[int]]:
        """Levels beyond the recorded ones, re-centred on a coarse anchor (the bid rounded down to
        ``anchor_ticks``) so that they move only when the price crosses an anchor line."""
        q = self.anchor_ticks
        a_bid = bid - bid % q
        a_ask = a_bid + q + self.spread_ticks
        key = (a_bid, a_ask)
        cached = self.deep.get(key)
        if cached is not None:
            return cached
        m2 = self.shape.mid2_e8
        s2 = 2 * (a_bid + q) + self.spread_ticks  # 2 x the highest mid the anchor band allows
        bids: list[int] = []
        prev = a_bid
        for d in self.deep_bid_offsets:
            p = min(a_bid + (d * s2 // -m2), prev - 1)  # strictly descending, like the recorded ones
            if p <= 0:
                break
            bids.append(p)
            prev = p
        asks: list[int] = []
        prev = a_ask
        for d in self.deep_ask_offsets:
            p = max(a_ask - (d * s2 // -m2), prev + 1)
            asks.append(p)
            prev = p
        return self._cached(self.deep, key, (bids, asks))

    def book(self, s: int) -> tuple[list[int], list[int]]:
        """(bid prices, ask prices) in ticks of the book of replay second ``s``, best first (cached;
        up to :data:`MAX_DEPTH_LEVELS` a side)."""
        cached = self.books.get(s)  # dict.get is atomic under the GIL
        if cached is not None:
            return cached
        bid = self.bid_at_second(s)
        ask = bid + self.spread_ticks
        shape = self.shape
        s2 = bid + ask  # 2 * mid_now, in ticks
        m2 = shape.mid2_e8  # 2 * mid_rec, in E8
        # offset_now (ticks) = d_e8 * mid_now / mid_rec / tick = d_e8 * s2 / m2
        deep_b, deep_a = self._deep(bid)
        bids: list[int] = []
        prev = bid + 1
        for d in shape.bid_offsets_e8[:self.near]:
            p = bid + (d * s2 // -m2) if d else bid  # bid - ceil(d*s2/m2): rounds the price down
            if p >= prev:
                p = prev - 1
            if p <= 0:
                break
            bids.append(p)
            prev = p
        if len(bids) == self.near:
            if deep_b and deep_b[0] < prev:
                bids.extend(p for p in deep_b if p > 0)
            else:
                for p in deep_b:
                    if p >= prev:
                        p = prev - 1
                    if p <= 0:
                        break
                    bids.append(p)
                    prev = p
        asks: list[int] = []
        prev = ask - 1
        for d in shape.ask_offsets_e8[:self.near]:
            p = ask - (d * s2 // -m2) if d else ask  # ask + ceil(d*s2/m2): rounds the price up
            if p <= prev:
                p = prev + 1
            asks.append(p)
            prev = p
        if deep_a and deep_a[0] > prev:
            asks.extend(deep_a)
        else:
            for p in deep_a:
                if p <= prev:
                    p = prev + 1
                asks.append(p)
                prev = p
        return self._cached(self.books, s, (bids, asks))

    def _cached(self, cache: dict, key, result):
        """Store ``result`` under ``key`` in ``cache`` (oldest entries out beyond ``_BOOK_CACHE``)
        and return it."""
        with self._lock:
            while len(cache) >= _BOOK_CACHE:
                cache.pop(next(iter(cache)))
            cache[key] = result
        return result


# ------------------------------------------------------------------------------------------------
# the model
# ------------------------------------------------------------------------------------------------
class ReplayModel:
    """Deterministic replayed market for every symbol with a tape.

    Args:
        start_wall_ms: the replay start (ms since epoch UTC); the candle at index
            ``history_minutes`` opens at ``floor_minute(start_wall_ms)``. Use the same value as the
            :class:`~replay.clock.ReplayClock`'s ``start_wall_ms``.
        history_minutes: closed minutes of history before the start (default 600).
        symbols: subset of :func:`~replay.tape.replayed_symbols` (default: all).
        data_dir: override of the bundled data directory (tests).

    Every query takes the replay time ``t`` (ms) explicitly; nothing depends on the wall clock.
    Raises :class:`UnknownSymbol` for a symbol without a tape and :class:`NoData` for ``t < T0``.
    """

    def __init__(
        self,
        start_wall_ms: int,
        history_minutes: int = 600,
        symbols: Iterable[str] | None = None,
        data_dir: str | None = None,
    ):
        if history_minutes < 0:
            raise ValueError("history_minutes must be >= 0")
        self.start_wall_ms = int(start_wall_ms)
        self.history_minutes = int(history_minutes)
        names = sorted(symbols) if symbols is not None else replayed_symbols()
        t0 = floor_minute(self.start_wall_ms) - self.history_minutes * MINUTE_MS
        self._syms: dict[str, _Sym] = {}
        for name in names:
            tape = load_tape(name, data_dir)
            self._syms[name] = _Sym(name, tape, symbol_spec(name, data_dir), book_shape(name, data_dir), t0,
                                    trade_tape(name, data_dir))
        self.symbols: tuple[str, ...] = tuple(self._syms)

    # -- metadata ----------------------------------------------------------------------------------
    def _sym(self, symbol: str) -> _Sym:
        try:
            return self._syms[symbol]
        except KeyError:
            raise UnknownSymbol(symbol) from None

    def has_symbol(self, symbol: str) -> bool:
        """True if ``symbol`` (upper case, e.g. ``"BTCUSDT"``) is replayed."""
        return symbol in self._syms

    def tape(self, symbol: str) -> Tape:
        """The recorded :class:`~replay.tape.Tape` of ``symbol``."""
        return self._sym(symbol).tape

    def spec(self, symbol: str) -> SymbolSpec:
        """tickSize/stepSize etc. of ``symbol`` (recorded exchangeInfo)."""
        return self._sym(symbol).spec

    def tape_start_ms(self, symbol: str) -> int:
        """``T0``: replay open time of the tape's first candle (nothing exists before it)."""
        return self._sym(symbol).T0

    def offset_ms(self, symbol: str) -> int:
        """Replay time minus recording time (``T0 - first recorded open time``), first lap."""
        return self._sym(symbol).offset

    def shift(self, symbol: str, recorded_ms: int, lap: int = 0) -> int:
        """Replay time of a recording timestamp ``recorded_ms`` in lap ``lap`` (0 = first)."""
        sr = self._sym(symbol)
        return recorded_ms + sr.offset + lap * sr.tape.length_ms

    def spread_ticks(self, symbol: str) -> int:
        """Bid/ask spread in ticks (from the recorded depth snapshot)."""
        return self._sym(symbol).spread_ticks

    # -- indices ---------------------------------------------------------------------------------
    def trade_index(self, symbol: str, t: int) -> int:
        """Global trade index of the last trade printed at or before replay time ``t`` (trade id
        ``TRADE_ID_BASE + index``)."""
        sr = self._sym(symbol)
        if t < sr.T0:
            raise NoData(f"{symbol}: replay time {t} is before the first replayed minute {sr.T0}")
        return sr.index_at(t)

    def trade_time(self, symbol: str, index: int) -> int:
        """Replay time (ms) of the trade with global index ``index``."""
        return self._sym(symbol).trade(index).time

    def book_index(self, symbol: str, t: int) -> int:
        """Replay second of ``t`` counted from ``T0`` (the book changes on whole seconds)."""
        sr = self._sym(symbol)
        if t < sr.T0:
            raise NoData(f"{symbol}: replay time {t} is before the first replayed minute {sr.T0}")
        return (t - sr.T0) // SECOND_MS

    def book_time(self, symbol: str, index: int) -> int:
        """Replay time (ms) at which the book of replay second ``index`` takes effect."""
        return self._sym(symbol).T0 + index * SECOND_MS

    def update_id(self, symbol: str, t: int) -> int:
        """Order book update id at replay time ``t`` (bookTicker ``u``, depth ``lastUpdateId``)."""
        return UPDATE_ID_BASE + self.book_index(symbol, t)

    # -- trades ----------------------------------------------------------------------------------
    def trade_at_index(self, symbol: str, index: int) -> Trade:
        """The trade with global index ``index`` (>= 0), whether or not it is printed yet."""
        return self._sym(symbol).trade(index)

    def trade(self, symbol: str, trade_id: int) -> Trade:
        """The trade with id ``trade_id`` (``>= TRADE_ID_BASE``)."""
        if trade_id < TRADE_ID_BASE:
            raise NoData(f"trade id {trade_id} < {TRADE_ID_BASE}")
        return self.trade_at_index(symbol, trade_id - TRADE_ID_BASE)

    def last_trade(self, symbol: str, t: int) -> Trade:
        """The most recent trade printed at replay time ``t``."""
        return self.trade_at_index(symbol, self.trade_index(symbol, t))

    def price(self, symbol: str, t: int) -> Decimal:
        """Last trade price (quote asset) at replay time ``t``."""
        return self.last_trade(symbol, t).price

    def recent_trades(self, symbol: str, t: int, limit: int = 500) -> list[Trade]:
        """The last ``limit`` trades printed at replay time ``t``, oldest first (``GET /trades``)."""
        sr = self._sym(symbol)
        g = self.trade_index(symbol, t)
        return [sr.trade(k) for k in range(max(0, g - limit + 1), g + 1)]

    def trades_from_id(self, symbol: str, t: int, from_id: int, limit: int = 500) -> list[Trade]:
        """Up to ``limit`` printed trades with id >= ``from_id``, oldest first."""
        sr = self._sym(symbol)
        g = self.trade_index(symbol, t)
        start = max(0, from_id - TRADE_ID_BASE)
        return [sr.trade(k) for k in range(start, min(g, start + limit - 1) + 1)]

    def trades_between(
        self, symbol: str, t: int, start_ms: int | None, end_ms: int | None, limit: int = 500
    ) -> list[Trade]:
        """Printed trades with ``start_ms <= time <= end_ms`` (either bound optional), oldest
        first, at most ``limit`` (from ``start_ms`` if given, else the last ones before ``end_ms``)."""
        sr = self._sym(symbol)
        g = self.trade_index(symbol, t)
        if end_ms is not None:
            if end_ms < sr.T0:
                return []
            g = min(g, sr.index_at(end_ms))
        if start_ms is None:
            lo = max(0, g - limit + 1)
        else:
            lo = sr.first_at_or_after(start_ms)
            g = min(g, lo + limit - 1)
        return [sr.trade(k) for k in range(lo, g + 1)]

    # -- book --------------------------------------------------------------------------------------
    def book_ticker(self, symbol: str, t: int) -> BookTicker:
        """Best bid/ask at replay time ``t``: bid = the last trade price at the start of the
        current replay second, ask = bid + spread."""
        sr = self._sym(symbol)
        s = self.book_index(symbol, t)
        bid = sr.bid_at_second(s)
        return BookTicker(
            symbol=symbol,
            bid_price_e8=bid * sr.tick,
            bid_qty_e8=sr.bid_sizes[0],
            ask_price_e8=(bid + sr.spread_ticks) * sr.tick,
            ask_qty_e8=sr.ask_sizes[0],
            update_id=UPDATE_ID_BASE + s,
            time=sr.T0 + s * SECOND_MS,
        )

    def depth_at_second(self, symbol: str, index: int, limit: int = 100) -> Depth:
        """Order book of replay second ``index`` (see :meth:`book_index`), up to ``limit`` levels a
        side (at most :data:`MAX_DEPTH_LEVELS`)."""
        sr = self._sym(symbol)
        bids, asks = sr.book(index)
        tick = sr.tick
        n = max(0, limit)
        return Depth(
            symbol=symbol,
            last_update_id=UPDATE_ID_BASE + index,
            time=sr.T0 + index * SECOND_MS,
            bid_levels=tuple((p * tick, q) for p, q in zip(bids[:n], sr.bid_sizes)),
            ask_levels=tuple((p * tick, q) for p, q in zip(asks[:n], sr.ask_sizes)),
        )

    def depth(self, symbol: str, t: int, limit: int = 100) -> Depth:
        """Order book at replay time ``t`` (``GET /api/v3/depth``), up to ``limit`` levels a side."""
        return self.depth_at_second(symbol, self.book_index(symbol, t), limit)

    def depth_at_index(self, symbol: str, index: int, limit: int = 100) -> Depth:
        """The order book the trade with global index ``index`` met (the book of its second)."""
        sr = self._sym(symbol)
        return self.depth_at_second(symbol, (sr.trade(index).time - sr.T0) // SECOND_MS, limit)

    def depth_update(self, symbol: str, index: int) -> DepthUpdate:
        """Diff between the books of replay seconds ``index - 1`` and ``index`` (``depthUpdate``);
        empty when the price did not move. ``U`` (``first_update_id``) is one past the last second
        whose book changed, so the events that are sent chain ``U = previous u + 1`` as on Binance."""
        sr = self._sym(symbol)
        tick = sr.tick
        cur_b, cur_a = sr.book(index)
        if index > 0:
            prev_b, prev_a = sr.book(index - 1)
        else:
            prev_b, prev_a = [], []

        def diff(cur, prev, sizes, reverse):
            n = sr.near
            if len(cur) > n and cur[n:] == prev[n:]:  # the levels beyond the recorded ones held
                cur, prev = cur[:n], prev[:n]
            old = dict(zip(prev, sizes))
            new = dict(zip(cur, sizes))
            get = old.get
            ch = [(p, q) for p, q in new.items() if get(p) != q]
            ch.extend([(p, 0) for p in old if p not in new])
            ch.sort(reverse=reverse)
            return tuple([(p * tick, q) for p, q in ch])

        # Seconds whose price did not move leave the book as it was: no event is sent for them
        # (streams.py), so this event's first update id follows the previous event's last one.
        first = index
        while first > 1 and index - first < 3600 and sr.bid_at_second(first - 1) == sr.bid_at_second(first - 2):
            first -= 1
        uid = UPDATE_ID_BASE + index
        return DepthUpdate(
            symbol=symbol,
            first_update_id=UPDATE_ID_BASE + first,
            final_update_id=uid,
            time=sr.T0 + index * SECOND_MS,
            bid_changes=diff(cur_b, prev_b, sr.bid_sizes, True),
            ask_changes=diff(cur_a, prev_a, sr.ask_sizes, False),
        )

    # -- klines ------------------------------------------------------------------------------------
    def _kline(self, sr: _Sym, interval: str, b0: int, g_end: int, closed_at: int, tz_ms: int) -> Kline:
        b1 = bucket_next(interval, b0, tz_ms)
        g0 = sr.minute_first((max(b0, sr.T0) - sr.T0) // MINUTE_MS)
        g1 = min(sr.minute_first((b1 - sr.T0) // MINUTE_MS) - 1, g_end)
        o, h, lo, c, v, q, n, tbb, tbq = sr.agg(g0, g1)
        return Kline(
            interval=interval,
            open_time=b0,
            close_time=b1 - 1,
            open_e8=o, high_e8=h, low_e8=lo, close_e8=c,
            volume_e8=v, quote_volume_e8=q, trades=n,
            taker_buy_base_e8=tbb, taker_buy_quote_e8=tbq,
            first_trade_id=TRADE_ID_BASE + g0,
            last_trade_id=TRADE_ID_BASE + g1,
            closed=closed_at >= b1 - 1,
        )

    def kline(self, symbol: str, interval: str, t: int, tz_ms: int = 0) -> Kline:
        """The ``interval`` kline containing replay time ``t``, as it stands at ``t``: the trades
        printed at or before ``t``."""
        sr = self._sym(symbol)
        g = self.trade_index(symbol, t)
        return self._kline(sr, interval, bucket_open(interval, t, tz_ms), g, t, tz_ms)

    def kline_event_time(self, symbol: str, interval: str, index: int, tz_ms: int = 0) -> int:
        """Event time of the kline stream's update for replay second ``index``: the second's start,
        or the bucket's close time (open + interval - 1) for the bucket's last second (the
        ``x: true`` update)."""
        sr = self._sym(symbol)
        ts = sr.T0 + index * SECOND_MS
        b1 = bucket_next(interval, bucket_open(interval, ts, tz_ms), tz_ms)
        return b1 - 1 if ts + SECOND_MS >= b1 else ts

    def kline_at_index(self, symbol: str, interval: str, index: int, tz_ms: int = 0) -> Kline:
        """The kline stream's update for replay second ``index``: :meth:`kline` at
        :meth:`kline_event_time`."""
        return self.kline(symbol, interval, self.kline_event_time(symbol, interval, index, tz_ms), tz_ms)

    def klines(
        self,
        symbol: str,
        interval: str,
        t: int,
        start_time: int | None = None,
        end_time: int | None = None,
        limit: int = 500,
        tz_ms: int = 0,
    ) -> list[Kline]:
        """Klines as ``GET /api/v3/klines`` returns them at replay time ``t``.

        Buckets with ``open_time >= start_time`` (if given) and ``open_time <= min(end_time, t)``,
        oldest first, at most ``limit``: the first ``limit`` from ``start_time`` when it is given,
        else the most recent ``limit``. The last one may be forming (``closed`` false).
        """
        sr = self._sym(symbol)
        length = check_interval(interval)
        g = self.trade_index(symbol, t)
        if limit <= 0:
            return []
        hi = t if end_time is None else min(end_time, t)
        first = bucket_open(interval, sr.T0, tz_ms)
        if hi < first:
            return []
        if start_time is not None:
            b = bucket_open(interval, start_time, tz_ms)
            if b < start_time:
                b = bucket_next(interval, b, tz_ms)
            b = max(b, first)
        else:
            last = bucket_open(interval, hi, tz_ms)
            if interval == "1M":
                b = last
                for _ in range(limit - 1):
                    if b <= first:
                        break
                    b = bucket_open(interval, b - 1, tz_ms)
            else:
                b = max(first, last - (limit - 1) * length)
        out: list[Kline] = []
        while b <= hi and len(out) < limit:
            out.append(self._kline(sr, interval, b, g, t, tz_ms))
            b = bucket_next(interval, b, tz_ms)
        return out

    def recorded_kline(self, symbol: str, minute_open_ms: int) -> Kline:
        """The recorded 1m candle replayed at ``minute_open_ms`` (replay time), verbatim from the
        tape row (independent of the trade derivation), with the replay's trade ids
        (``first_trade_id``/``last_trade_id`` of the minute's trades). A closed replayed 1m kline
        has its open, high, low, close and trade count; its volumes are the sums of its trades (see
        ``trades.py``: volumes on today's step, quote volumes at the replayed prices)."""
        sr = self._sym(symbol)
        if minute_open_ms < sr.T0 or (minute_open_ms - sr.T0) % MINUTE_MS:
            raise NoData(f"{minute_open_ms} is not a replayed minute open of {symbol}")
        m = (minute_open_ms - sr.T0) // MINUTE_MS
        t = sr.tape
        i = m % sr.L
        first = sr.minute_first(m)
        return Kline(
            interval="1m",
            open_time=minute_open_ms,
            close_time=minute_open_ms + MINUTE_MS - 1,
            open_e8=t.o[i], high_e8=t.h[i], low_e8=t.l[i], close_e8=t.c[i],
            volume_e8=t.v[i], quote_volume_e8=t.q[i], trades=t.n[i],
            taker_buy_base_e8=t.tbb[i], taker_buy_quote_e8=t.tbq[i],
            first_trade_id=TRADE_ID_BASE + first,
            last_trade_id=TRADE_ID_BASE + first + sr.tt.N[i] - 1,
            closed=True,
        )

    # -- tickers -------------------------------------------------------------------------------------
    def _window(self, sr: _Sym, g_end: int, t: int, span_ms: int) -> tuple[int, list[int]]:
        g0 = min(sr.first_at_or_after(t - span_ms), g_end)
        return g0, sr.agg(g0, g_end)

    def ticker_24h(self, symbol: str, t: int) -> Ticker24h:
        """Rolling 24 h statistics at replay time ``t`` (window clipped at ``T0``)."""
        sr = self._sym(symbol)
        g = self.trade_index(symbol, t)
        g0, (o, h, lo, c, v, q, _n, _tbb, _tbq) = self._window(sr, g, t, DAY_MS)
        prev = sr.price_at(g0 - 1) * sr.tick if g0 > 0 else o
        bt = self.book_ticker(symbol, t)
        change = c - o
        pct = (Decimal(change) * 100 / Decimal(o)).quantize(Decimal("0.001"), ROUND_HALF_UP) if o else Decimal("0.000")
        wavg = q * E8 // v if v else 0
        return Ticker24h(
            symbol=symbol,
            price_change_e8=change,
            price_change_percent=pct,
            weighted_avg_price_e8=wavg,
            prev_close_price_e8=prev,
            last_price_e8=c,
            last_qty_e8=sr.trade(g).qty_e8,
            bid_price_e8=bt.bid_price_e8,
            bid_qty_e8=bt.bid_qty_e8,
            ask_price_e8=bt.ask_price_e8,
            ask_qty_e8=bt.ask_qty_e8,
            open_price_e8=o,
            high_price_e8=h,
            low_price_e8=lo,
            volume_e8=v,
            quote_volume_e8=q,
            open_time=max(t - DAY_MS, sr.T0),
            close_time=t,
            first_id=TRADE_ID_BASE + g0,
            last_id=TRADE_ID_BASE + g,
            count=g - g0 + 1,
        )

    def avg_price(self, symbol: str, t: int, mins: int = 5) -> AvgPrice:
        """Average price over the trailing ``mins`` minutes (``GET /api/v3/avgPrice``):
        quote volume / volume of the trades in ``[t - mins*60000, t]``, rounded down to 8 decimals."""
        sr = self._sym(symbol)
        g = self.trade_index(symbol, t)
        _g0, agg = self._window(sr, g, t, mins * MINUTE_MS)
        v, q = agg[4], agg[5]
        price = q * E8 // v if v else agg[3]
        return AvgPrice(mins=mins, price_e8=price, close_time=sr.trade(g).time)


__all__ = [
    "KLINE_INTERVALS",
    "INTERVAL_MS",
    "MAX_DEPTH_LEVELS",
    "ORDER_ID_BASE",
    "TRADE_ID_BASE",
    "UPDATE_ID_BASE",
    "AvgPrice",
    "BookTicker",
    "Depth",
    "DepthUpdate",
    "Kline",
    "NoData",
    "ReplayError",
    "ReplayModel",
    "Ticker24h",
    "Trade",
    "UnknownInterval",
    "UnknownSymbol",
    "bucket_next",
    "bucket_open",
    "check_interval",
    "floor_minute",
]
