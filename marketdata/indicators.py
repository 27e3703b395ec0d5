"""Technical indicators of stored candles, computed with TA-Lib, and the seed signal rules.

Prices come out of the database as ``Decimal``; only here, for TA-Lib's math, are they turned into
``float64`` arrays, and every value handed back is a string again (the float's shortest exact
repr, formatted without exponent), so nothing downstream ever sees a float.

Indicators (names, default parameters; every parameter can be overridden per call):

- ``rsi``    RSI(period=14): Wilder, *New Concepts in Technical Trading Systems* (1978). Average
  gain/loss seeded with the simple mean of the first ``period`` changes, then Wilder's smoothing
  ``avg = (avg*(n-1) + x)/n``; RSI = 100·avgGain/(avgGain+avgLoss) (TA-Lib ``RSI``).
- ``macd``   MACD(fast=12, slow=26, signal=9): Appel, *Technical Analysis: Power Tools for Active
  Investors* (2005; MACD dates from 1979). MACD = EMA(fast) − EMA(slow), signal = EMA(signal) of
  MACD, histogram = MACD − signal (TA-Lib ``MACD``: both EMAs start at the slow EMA's first
  value, each seeded with the simple mean of its own period).
- ``sma``    SMA(periods=[20, 50]): simple moving averages of the close.
- ``ema``    EMA(periods=[12, 26]): exponential, α = 2/(n+1), seeded with the SMA of the first n.
- ``bbands`` Bollinger Bands(period=20, nbdev=2): Bollinger, *Bollinger on Bollinger Bands* (2001).
  middle = SMA(period), upper/lower = middle ± nbdev·σ, σ the population standard deviation.
- ``atr``    ATR(period=14): Wilder (1978). True range max(H−L, |H−C₋₁|, |L−C₋₁|), averaged with
  Wilder's smoothing seeded with the simple mean of the first ``period`` true ranges.
- ``stoch``  Stochastic(fastk=14, slowk=3, slowd=3): Lane (1950s; "Lane's Stochastics", *Technical
  Analysis of Stocks & Commodities*, 1984). %K_fast = 100·(C − LL)/(HH − LL) over ``fastk``
  candles, slow %K = SMA(slowk) of it, %D = SMA(slowd) of slow %K.
- ``obv``    On-Balance Volume: Granville, *Granville's New Key to Stock Market Profits* (1963).
  Cumulative volume, added on an up close, subtracted on a down close (starts at the first volume).
- ``vwap``   Session VWAP: Σ(typical price·volume)/Σ volume since the start of the candle's UTC day,
  typical price = (H+L+C)/3.

Units: price-like values (sma, ema, bbands, atr, vwap, macd) are in the quote asset; rsi and stoch
are 0..100; obv is in the base asset.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import talib

from core.errors import InvalidInput

DAY_MS = 86_400_000

DEFAULT_PARAMS: dict[str, dict] = {
    "rsi": {"period": 14},
    "macd": {"fast": 12, "slow": 26, "signal": 9},
    "sma": {"periods": [20, 50]},
    "ema": {"periods": [12, 26]},
    "bbands": {"period": 20, "nbdev": 2},
    "atr": {"period": 14},
    "stoch": {"fastk": 14, "slowk": 3, "slowd": 3},
    "obv": {},
    "vwap": {},
}
INDICATORS: tuple[str, ...] = tuple(DEFAULT_PARAMS)
RSI_OVERSOLD, RSI_OVERBOUGHT = 30.0, 70.0


@dataclass(frozen=True)
class Candles:
    """Closed candles as float arrays for TA-Lib, oldest first.

    ``open_time``: int64 ms since the epoch UTC; ``open``/``high``/``low``/``close``: quote asset;
    ``volume``: base asset.
    """

    open_time: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    def __len__(self) -> int:
        return len(self.close)

    @classmethod
    def from_rows(cls, rows) -> "Candles":
        """Build from ``(open_time, open, high, low, close, volume, ...)`` tuples (floats, Decimals or
        decimal strings; extra columns are ignored), e.g. ``selectors.candles_rows(...)``."""
        rows = list(rows)
        if not rows:
            empty = np.empty(0)
            return cls(np.empty(0, dtype=np.int64), empty, empty, empty, empty, empty)
        cols = list(zip(*rows))
        return cls(
            open_time=np.asarray(cols[0], dtype=np.int64),
            **{name: np.asarray(col, dtype=np.float64)
               for name, col in zip(("open", "high", "low", "close", "volume"), cols[1:6])},
        )


def _int_param(name: str, key: str, value, low: int = 2, high: int = 1000) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(f"Parameter {name}.{key} must be an integer from {low} to {high}, got {value!r}.")
    return value


def resolve(indicators: list[str] | None = None, params: dict | None = None) -> dict[str, dict]:
    """Validate an indicator selection and parameter overrides; return ``{name: params}``.

    ``indicators``: names from ``INDICATORS`` (None = all). ``params``: ``{name: {key: value}}``
    overrides, e.g. ``{"rsi": {"period": 7}, "sma": {"periods": [10, 30]}}``.
    Raises ``InvalidInput`` naming the valid indicators or the offending parameter.
    """
    names = list(INDICATORS) if indicators is None else [str(n).strip().lower() for n in indicators]
    unknown = [n for n in names if n not in DEFAULT_PARAMS]
    if unknown or not names:
        raise InvalidInput(f"Unknown indicator(s) {unknown or names!r}. Valid indicators: {', '.join(INDICATORS)}.")
    params = params or {}
    if not isinstance(params, dict):
        raise InvalidInput("params must be an object such as {\"rsi\": {\"period\": 7}}.")
    for name in params:
        if name not in DEFAULT_PARAMS:
            raise InvalidInput(f"params names unknown indicator {name!r}. Valid indicators: {', '.join(INDICATORS)}.")
    out = {}
    for name in dict.fromkeys(names):
        p = {**DEFAULT_PARAMS[name], **(params.get(name) or {})}
        extra = set(p) - set(DEFAULT_PARAMS[name])
        if extra:
            raise InvalidInput(f"Unknown parameter(s) {sorted(extra)} for {name}; valid: {sorted(DEFAULT_PARAMS[name]) or 'none'}.")
        for key, value in p.items():
            if key == "periods":
                if not isinstance(value, (list, tuple)) or not 1 <= len(value) <= 5:
                    raise InvalidInput(f"Parameter {name}.periods must be a list of 1 to 5 integers, got {value!r}.")
                p[key] = [_int_param(name, key, v) for v in value]
            elif key == "nbdev":
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < float(value) <= 10:
                    raise InvalidInput(f"Parameter {name}.nbdev must be a number in (0, 10], got {value!r}.")
                p[key] = float(value)
            elif key in ("slowk", "slowd"):
                p[key] = _int_param(name, key, value, low=1)
            else:
                p[key] = _int_param(name, key, value)
        if name == "macd" and p["fast"] >= p["slow"]:
            raise InvalidInput(f"Parameter macd.fast ({p['fast']}) must be smaller than macd.slow ({p['slow']}).")
        out[name] = p
    return out


def session_vwap(c: Candles) -> np.ndarray:
    """Session VWAP per candle: cumulative Σ(TP·V)/ΣV restarted at each UTC day (TP = (H+L+C)/3).
    NaN while the session's volume is still 0."""
    tp_v = (c.high + c.low + c.close) / 3.0 * c.volume
    day = c.open_time // DAY_MS
    starts = np.flatnonzero(np.r_[True, day[1:] != day[:-1]])
    lengths = np.diff(np.r_[starts, len(day)])
    cs_pv = np.cumsum(tp_v)
    cs_v = np.cumsum(c.volume)
    base_pv = np.repeat(np.r_[0.0, cs_pv[starts[1:] - 1]], lengths)
    base_v = np.repeat(np.r_[0.0, cs_v[starts[1:] - 1]], lengths)
    vol = cs_v - base_v
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(vol > 0, (cs_pv - base_pv) / vol, np.nan)


def compute_series(c: Candles, resolved: dict[str, dict]) -> dict[str, dict[str, np.ndarray]]:
    """Every selected indicator's full series over ``c`` (float arrays, NaN during warm-up).

    ``resolved``: the output of ``resolve``. Keys per indicator: rsi → rsi; macd → macd, signal,
    histogram; sma → sma<N>; ema → ema<N>; bbands → upper, middle, lower; atr → atr;
    stoch → k, d; obv → obv; vwap → vwap.
    """
    out: dict[str, dict[str, np.ndarray]] = {}
    n = len(c)
    nan = np.full(n, np.nan)
    for name, p in resolved.items():
        if n == 0:
            out[name] = {}
            continue
        if name == "rsi":
            out[name] = {"rsi": talib.RSI(c.close, timeperiod=p["period"])}
        elif name == "macd":
            macd, signal, hist = talib.MACD(c.close, fastperiod=p["fast"], slowperiod=p["slow"], signalperiod=p["signal"])
            out[name] = {"macd": macd, "signal": signal, "histogram": hist}
        elif name == "sma":
            out[name] = {f"sma{k}": talib.SMA(c.close, timeperiod=k) for k in p["periods"]}
        elif name == "ema":
            out[name] = {f"ema{k}": talib.EMA(c.close, timeperiod=k) for k in p["periods"]}
        elif name == "bbands":
            upper, middle, lower = talib.BBANDS(c.close, timeperiod=p["period"], nbdevup=p["nbdev"], nbdevdn=p["nbdev"], matype=0)
            out[name] = {"upper": upper, "middle": middle, "lower": lower}
        elif name == "atr":
            out[name] = {"atr": talib.ATR(c.high, c.low, c.close, timeperiod=p["period"])}
        elif name == "stoch":
            if n < p["fastk"] + p["slowk"] + p["slowd"] - 2:
                out[name] = {"k": nan, "d": nan}
            else:
                k, d = talib.STOCH(c.high, c.low, c.close, fastk_period=p["fastk"], slowk_period=p["slowk"], slowk_matype=0,
                                   slowd_period=p["slowd"], slowd_matype=0)
                out[name] = {"k": k, "d": d}
        elif name == "obv":
            out[name] = {"obv": talib.OBV(c.close, c.volume)}
        elif name == "vwap":
            out[name] = {"vwap": session_vwap(c)}
    return out


def fstr(x) -> str | None:
    """A float as a plain decimal string (its shortest exact repr, no exponent); None for NaN."""
    x = float(x)
    if x != x or x in (float("inf"), float("-inf")):
        return None
    return format(Decimal(repr(x)), "f")


def values_at(series: dict, resolved: dict, i: int) -> dict:
    """The indicators' values at candle index ``i``: ``{name: {"params": {...}, key: str|None}}``."""
    return {name: {"params": resolved[name], **{k: fstr(arr[i]) for k, arr in series[name].items()}}
            for name in resolved if name in series}


def _val(series, name, key, i):
    try:
        v = float(series[name][key][i])
    except (KeyError, IndexError):
        return None
    return None if v != v else v


def signals_at(series: dict, resolved: dict, c: Candles, i: int) -> list[dict]:
    """The seed rules' signals at candle index ``i``, each ``{"indicator", "signal": "BUY"|"SELL",
    "event": "cross"|"state"|"level", "reason"}`` (a one-line reason). Rules:

    - RSI < 30 → BUY (oversold), RSI > 70 → SELL (overbought) (Wilder's levels);
    - MACD above its signal line → BUY, below → SELL (Appel); ``event`` "cross" on the candle where
      it crossed;
    - SMA fast vs slow (20/50 by default): golden cross (fast crosses above) → BUY, death cross →
      SELL; otherwise the trend state;
    - close below the lower Bollinger band → BUY, above the upper → SELL (Bollinger).
    """
    out = []
    if i < 0:
        i += len(c)
    close = float(c.close[i]) if len(c) else None

    def fmt(x):
        return f"{x:.8g}"

    if "rsi" in resolved:
        r = _val(series, "rsi", "rsi", i)
        if r is not None and r < RSI_OVERSOLD:
            out.append({"indicator": "rsi", "signal": "BUY", "event": "level", "reason": f"RSI({resolved['rsi']['period']}) {r:.2f} < {RSI_OVERSOLD:.0f}: oversold."})
        elif r is not None and r > RSI_OVERBOUGHT:
            out.append({"indicator": "rsi", "signal": "SELL", "event": "level", "reason": f"RSI({resolved['rsi']['period']}) {r:.2f} > {RSI_OVERBOUGHT:.0f}: overbought."})
    if "macd" in resolved:
        m, s = _val(series, "macd", "macd", i), _val(series, "macd", "signal", i)
        pm, ps = (_val(series, "macd", "macd", i - 1), _val(series, "macd", "signal", i - 1)) if i > 0 else (None, None)
        if m is not None and s is not None and m != s:
            above = m > s
            crossed = pm is not None and ps is not None and (pm > ps) != above and pm != ps
            word = "crossed above" if crossed and above else "crossed below" if crossed else "above" if above else "below"
            out.append({"indicator": "macd", "signal": "BUY" if above else "SELL", "event": "cross" if crossed else "state",
                        "reason": f"MACD {fmt(m)} {word} its signal line {fmt(s)}: {'bullish' if above else 'bearish'} momentum."})
    if "sma" in resolved and len(resolved["sma"]["periods"]) >= 2:
        fast_n, slow_n = sorted(resolved["sma"]["periods"])[:2]
        if fast_n != slow_n:
            f, s = _val(series, "sma", f"sma{fast_n}", i), _val(series, "sma", f"sma{slow_n}", i)
            pf, ps = (_val(series, "sma", f"sma{fast_n}", i - 1), _val(series, "sma", f"sma{slow_n}", i - 1)) if i > 0 else (None, None)
            if f is not None and s is not None and f != s:
                above = f > s
                crossed = pf is not None and ps is not None and (pf > ps) != above and pf != ps
                if crossed:
                    reason = (f"Golden cross: SMA{fast_n} {fmt(f)} crossed above SMA{slow_n} {fmt(s)}." if above
                              else f"Death cross: SMA{fast_n} {fmt(f)} crossed below SMA{slow_n} {fmt(s)}.")
                else:
                    reason = f"SMA{fast_n} {fmt(f)} {'above' if above else 'below'} SMA{slow_n} {fmt(s)}: {'up' if above else 'down'}trend, no cross on this candle."
                out.append({"indicator": "sma", "signal": "BUY" if above else "SELL", "event": "cross" if crossed else "state", "reason": reason})
    if "bbands" in resolved and close is not None:
        up, lo = _val(series, "bbands", "upper", i), _val(series, "bbands", "lower", i)
        p = resolved["bbands"]
        if lo is not None and close < lo:
            out.append({"indicator": "bbands", "signal": "BUY", "event": "level",
                        "reason": f"Close {fmt(close)} below the lower Bollinger band {fmt(lo)} (BB {p['period']},{p['nbdev']:g}): stretched down."})
        elif up is not None and close > up:
            out.append({"indicator": "bbands", "signal": "SELL", "event": "level",
                        "reason": f"Close {fmt(close)} above the upper Bollinger band {fmt(up)} (BB {p['period']},{p['nbdev']:g}): stretched up."})
    return out


def snapshot(c: Candles, resolved: dict, series: dict | None = None, i: int = -1) -> dict:
    """The indicator set at candle index ``i`` (default the last): ``{"openTime", "close",
    "values", "signals"}``. Pass ``series`` to reuse a ``compute_series`` result."""
    if len(c) == 0:
        raise InvalidInput("No closed candles to compute indicators from.")
    series = compute_series(c, resolved) if series is None else series
    if i < 0:
        i += len(c)
    return {
        "openTime": int(c.open_time[i]),
        "close": fstr(c.close[i]),
        "values": values_at(series, resolved, i),
        "signals": signals_at(series, resolved, c, i),
    }


def warm_index(series: dict) -> int:
    """The first candle index where every computed value is defined (the end of warm-up)."""
    first = 0
    for keys in series.values():
        for arr in keys.values():
            ok = np.flatnonzero(~np.isnan(arr))
            first = max(first, int(ok[0]) if len(ok) else len(arr))
    return first
