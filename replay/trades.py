"""The replayed trades of a tape: what happens inside each recorded 1m candle.

Binance's kline dumps say how much traded in a minute (``volume``, ``trades``, taker-buy volume)
but not the trades themselves. This module derives them, deterministically and independently of
the replay time (every lap of the tape replays the same trades), so that the trades, the klines
built from them and the book agree the way they do on Binance (measured on the recorded
``@aggTrade``/``@kline_1m`` sessions, ``tests/replay/test_replay_tape.py``):

* every trade's quantity is a multiple of the served ``LOT_SIZE.stepSize`` and its price is on
  ``PRICE_FILTER.tickSize``;
* a candle's ``n`` is its number of trades and its trade ids are contiguous (``n = L - f + 1``);
  ``v``/``q`` are the sums of its trades' ``qty``/``quoteQty`` and ``V``/``Q`` the same over the
  trades whose buyer was the taker (``m`` false), for a forming candle too.

Rules, per recorded candle ``i`` (``step``/``tick`` from the served exchangeInfo):

* **Volume.** ``VS`` = the recorded volume in steps, rounded half up (BTCUSDT's 2020 volumes have
  6 decimals, today's step is 0.00001); taker-buy steps ``BS`` = the recorded taker-buy volume
  likewise, at most ``VS``; ``SS = VS - BS`` taker-sell steps.
* **Count.** ``N`` = the recorded trade count, at most ``VS`` (a trade is at least one step) and at
  least 1 (``VS`` is raised to ``N`` if needed). ``NB`` taker-buy trades: ``N * BS / VS`` rounded
  half up, kept so that each side with steps has a trade and each trade a step.
* **Sides.** Trade ``k`` (``0..N-1``) is a taker buy when ``floor((k+1)*NB/N) > floor(k*NB/N)``
  (the buys spread evenly through the minute).
* **Sizes.** Each side's steps are shared among its trades: one step each, the rest in proportion
  to the recorded sizes of that side (:class:`~replay.refdata.TradeFlow`, cycled from an offset that
  depends on ``i``), with cumulative flooring so that the side sums exactly to ``BS``/``SS``.
* **Times.** Trade ``k`` prints at ``minute_open + floor(60000 * G(k) / (G(N) + 1))`` where ``G`` is
  the cumulative recorded inter-trade gap (cycled from an offset): the recorded bursts (several
  trades in one ms) and lulls, stretched over the minute. The first trade prints at the minute open.
* **Prices.** A path through the trades: open (k = 0) -> the extreme nearer to the open (k =
  round((N-1)/3)) -> the other extreme (k = round(2(N-1)/3)) -> close (k = N-1), linear in ``k``
  in between, rounded half up to the tick ("nearer" as |high-open| vs |open-low|; on a tie the low
  first when close >= open). With ``N >= 4`` it touches the recorded open, high, low and close.
* **quoteQty** = ``price * qty`` rounded down to 8 decimals, per trade.

:class:`TradeTape` keeps per-candle totals (prefix sums, sparse tables) for O(1) aggregates over
whole minutes, and builds one candle's trade arrays (numpy) on demand, cached.
"""
from __future__ import annotations

import threading
from bisect import bisect_right
from dataclasses import dataclass
from functools import lru_cache
from math import gcd

import numpy as np

from .refdata import SymbolSpec, TradeFlow, symbol_spec, trade_flow
from .tape import E8, MINUTE_MS, Tape, prefix_sums, sparse_query, sparse_table, load_tape

_MINUTE_CACHE = 128  # candles whose trade arrays are kept (a candle has up to ~10k trades)
_PHASE_MUL = 7919  # a prime: consecutive candles start the recorded flow at unrelated offsets


@dataclass(frozen=True, slots=True)
class MinuteTrades:
    """The trades of one recorded candle, as numpy int64 arrays of length ``N`` (``buy`` bool).

    ``offset_ms``: print time minus the minute open; ``price_ticks``: price in ticks;
    ``qty_e8``/``quote_e8``: quantity (base asset) and quoteQty (quote asset) in 1e-8 units;
    ``buy``: the buyer was the taker (``m`` false). ``cum_*``: prefix sums of length ``N + 1``
    (``cum[k]`` = sum of trades ``0..k-1``) of qty, quote, taker-buy qty and taker-buy quote.
    """

    offset_ms: np.ndarray
    price_ticks: np.ndarray
    qty_e8: np.ndarray
    quote_e8: np.ndarray
    buy: np.ndarray
    cum_qty: np.ndarray
    cum_quote: np.ndarray
    cum_buy_qty: np.ndarray
    cum_buy_quote: np.ndarray


def _cum(values: np.ndarray) -> np.ndarray:
    out = np.zeros(len(values) + 1, dtype=values.dtype)
    np.cumsum(values, out=out[1:])
    return out


class _Cycle:
    """Cumulative sums over a sequence of positive weights repeated forever, from an offset."""

    def __init__(self, weights):
        self.w = np.asarray(weights, dtype=np.int64)
        self.n = len(self.w)
        self.P = _cum(self.w)
        self.total = int(self.P[-1])

    def cum(self, j: np.ndarray, phase: int) -> np.ndarray:
        """Sum of the weights at positions ``phase .. phase + j - 1`` (cyclic), for each ``j``."""
        phase %= self.n
        x = j + phase
        return (x // self.n) * self.total + self.P[x % self.n] - int(self.P[phase])


def _split(steps: int, count: int, cycle: _Cycle, phase: int, step_e8: int) -> np.ndarray:
    """``count`` quantities (E8) summing to ``steps`` steps: one step each plus the rest in
    proportion to the cycled weights (cumulative flooring keeps the sum exact)."""
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    extra = steps - count
    j = np.arange(count + 1, dtype=np.int64)
    cw = cycle.cum(j, phase)
    denom = int(cw[-1])
    if extra * denom < 2**62:
        alloc = (extra * cw) // denom
    else:  # exact arithmetic for extreme volumes
        alloc = np.array([extra * int(c) // denom for c in cw], dtype=object).astype(np.int64)
    return (1 + np.diff(alloc)) * step_e8


def _round_div(a: int, b: int) -> int:
    """a / b rounded half up (a >= 0, b > 0)."""
    return (2 * a + b) // (2 * b)


class TradeTape:
    """The replayed trades of one symbol's tape (see the module docstring for the rules).

    Per candle ``i`` (0-based, recording order): ``N[i]`` trades, totals ``v/q/tbb/tbq`` (E8)
    and ``h/l`` (E8, from the trades); prefix sums ``P_n, P_v, P_q, P_tbb, P_tbq`` (length ``L+1``)
    and sparse tables for :meth:`range_high`/:meth:`range_low`. ``per_lap`` = trades in one lap.
    :meth:`minute` gives a candle's trades; :meth:`locate` maps a lap-relative trade number to
    ``(candle, k)``.
    """

    def __init__(self, tape: Tape, spec: SymbolSpec, flow: TradeFlow):
        self.tape, self.spec, self.flow = tape, spec, flow
        self.L = tape.length
        self.tick = spec.tick_e8
        self.step = spec.step_e8
        g = gcd(self.tick * self.step, E8)
        self._qmul, self._qdiv = self.tick * self.step // g, E8 // g
        self._buys, self._sells, self._gaps = _Cycle(flow.buy_weights), _Cycle(flow.sell_weights), _Cycle(flow.gaps_ms)
        tick = self.tick

        def to_ticks(e8: int) -> int:  # round half up onto the tick grid
            return (2 * e8 + tick) // (2 * tick)

        self.O, self.X1, self.X2, self.C = [], [], [], []
        for o, h, lo, c in zip(tape.o, tape.h, tape.l, tape.c):
            o, h, lo, c = to_ticks(o), to_ticks(h), to_ticks(lo), to_ticks(c)
            up, down = h - o, o - lo
            low_first = down < up or (down == up and c >= o)
            self.O.append(o)
            self.X1.append(lo if low_first else h)
            self.X2.append(h if low_first else lo)
            self.C.append(c)
        self.N, self.VS, self.BS, self.NB = [], [], [], []
        for i in range(self.L):
            vs = _round_div(tape.v[i], self.step)
            n = max(1, min(tape.n[i], vs))
            vs = max(vs, n)
            bs = min(_round_div(tape.tbb[i], self.step), vs)
            ss = vs - bs
            if n == 1 and bs and ss:  # one trade cannot be both: it takes the larger side's steps
                bs, ss = (vs, 0) if bs >= ss else (0, vs)
            lo = max(1 if bs else 0, n - ss)
            hi = min(bs, n - (1 if ss else 0))
            nb = min(max(_round_div(n * bs, vs), lo), hi)
            self.N.append(n)
            self.VS.append(vs)
            self.BS.append(bs)
            self.NB.append(nb)
        self._cache: dict[int, MinuteTrades] = {}
        self._lock = threading.Lock()
        self.v, self.q, self.tbb, self.tbq, self.h, self.l = [], [], [], [], [], []
        for i in range(self.L):
            mt = self._build(i)
            self.v.append(int(mt.cum_qty[-1]))
            self.q.append(int(mt.cum_quote[-1]))
            self.tbb.append(int(mt.cum_buy_qty[-1]))
            self.tbq.append(int(mt.cum_buy_quote[-1]))
            self.h.append(int(mt.price_ticks.max()) * tick)
            self.l.append(int(mt.price_ticks.min()) * tick)
        self.P_n = prefix_sums(self.N)
        self.P_v, self.P_q = prefix_sums(self.v), prefix_sums(self.q)
        self.P_tbb, self.P_tbq = prefix_sums(self.tbb), prefix_sums(self.tbq)
        self.per_lap = self.P_n[-1]
        self._hi = sparse_table(self.h, max)
        self._lo = sparse_table(self.l, min)
        self.max_high, self.min_low = max(self.h), min(self.l)

    # -- one candle ------------------------------------------------------------------------------
    def _path(self, i: int, k: np.ndarray, n: int) -> np.ndarray:
        a1, a2, a3 = _round_div(n - 1, 3), _round_div(2 * (n - 1), 3), n - 1
        out = np.empty(n, dtype=np.int64)
        for lo, hi, pa, pb in ((0, a1, self.O[i], self.X1[i]), (a1, a2, self.X1[i], self.X2[i]),
                               (a2, a3, self.X2[i], self.C[i])):
            sel = (k >= lo) & (k <= hi)
            if hi == lo:
                out[sel] = pb
            else:
                d = hi - lo
                out[sel] = pa + (2 * (pb - pa) * (k[sel] - lo) + d) // (2 * d)
        return out

    def _build(self, i: int) -> MinuteTrades:
        n, nb = self.N[i], self.NB[i]
        k = np.arange(n, dtype=np.int64)
        before = (k * nb) // n
        buy = ((k + 1) * nb) // n > before
        phase = i * _PHASE_MUL
        qty = np.empty(n, dtype=np.int64)
        qty[buy] = _split(self.BS[i], nb, self._buys, phase, self.step)
        qty[~buy] = _split(self.VS[i] - self.BS[i], n - nb, self._sells, phase, self.step)
        g = self._gaps.cum(np.arange(n + 1, dtype=np.int64), phase)
        offset = (MINUTE_MS * g[:-1]) // (int(g[-1]) + 1)
        price = self._path(i, k, n)
        quote = (price * (qty // self.step) * self._qmul) // self._qdiv
        bq = np.where(buy, qty, 0)
        bquote = np.where(buy, quote, 0)
        return MinuteTrades(offset, price, qty, quote, buy, _cum(qty), _cum(quote), _cum(bq), _cum(bquote))

    def minute(self, i: int) -> MinuteTrades:
        """The trades of candle ``i`` (cached)."""
        mt = self._cache.get(i)
        if mt is None:
            mt = self._build(i)
            with self._lock:
                while len(self._cache) >= _MINUTE_CACHE:
                    self._cache.pop(next(iter(self._cache)))
                self._cache[i] = mt
        return mt

    def locate(self, r: int) -> tuple[int, int]:
        """Trade number ``r`` of a lap (``0 <= r < per_lap``) -> ``(candle i, k within it)``."""
        i = bisect_right(self.P_n, r) - 1
        return i, r - self.P_n[i]

    def range_high(self, i: int, j: int) -> int:
        """Max trade price (E8) over candles ``i..j`` (inclusive)."""
        return sparse_query(self._hi, i, j, max)

    def range_low(self, i: int, j: int) -> int:
        """Min trade price (E8) over candles ``i..j`` (inclusive)."""
        return sparse_query(self._lo, i, j, min)


@lru_cache(maxsize=None)
def trade_tape(symbol: str, data_dir: str | None = None) -> TradeTape:
    """The :class:`TradeTape` of ``symbol`` (built once per process; about 0.1 s per 1,000 candles)."""
    return TradeTape(load_tape(symbol, data_dir), symbol_spec(symbol, data_dir), trade_flow(symbol, data_dir))


__all__ = ["MinuteTrades", "TradeTape", "trade_tape"]
