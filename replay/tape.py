"""Recorded 1m kline tapes: the replay exchange's backbone.

A *tape* is one symbol's contiguous run of recorded 1-minute spot klines, loaded once from
data.binance.vision dump files (``replay/data/binance/klines/spot/``). Which files make up
each symbol's tape is the data-driven registry :data:`TAPE_FILES`; adding a replayed symbol is one
line there (plus its files and a row in ``replay/data/binance/SOURCES.md``).

File format (Binance "Kline/Candlestick data" dumps, data.binance.vision ``spot/daily/klines``):
a zip holding one headerless CSV (a bare ``.csv`` is accepted too) with 12 columns::

    open_time, open, high, low, close, volume, close_time, quote_volume, trades,
    taker_buy_base, taker_buy_quote, ignore

Times are ms since the epoch (UTC). From 2025 Binance writes spot dumps in **microseconds**; any
timestamp above 1e14 is divided by 1000 (both open and close time). Prices are in the quote asset,
volumes in the base asset (``quote_volume``/``taker_buy_quote`` in the quote asset).

Representation: every price and volume is parsed with :class:`decimal.Decimal` from its text
(never ``float``) and kept twice, both exact:

* :attr:`Tape.candles`: immutable :class:`Candle` records with ``Decimal`` fields (the public view);
* fixed-point integer arrays in units of 1e-8 ("E8"; all dump values have at most 8 decimals,
  checked at load) plus prefix sums and sparse tables, so that the model can aggregate any range of
  minutes in O(1) without rounding.

The loader validates what the replay relies on: rows sorted and contiguous (step 60,000 ms,
close_time = open_time + 59,999), low <= min(open, close) <= max(open, close) <= high, no value
with more than 8 decimals. A violation raises :class:`TapeError`.
"""
from __future__ import annotations

import csv
import io
import zipfile
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

#: Directory of the bundled recorded data (``replay/data/binance``).
DATA_DIR = Path(__file__).resolve().parent / "data" / "binance"

#: Replayed symbols -> their 1m kline files (relative to :data:`DATA_DIR`), in time order.
#: The set of replayed symbols is exactly the keys of this mapping.
TAPE_FILES: dict[str, tuple[str, ...]] = {
    "BTCUSDT": tuple(f"klines/spot/BTCUSDT-1m-2020-01-0{d}.zip" for d in (1, 2, 3)),  # BSD-3, lostleaf
    "ETHUSDT": tuple(f"klines/spot/ETHUSDT-1m-2022-08-{d}.zip" for d in (14, 15)),  # MIT, hal9000cc
}

MINUTE_MS = 60_000
E8 = 10**8
_MICROSECOND_THRESHOLD = 10**14


class TapeError(ValueError):
    """A kline file is malformed or the rows do not form one contiguous 1m tape."""


@dataclass(frozen=True, slots=True)
class Candle:
    """One recorded 1m spot kline, as in Binance's ``GET /api/v3/klines`` array (12 fields).

    ``open_time``/``close_time``: ms since epoch UTC (recording time, *not* shifted to replay time).
    ``open``/``high``/``low``/``close``: prices in the quote asset. ``volume``,
    ``taker_buy_base``: base asset. ``quote_volume``, ``taker_buy_quote``: quote asset.
    ``trades``: number of trades Binance recorded in the minute.
    """

    open_time: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    close_time: int
    quote_volume: Decimal
    trades: int
    taker_buy_base: Decimal
    taker_buy_quote: Decimal


def to_e8(text: str | Decimal) -> int:
    """Exact fixed-point conversion: decimal text (or ``Decimal``) -> integer units of 1e-8.

    Raises :class:`TapeError` if the value has more than 8 decimals (it would not be exact).
    """
    d = text if isinstance(text, Decimal) else Decimal(text)
    scaled = d.scaleb(8)
    if scaled != scaled.to_integral_value():
        raise TapeError(f"value {text!r} has more than 8 decimals")
    return int(scaled)


def from_e8(n: int) -> Decimal:
    """Integer units of 1e-8 -> ``Decimal`` with exactly 8 decimals (exponent -8)."""
    return Decimal(n).scaleb(-8)


def _norm_ms(raw: str) -> int:
    value = int(raw)
    return value // 1000 if value > _MICROSECOND_THRESHOLD else value


def parse_kline_rows(rows: Iterable[Sequence[str]], source: str = "<rows>") -> list[Candle]:
    """Parse headerless Binance kline CSV rows (12 columns) into :class:`Candle` records.

    Accepts ms or µs timestamps (µs = any value > 1e14, divided by 1000). A header row (first
    cell not numeric) is skipped, so USDⓈ-M style files also parse. Blank lines are ignored.
    """
    out: list[Candle] = []
    for lineno, row in enumerate(rows, 1):
        if not row or not "".join(row).strip():
            continue
        if not row[0].strip().isdigit():
            if lineno == 1:
                continue  # header row
            raise TapeError(f"{source}:{lineno}: non-numeric open_time {row[0]!r}")
        if len(row) < 11:
            raise TapeError(f"{source}:{lineno}: expected 12 columns, got {len(row)}")
        try:
            out.append(
                Candle(
                    open_time=_norm_ms(row[0]),
                    open=Decimal(row[1]),
                    high=Decimal(row[2]),
                    low=Decimal(row[3]),
                    close=Decimal(row[4]),
                    volume=Decimal(row[5]),
                    close_time=_norm_ms(row[6]),
                    quote_volume=Decimal(row[7]),
                    trades=int(row[8]),
                    taker_buy_base=Decimal(row[9]),
                    taker_buy_quote=Decimal(row[10]),
                )
            )
        except (ArithmeticError, ValueError) as exc:  # decimal.InvalidOperation is an ArithmeticError
            raise TapeError(f"{source}:{lineno}: {exc}") from exc
    return out


def read_kline_file(path: Path) -> list[Candle]:
    """Read one kline dump: a ``.zip`` holding one CSV (data.binance.vision layout) or a ``.csv``."""
    path = Path(path)
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.endswith(".csv")]
            if len(names) != 1:
                raise TapeError(f"{path}: expected exactly one CSV inside, found {names}")
            with zf.open(names[0]) as fh:
                return parse_kline_rows(csv.reader(io.TextIOWrapper(fh, encoding="ascii")), str(path))
    with open(path, newline="", encoding="ascii") as fh:
        return parse_kline_rows(csv.reader(fh), str(path))


def sparse_table(values: list[int], pick) -> list[list[int]]:
    """Sparse table of ``values`` for O(1) range queries with the idempotent ``pick`` (``max`` or
    ``min``): row ``k`` holds ``pick`` over each window of ``2**k`` values (``sparse_query``)."""
    table = [values]
    span = 1
    while span * 2 <= len(values):
        prev = table[-1]
        table.append([pick(prev[i], prev[i + span]) for i in range(len(values) - span * 2 + 1)])
        span *= 2
    return table


def sparse_query(table: list[list[int]], i: int, j: int, pick) -> int:
    """``pick`` (``max``/``min``, as the table was built) of the values ``i..j`` (inclusive,
    ``0 <= i <= j < len(values)``) of a ``sparse_table``: two overlapping power-of-two windows."""
    k = (j - i + 1).bit_length() - 1
    row = table[k]
    return pick(row[i], row[j - (1 << k) + 1])


def prefix_sums(values: list[int]) -> list[int]:
    out = [0] * (len(values) + 1)
    acc = 0
    for i, v in enumerate(values):
        acc += v
        out[i + 1] = acc
    return out


class Tape:
    """One symbol's recorded 1m candles, validated, with O(1) range aggregates.

    Attributes (all indices are 0-based minute indices into the tape):

    * ``symbol``: e.g. ``"BTCUSDT"``; ``files``: the source file paths.
    * ``candles``: tuple of :class:`Candle` (``Decimal`` fields), recording time.
    * ``first_open_ms``: open time of ``candles[0]`` (ms UTC); ``length``: number of minutes;
      ``length_ms`` = ``length * 60000``.
    * E8 integer arrays ``o, h, l, c, v, q, tbb, tbq`` and int array ``n`` (trades), per candle.
    * prefix sums ``P_v, P_q, P_n, P_tbb, P_tbq`` (``P[k]`` = sum of the first ``k`` candles).

    Use :meth:`range_high`/:meth:`range_low` for O(1) max/min of high/low over ``[i, j]``.
    """

    def __init__(self, symbol: str, candles: Sequence[Candle], files: Sequence[Path] = ()):
        if not candles:
            raise TapeError(f"{symbol}: empty tape")
        self.symbol = symbol
        self.files = tuple(files)
        self.candles: tuple[Candle, ...] = tuple(candles)
        self.first_open_ms = candles[0].open_time
        self.length = len(candles)
        self.length_ms = self.length * MINUTE_MS
        self.o = [to_e8(c.open) for c in candles]
        self.h = [to_e8(c.high) for c in candles]
        self.l = [to_e8(c.low) for c in candles]
        self.c = [to_e8(c.close) for c in candles]
        self.v = [to_e8(c.volume) for c in candles]
        self.q = [to_e8(c.quote_volume) for c in candles]
        self.tbb = [to_e8(c.taker_buy_base) for c in candles]
        self.tbq = [to_e8(c.taker_buy_quote) for c in candles]
        self.n = [c.trades for c in candles]
        self._validate()
        self.P_v = prefix_sums(self.v)
        self.P_q = prefix_sums(self.q)
        self.P_n = prefix_sums(self.n)
        self.P_tbb = prefix_sums(self.tbb)
        self.P_tbq = prefix_sums(self.tbq)
        self._hi = sparse_table(self.h, max)
        self._lo = sparse_table(self.l, min)
        self.max_high = max(self.h)
        self.min_low = min(self.l)

    def _validate(self) -> None:
        for i, cd in enumerate(self.candles):
            expected_open = self.first_open_ms + i * MINUTE_MS
            if cd.open_time != expected_open:
                raise TapeError(
                    f"{self.symbol}: row {i} opens at {cd.open_time}, expected {expected_open} "
                    "(tape must be sorted and contiguous 1m)"
                )
            if cd.close_time != cd.open_time + MINUTE_MS - 1:
                raise TapeError(f"{self.symbol}: row {i} close_time {cd.close_time} != open_time + 59999")
            if not (self.l[i] <= min(self.o[i], self.c[i]) <= max(self.o[i], self.c[i]) <= self.h[i]):
                raise TapeError(f"{self.symbol}: row {i} violates low <= open/close <= high")
            if self.v[i] < 0 or self.q[i] < 0 or self.n[i] < 0:
                raise TapeError(f"{self.symbol}: row {i} has a negative volume or count")

    def range_high(self, i: int, j: int) -> int:
        """Max of the E8 highs of candles ``i..j`` (inclusive, ``0 <= i <= j < length``)."""
        return sparse_query(self._hi, i, j, max)

    def range_low(self, i: int, j: int) -> int:
        """Min of the E8 lows of candles ``i..j`` (inclusive, ``0 <= i <= j < length``)."""
        return sparse_query(self._lo, i, j, min)

    def __repr__(self) -> str:
        return f"<Tape {self.symbol} {self.length} min from {self.first_open_ms}>"


def replayed_symbols() -> list[str]:
    """The symbols the replay exchange serves: the keys of :data:`TAPE_FILES`, sorted."""
    return sorted(TAPE_FILES)


@lru_cache(maxsize=None)
def load_tape(symbol: str, data_dir: str | None = None) -> Tape:
    """Load (once per process; cached) the tape of ``symbol`` from :data:`TAPE_FILES`.

    ``data_dir``: override of :data:`DATA_DIR` (a path string, for tests). Raises ``KeyError`` for
    a symbol without a tape and :class:`TapeError` for malformed or non-contiguous files.
    """
    base = Path(data_dir) if data_dir else DATA_DIR
    paths = [base / rel for rel in TAPE_FILES[symbol]]
    candles: list[Candle] = []
    for p in paths:
        candles.extend(read_kline_file(p))
    return Tape(symbol, candles, paths)
