"""Indicators (TA-Lib) against independent pandas implementations of the published formulas, on
the recorded real Binance candles; the seed signals; snapshots written from stored klines."""
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from marketdata import indicators as ind
from replay.testing import recorded_rows
from core.errors import InvalidInput

RTOL = 1e-8


# ---------------------------------------------------------------------------------------------
# Reference formulas (pandas), written from the sources, not from TA-Lib
# ---------------------------------------------------------------------------------------------
def seeded_ewm(s: pd.Series, n: int, alpha: float, start: int = 0) -> pd.Series:
    """x̄ₙ seeded with the simple mean of s[start : start+n], then xₜ = α·sₜ + (1−α)·xₜ₋₁.
    (Wilder 1978 uses α = 1/n; the EMA of MACD/EMA uses α = 2/(n+1).)"""
    out = pd.Series(np.nan, index=s.index)
    seed_at = start + n - 1
    x = s.iloc[seed_at:].copy()
    x.iloc[0] = s.iloc[start:start + n].mean()
    out.iloc[seed_at:] = x.ewm(alpha=alpha, adjust=False).mean().to_numpy()
    return out


def ref_ema(close, n, start=0):
    return seeded_ewm(close, n, 2 / (n + 1), start)


def ref_rsi(close, n):
    """Wilder: average gain/loss over the first n changes, then Wilder smoothing."""
    d = close.diff()
    gain, loss = d.clip(lower=0), (-d).clip(lower=0)
    ag, al = seeded_ewm(gain, n, 1 / n, start=1), seeded_ewm(loss, n, 1 / n, start=1)
    return 100 * ag / (ag + al)


def ref_macd(close, fast, slow, signal):
    """Appel: EMA(fast) − EMA(slow); TA-Lib starts the fast EMA where the slow one starts."""
    slow_ema = ref_ema(close, slow)
    fast_ema = ref_ema(close, fast, start=slow - fast)
    macd = fast_ema - slow_ema
    sig = ref_ema(macd, signal, start=slow - 1)
    return macd, sig, macd - sig


def ref_bbands(close, n, k):
    mid = close.rolling(n).mean()
    sd = close.rolling(n).std(ddof=0)
    return mid + k * sd, mid, mid - k * sd


def ref_atr(df, n):
    prev = df.close.shift()
    tr = pd.concat([df.high - df.low, (df.high - prev).abs(), (df.low - prev).abs()], axis=1).max(axis=1)
    tr.iloc[0] = np.nan
    return seeded_ewm(tr, n, 1 / n, start=1)


def ref_stoch(df, k, sk, sd):
    ll, hh = df.low.rolling(k).min(), df.high.rolling(k).max()
    fast_k = 100 * (df.close - ll) / (hh - ll)
    slow_k = fast_k.rolling(sk).mean()
    return slow_k, slow_k.rolling(sd).mean()


def ref_obv(df):
    sign = np.sign(df.close.diff()).fillna(0)
    obv = (sign * df.volume).cumsum() + df.volume.iloc[0]
    return obv


def ref_vwap(df):
    day = df.open_time // 86_400_000
    tp = (df.high + df.low + df.close) / 3
    return (tp * df.volume).groupby(day).cumsum() / df.volume.groupby(day).cumsum()


@pytest.fixture(scope="module")
def recorded():
    """The recorded BTCUSDT 1m candles (first 3,000 minutes) as Decimals → Candles and a DataFrame."""
    rows = [(int(r[0]), Decimal(r[1]), Decimal(r[2]), Decimal(r[3]), Decimal(r[4]), Decimal(r[5]))
            for r in recorded_rows("BTCUSDT")[:3000]]
    c = ind.Candles.from_rows(rows)
    df = pd.DataFrame({"open_time": c.open_time, "high": c.high, "low": c.low, "close": c.close, "volume": c.volume})
    return c, df


def assert_matches(got: np.ndarray, want: pd.Series, *, what: str, min_defined: int = 2000, atol: float = 0.0):
    """Equal to 1e-8 relative where TA-Lib has a value. ``atol`` only for differences of two
    price-sized numbers (MACD), whose rounding error scales with the price, not with the result."""
    want = want.to_numpy(dtype=float)
    defined = ~np.isnan(got)
    assert defined.sum() >= min_defined, f"{what}: only {defined.sum()} values"
    # Same warm-up: TA-Lib never reports a value the reference cannot compute.
    assert not np.isnan(want[defined]).any(), f"{what}: defined where the reference is not"
    np.testing.assert_allclose(got[defined], want[defined], rtol=RTOL, atol=atol, err_msg=what)


def test_every_indicator_equals_the_reference_formulas_on_recorded_candles(recorded):
    c, df = recorded
    resolved = ind.resolve()
    s = ind.compute_series(c, resolved)
    assert_matches(s["rsi"]["rsi"], ref_rsi(df.close, 14), what="RSI(14)")
    macd, sig, hist = ref_macd(df.close, 12, 26, 9)
    # MACD = EMA12 − EMA26 of ~7,000 USDT prices: near a zero crossing the last bits of the
    # prices dominate, so allow 1e-14 of the price (a few ulps of the inputs) on top of 1e-8.
    ulps = 1e-14 * float(df.close.max())
    assert_matches(s["macd"]["macd"], macd, what="MACD", atol=ulps)
    assert_matches(s["macd"]["signal"], sig, what="MACD signal", atol=ulps)
    assert_matches(s["macd"]["histogram"], hist, what="MACD histogram", atol=ulps)
    for n in (20, 50):
        assert_matches(s["sma"][f"sma{n}"], df.close.rolling(n).mean(), what=f"SMA{n}")
    for n in (12, 26):
        assert_matches(s["ema"][f"ema{n}"], ref_ema(df.close, n), what=f"EMA{n}")
    up, mid, lo = ref_bbands(df.close, 20, 2)
    assert_matches(s["bbands"]["upper"], up, what="BB upper")
    assert_matches(s["bbands"]["middle"], mid, what="BB middle")
    assert_matches(s["bbands"]["lower"], lo, what="BB lower")
    assert_matches(s["atr"]["atr"], ref_atr(df, 14), what="ATR(14)")
    k, d = ref_stoch(df, 14, 3, 3)
    assert_matches(s["stoch"]["k"], k, what="STOCH %K")
    assert_matches(s["stoch"]["d"], d, what="STOCH %D")
    assert_matches(s["obv"]["obv"], ref_obv(df), what="OBV")
    assert_matches(s["vwap"]["vwap"], ref_vwap(df), what="VWAP")
    # Warm-up lengths are the textbook ones.
    assert np.isnan(s["rsi"]["rsi"][13]) and not np.isnan(s["rsi"]["rsi"][14])
    assert np.isnan(s["macd"]["signal"][32]) and not np.isnan(s["macd"]["signal"][33])
    assert np.isnan(s["atr"]["atr"][13]) and not np.isnan(s["atr"]["atr"][14])
    # The session VWAP restarts at 00:00 UTC: the day's first candle's VWAP is its typical price.
    first_of_day = int(np.flatnonzero(c.open_time % 86_400_000 == 0)[1])
    tp = (c.high[first_of_day] + c.low[first_of_day] + c.close[first_of_day]) / 3
    assert s["vwap"]["vwap"][first_of_day] == pytest.approx(tp, rel=1e-12)


def test_parameters_are_overridable(recorded):
    c, df = recorded
    resolved = ind.resolve(["rsi", "sma", "bbands", "macd", "stoch", "atr"], {
        "rsi": {"period": 7}, "sma": {"periods": [5, 30]}, "bbands": {"period": 10, "nbdev": 2.5},
        "macd": {"fast": 5, "slow": 35, "signal": 5}, "stoch": {"fastk": 5, "slowk": 2, "slowd": 4}, "atr": {"period": 21}})
    s = ind.compute_series(c, resolved)
    assert set(s) == {"rsi", "sma", "bbands", "macd", "stoch", "atr"}
    assert_matches(s["rsi"]["rsi"], ref_rsi(df.close, 7), what="RSI(7)")
    assert_matches(s["sma"]["sma30"], df.close.rolling(30).mean(), what="SMA30")
    assert_matches(s["bbands"]["upper"], ref_bbands(df.close, 10, 2.5)[0], what="BB(10, 2.5)")
    assert_matches(s["macd"]["signal"], ref_macd(df.close, 5, 35, 5)[1], what="MACD(5,35,5)", atol=1e-14 * float(df.close.max()))
    assert_matches(s["stoch"]["d"], ref_stoch(df, 5, 2, 4)[1], what="STOCH(5,2,4)")
    assert_matches(s["atr"]["atr"], ref_atr(df, 21), what="ATR(21)")


@pytest.mark.parametrize("indicators, params, text", [
    (["rsi", "ichimoku"], None, "Valid indicators: rsi, macd, sma, ema, bbands, atr, stoch, obv, vwap"),
    (None, {"rsi": {"period": 1}}, "rsi.period must be an integer from 2 to 1000"),
    (None, {"rsi": {"length": 7}}, "Unknown parameter(s) ['length'] for rsi"),
    (None, {"macd": {"fast": 30}}, "macd.fast (30) must be smaller than macd.slow (26)"),
    (None, {"bbands": {"nbdev": "2"}}, "bbands.nbdev must be a number"),
    (None, {"sma": {"periods": 20}}, "sma.periods must be a list"),
])
def test_bad_selection_or_parameters_say_what_is_valid(indicators, params, text):
    with pytest.raises(InvalidInput) as exc:
        ind.resolve(indicators, params)
    assert text in str(exc.value)


def test_values_are_strings_of_the_exact_float(recorded):
    c, _ = recorded
    snap = ind.snapshot(c, ind.resolve())
    rsi = snap["values"]["rsi"]["rsi"]
    assert isinstance(rsi, str) and "e" not in rsi.lower()
    assert float(rsi) == ind.compute_series(c, ind.resolve(["rsi"]))["rsi"]["rsi"][-1]
    assert snap["openTime"] == int(c.open_time[-1]) and Decimal(snap["close"]) == Decimal(str(c.close[-1]))
    assert snap["values"]["sma"]["params"] == {"periods": [20, 50]}


def test_seed_signals_fire_where_the_rules_say_and_only_there(recorded):
    c, df = recorded
    resolved = ind.resolve()
    s = ind.compute_series(c, resolved)
    rsi = ref_rsi(df.close, 14).to_numpy()
    sma20, sma50 = df.close.rolling(20).mean().to_numpy(), df.close.rolling(50).mean().to_numpy()
    up, _, lo = (x.to_numpy() for x in ref_bbands(df.close, 20, 2))
    macd, sig, _ = (x.to_numpy() for x in ref_macd(df.close, 12, 26, 9))
    seen = set()
    for i in range(60, len(c)):
        by = {x["indicator"]: x for x in ind.signals_at(s, resolved, c, i)}
        want_rsi = "BUY" if rsi[i] < 30 else "SELL" if rsi[i] > 70 else None
        assert (by.get("rsi") or {}).get("signal") == want_rsi, i
        golden = sma20[i - 1] <= sma50[i - 1] and sma20[i] > sma50[i]
        death = sma20[i - 1] >= sma50[i - 1] and sma20[i] < sma50[i]
        assert by["sma"]["signal"] == ("BUY" if sma20[i] > sma50[i] else "SELL")
        assert (by["sma"]["event"] == "cross") == (golden or death), i
        if golden:
            assert by["sma"]["reason"].startswith("Golden cross: SMA20")
            seen.add("golden")
        if death:
            assert by["sma"]["reason"].startswith("Death cross: SMA20")
            seen.add("death")
        want_bb = "BUY" if c.close[i] < lo[i] else "SELL" if c.close[i] > up[i] else None
        assert (by.get("bbands") or {}).get("signal") == want_bb, i
        assert by["macd"]["signal"] == ("BUY" if macd[i] > sig[i] else "SELL")
        for x in by.values():
            assert x["reason"] and "\n" not in x["reason"]
        seen |= {f"{k}:{v['signal']}" for k, v in by.items()}
    # The recording has every case.
    assert {"rsi:BUY", "rsi:SELL", "bbands:BUY", "bbands:SELL", "macd:BUY", "macd:SELL", "golden", "death"} <= seen


# ---------------------------------------------------------------------------------------------
# Snapshots from stored klines; on-demand computation; the MCP tool
# ---------------------------------------------------------------------------------------------
def test_snapshots_at_each_closed_candle_equal_the_reference(symbols):
    from marketdata.models import IndicatorSnapshot, Kline
    from marketdata.selectors import indicators_compute
    from marketdata.services import indicator_snapshots_update, klines_sync

    klines_sync(symbol="BTCUSDT", interval="1m")
    written = indicator_snapshots_update(symbol="BTCUSDT", interval="1m", max_new=1000)
    stored = list(Kline.objects.filter(symbol="BTCUSDT", interval="1m").order_by("open_time"))
    assert written == len(stored) - 49  # every candle from the end of the SMA50 warm-up
    assert indicator_snapshots_update(symbol="BTCUSDT", interval="1m") == 0, "no duplicates"
    df = pd.DataFrame({"open_time": [k.open_time for k in stored], "high": [float(k.high) for k in stored],
                       "low": [float(k.low) for k in stored], "close": [float(k.close) for k in stored],
                       "volume": [float(k.volume) for k in stored]})
    snaps = {s.open_time: s for s in IndicatorSnapshot.objects.filter(symbol="BTCUSDT", interval="1m")}
    rsi, atr = ref_rsi(df.close, 14), ref_atr(df, 14)
    sma50, vwap = df.close.rolling(50).mean(), ref_vwap(df)
    for i in (49, 200, len(stored) - 1):
        snap = snaps[stored[i].open_time]
        assert snap.close == stored[i].close
        for got, want in ((snap.values["rsi"]["rsi"], rsi[i]), (snap.values["atr"]["atr"], atr[i]),
                          (snap.values["sma"]["sma50"], sma50[i]), (snap.values["vwap"]["vwap"], vwap[i])):
            assert float(got) == pytest.approx(want, rel=RTOL)
    latest = indicators_compute(symbol="BTCUSDT", interval="1m")
    last = snaps[stored[-1].open_time]
    assert latest["openTime"] == last.open_time and latest["values"] == last.values and latest["signals"] == last.signals


def test_get_indicators_tool_and_interval_errors(symbols, trader):
    from test_mcp import call

    _, _, key = trader
    err, got = call(key, "get_indicators", symbol="ETHUSDT", interval="15m", indicators=["rsi", "bbands"],
                    params={"rsi": {"period": 7}})
    assert not err, got
    assert set(got["values"]) == {"rsi", "bbands"} and got["values"]["rsi"]["params"] == {"period": 7}
    # On demand from the venue's 15m candles (none stored): equals the reference on the same candles.
    replay = symbols
    from marketdata.binance import make_client

    rows = make_client().get_klines(symbol="ETHUSDT", interval="15m", limit=1000)[:-1]
    closes = pd.Series([float(r[4]) for r in rows])
    assert got["openTime"] == rows[-1][0] and got["candles"] == len(rows)
    assert float(got["values"]["rsi"]["rsi"]) == pytest.approx(ref_rsi(closes, 7).iloc[-1], rel=RTOL)
    assert replay.model.has_symbol("ETHUSDT")
    err, text = call(key, "get_indicators", symbol="ETHUSDT", interval="7m")
    assert err and "Valid intervals: 1m, 3m, 5m, 15m" in text
    err, text = call(key, "get_indicators", symbol="ETHUSD", interval="1h")
    assert err and "[-1121]" in text and "ETHUSDT" in text
    err, text = call(key, "get_indicators", symbol="ETHUSDT", interval="1h", indicators=["foo"])
    assert err and "Valid indicators:" in text
