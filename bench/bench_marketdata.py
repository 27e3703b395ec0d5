"""Market-data benchmark (not a test: prints figures, asserts nothing).

1. Stream throughput: combined-stream messages (raw JSON text, as the socket delivers it) built
   from the replay model's recorded real data (trade, aggTrade, bookTicker, kline_1m of BTCUSDT and
   ETHUSDT), pushed through the ingester's hot path: ``orjson.loads`` → ``Ingester.ingest`` →
   ``Ingester.flush`` every ``batch`` messages (one pipelined Redis round trip: latest value per
   stream, quote/kline caches, the recent-message buffer LPUSH+LTRIM; then one coalesced
   ``group_send`` per stream to the real Redis channel layer, with a listener in each group).
   Reported for several batch sizes, and for flushing after every message (no batching).
2. Indicator set: the default set (RSI, MACD, SMA20/50, EMA12/26, BBANDS, ATR, STOCH, OBV, VWAP)
   plus signals at the last candle, for 500 symbols x 1,000 candles (windows of the recorded
   BTCUSDT/ETHUSDT tapes), starting from Decimal rows as the database returns them; the
   Decimal→float conversion is timed separately.

Run: ``.venv/bin/python bench/bench_marketdata.py [--messages 300000] [--symbols 500] [--candles 1000]``
(``REDIS_URL`` defaults to the machine's Redis on 6379; keys under ``tmcp-bench-md:``, removed after).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
os.environ.setdefault("TRADINGMCP_DATA_DIR", str(ROOT / "var" / "bench"))
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
os.environ.setdefault("REDIS_KEY_PREFIX", "tmcp-bench-md:")
os.environ.setdefault("LOG_LEVEL", "WARNING")

import django  # noqa: E402

django.setup()

import orjson  # noqa: E402
from django.conf import settings  # noqa: E402

from marketdata import indicators as ind  # noqa: E402
from replay import wire  # noqa: E402
from replay.model import ReplayModel  # noqa: E402
from replay.testing import recorded_rows  # noqa: E402


def build_messages(n: int) -> list[bytes]:
    """``n`` raw combined-stream messages, round-robin over 8 streams, from the replay model."""
    model = ReplayModel(start_wall_ms=int(time.time() * 1000))
    out: list[bytes] = []
    i = 0
    while len(out) < n:
        for sym in ("BTCUSDT", "ETHUSDT"):
            low = sym.lower()
            trade = model.trade_at_index(sym, i)
            t = trade.time
            k = model.kline_at_index(sym, "1m", i)
            ev = [
                (f"{low}@trade", wire.trade_event(sym, trade)),
                (f"{low}@aggTrade", wire.agg_trade_event(sym, trade)),
                (f"{low}@bookTicker", wire.book_ticker_event(model.book_ticker(sym, t))),
                (f"{low}@kline_1m", wire.kline_event(sym, k, model.kline_event_time(sym, "1m", i))),
            ]
            out += [orjson.dumps({"stream": s, "data": d}) for s, d in ev]
        i += 1
    return out[:n]


async def stream_bench(raw: list[bytes], batch: int, push_every_s: float = 0.0) -> float:
    """Messages/s through parse → ingest → flush every ``batch`` messages; channel-layer pushes at
    most every ``push_every_s`` (0: at every flush)."""
    settings.MARKET_PUSH_MIN_INTERVAL_S = push_every_s
    from channels.layers import get_channel_layer

    from core.redis import async_redis
    from marketdata.ingester import Ingester, market_group, stream_group

    layer = get_channel_layer()
    redis = async_redis()
    ingester = Ingester(["BTCUSDT", "ETHUSDT"], store_klines=False, redis=redis, layer=layer)
    listeners = []
    for g in [market_group("BTCUSDT"), market_group("ETHUSDT")] + [
            stream_group(f"{s}@{k}") for s in ("btcusdt", "ethusdt") for k in ("trade", "aggTrade")]:
        ch = await layer.new_channel()
        await layer.group_add(g, ch)
        listeners.append(ch)
    loads = orjson.loads
    ingest = ingester.ingest
    t0 = time.perf_counter()
    for start in range(0, len(raw), batch):
        for m in raw[start:start + batch]:
            ingest(loads(m))
        await ingester.flush()
    elapsed = time.perf_counter() - t0
    await redis.aclose()
    await layer.flush()
    return len(raw) / elapsed


def indicator_bench(n_symbols: int, n_candles: int) -> dict:
    tapes = []
    for sym in ("BTCUSDT", "ETHUSDT"):
        rows = recorded_rows(sym)
        tapes.append([(int(r[0]), Decimal(r[1]), Decimal(r[2]), Decimal(r[3]), Decimal(r[4]), Decimal(r[5])) for r in rows])
    windows = []
    for s in range(n_symbols):
        tape = tapes[s % 2]
        off = (s * 37) % (len(tape) - n_candles)
        windows.append(tape[off:off + n_candles])
    # As selectors.candles_rows returns them: OHLCV cast to double by the database.
    float_windows = [[(r[0], float(r[1]), float(r[2]), float(r[3]), float(r[4]), float(r[5])) for r in w] for w in windows]
    t0 = time.perf_counter()
    candles = [ind.Candles.from_rows(w) for w in float_windows]
    t1 = time.perf_counter()
    resolved = ind.resolve()
    snaps = [ind.snapshot(c, resolved) for c in candles]
    t2 = time.perf_counter()
    [ind.Candles.from_rows(w) for w in windows]
    t3 = time.perf_counter()
    assert len(snaps) == n_symbols
    return {"arrays_s": t1 - t0, "compute_s": t2 - t1, "decimal_s": t3 - t2}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=300_000)
    ap.add_argument("--symbols", type=int, default=500)
    ap.add_argument("--candles", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    print(f"building {args.messages:,} messages from the replay model ...", flush=True)
    raw = build_messages(args.messages)
    print(f"avg message size {sum(map(len, raw)) / len(raw):.0f} bytes; Redis {settings.REDIS_URL}; "
          f"buffer {settings.MARKET_STREAM_BUFFER}/stream")
    print("\nstream: parse -> cache (Redis pipeline) -> channel layer, messages/s (best of rounds)")
    for push in (0.0, 0.1):
        label = "push at every flush" if push == 0 else f"push coalesced every {push:g} s (production)"
        print(f"  {label}:")
        for batch in (100, 1000, 5000, 20000):
            best = max(asyncio.run(stream_bench(raw, batch, push)) for _ in range(args.rounds))
            print(f"    flush every {batch:>6,} messages: {best:>10,.0f} msg/s")
    few = raw[:5000]
    unbatched = asyncio.run(stream_bench(few, 1))
    print(f"  no batching (flush + push per message): {unbatched:>10,.0f} msg/s ({len(few):,} messages)")

    print(f"\nindicators: default set + signals, {args.symbols} symbols x {args.candles} candles")
    best = None
    for _ in range(args.rounds):
        r = indicator_bench(args.symbols, args.candles)
        best = r if best is None or r["compute_s"] < best["compute_s"] else best
    print(f"  rows (floats, as the DB casts them) -> arrays:     {best['arrays_s']:.3f} s")
    print(f"  compute (TA-Lib + VWAP + signals + string values): {best['compute_s']:.3f} s "
          f"({best['compute_s'] / args.symbols * 1e3:.2f} ms/symbol)")
    print(f"  total:                                             {best['compute_s'] + best['arrays_s']:.3f} s")
    print(f"  (for comparison, Decimal rows -> arrays in Python: {best['decimal_s']:.3f} s; why the DB casts)")

    from core.redis import get_redis

    r = get_redis()
    keys = list(r.scan_iter(match=f"{settings.REDIS_KEY_PREFIX}*", count=1000))
    if keys:
        r.delete(*keys)


if __name__ == "__main__":
    main()
