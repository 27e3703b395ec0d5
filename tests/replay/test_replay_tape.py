"""Trades, klines and the book agree, as on Binance.

First the recorded Binance sessions (``/work/shared/data/binance/ws``: ``@aggTrade``,
``@kline_1m`` and ``@depth@100ms`` recorded together) are measured: every kline has
``n = L - f + 1``; the growth of ``v``/``V`` between two updates of a candle is exactly the sum of
the aggregate trades printed in between (``V`` those with ``m`` false), and of ``q``/``Q`` up to
the per-trade rounding; aggregate ids and trade ids run without gaps; no ``depthUpdate`` is empty
and each one's ``U`` is the previous ``u`` + 1. Then the replay is held to the same invariants
over a long window, on REST (``klines``, ``trades``, ``historicalTrades``, ``aggTrades``,
``depth``) and on the WebSocket streams (``@trade``, ``@aggTrade``, ``@kline_1m``, ``@depth``).
"""
from __future__ import annotations

import asyncio
import glob
import json
import os
from decimal import ROUND_DOWN, Decimal

import pytest
import websockets

from replay import testing as rt
from replay.model import UPDATE_ID_BASE
from replay.server import ReplayServer

RECORDED = "/work/shared/data/binance/ws"
START_MS = 1_800_000_012_345
STEP = {"BTCUSDT": Decimal("0.00001"), "ETHUSDT": Decimal("0.0001")}
TICK = Decimal("0.01")


def _q8(x: Decimal) -> Decimal:
    """quoteQty as Binance (and the replay) print it: price x qty, 8 decimals, rounded down."""
    return x.quantize(Decimal("1e-8"), ROUND_DOWN)


def _jsonl(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line)["data"] for line in fh if line.strip()]


def _sessions() -> list[tuple[str, str]]:
    out = []
    for d in sorted(glob.glob(f"{RECORDED}/cryptofeed_*")):
        for kf in sorted(glob.glob(f"{d}/ws_*_kline_1m_*.jsonl")):
            out.append((d, os.path.basename(kf).split("_")[1]))
    return out


pytestmark = pytest.mark.skipif(not os.path.isdir(RECORDED), reason="the shared recordings are not on this machine")


# -- invariant checks shared by the recordings and the replay ----------------------------------------
def kline_violations(klines: list[dict]) -> int:
    """Klines whose ``n`` is not ``L - f + 1``."""
    return sum(1 for k in klines if k["n"] != k["L"] - k["f"] + 1)


def kline_growth_mismatches(updates: list[dict], aggs: list[dict]) -> tuple[int, int]:
    """(mismatches, checked): consecutive updates of one candle whose growth of v/V (exact) and
    q/Q (within 1e-8 per trade) is not the sum of the aggregate trades with ids in between."""
    checked = bad = 0
    for a, b in zip(updates, updates[1:]):
        if a["t"] != b["t"] or b["L"] <= a["L"]:
            continue
        lo, hi = a["L"] + 1, b["L"]
        sel = [x for x in aggs if x["f"] >= lo and x["l"] <= hi]
        if sum(x["l"] - x["f"] + 1 for x in sel) != hi - lo + 1:
            continue  # the stream did not deliver every trade in between
        checked += 1
        slack = Decimal("0.00000001") * (hi - lo + 1)
        sums = {
            "v": sum(Decimal(x["q"]) for x in sel),
            "V": sum(Decimal(x["q"]) for x in sel if not x["m"]),
            "q": sum(Decimal(x["q"]) * Decimal(x["p"]) for x in sel),
            "Q": sum(Decimal(x["q"]) * Decimal(x["p"]) for x in sel if not x["m"]),
        }
        grow = {f: Decimal(b[f]) - Decimal(a[f]) for f in "vVqQ"}
        if grow["v"] != sums["v"] or grow["V"] != sums["V"] or any(abs(grow[f] - sums[f]) > slack for f in "qQ"):
            bad += 1
    return bad, checked


def agg_gaps(aggs: list[dict]) -> int:
    """Places where aggregate ids or their trade ids are not contiguous."""
    return sum(1 for a, b in zip(aggs, aggs[1:]) if b["a"] != a["a"] + 1 or b["f"] != a["l"] + 1)


def depth_faults(events: list[dict]) -> tuple[int, int]:
    """(empty diffs, breaks of ``U == previous u + 1``)."""
    empty = sum(1 for e in events if not e["b"] and not e["a"])
    breaks = sum(1 for a, b in zip(events, events[1:]) if b["U"] != a["u"] + 1)
    return empty, breaks


# -- the recordings ----------------------------------------------------------------------------------
@pytest.mark.parametrize("session,symbol", _sessions(), ids=lambda x: os.path.basename(x)[:21] if "/" in x else x)
def test_recorded_sessions_have_the_invariants(session, symbol):
    klines = [e["k"] for e in _jsonl(glob.glob(f"{session}/ws_{symbol}_kline_1m_*.jsonl")[0])]
    assert kline_violations(klines) == 0
    agg_files = glob.glob(f"{session}/ws_{symbol}_aggTrade_*.jsonl")
    if agg_files:
        aggs = _jsonl(agg_files[0])
        assert agg_gaps(aggs) == 0
        bad, checked = kline_growth_mismatches(klines, aggs)
        assert bad == 0
        if symbol in ("BTCUSDT", "ETHUSDT", "DOTUSDT"):
            assert checked >= 25  # the 2021-04-04 session: ~90 s of both streams
    for df in glob.glob(f"{session}/ws_{symbol}_depth_100ms_*.jsonl"):
        assert depth_faults(_jsonl(df)) == (0, 0)


def test_recorded_depth_diffs_are_never_empty():
    events = [e for f in sorted(glob.glob(f"{RECORDED}/cryptofeed_*/ws_*_depth_100ms_*.jsonl")) for e in _jsonl(f)]
    assert len(events) >= 2000 and depth_faults(events)[0] == 0


# -- the replay on REST --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def paused():
    with ReplayServer(port=0, speed=60, start_wall_ms=START_MS, paused=True, weight_limit=10**6) as srv:
        yield srv


def _get(srv, path: str):
    status, _, body = rt.http("GET", srv.api_url + "/v3/" + path)
    assert status == 200, body
    return body


def _kline_dict(row: list) -> dict:
    return {"t": row[0], "o": row[1], "h": row[2], "l": row[3], "c": row[4], "v": row[5], "T": row[6], "q": row[7],
            "n": row[8], "V": row[9], "Q": row[10]}


def _check_candle(k: dict, trades: list[dict], step: Decimal) -> None:
    """A kline (REST row as a dict with f/L) against its trades (REST ``trades`` items)."""
    assert [t["id"] for t in trades] == list(range(k["f"], k["L"] + 1))
    assert k["n"] == k["L"] - k["f"] + 1 == len(trades)
    assert all(k["t"] <= t["time"] <= k["T"] for t in trades)
    assert all(Decimal(t["qty"]) % step == 0 and Decimal(t["qty"]) > 0 for t in trades)
    assert all(Decimal(t["price"]) % TICK == 0 for t in trades)
    assert all(Decimal(t["quoteQty"]) == _q8(Decimal(t["price"]) * Decimal(t["qty"]))
               for t in trades)
    taker_buys = [t for t in trades if not t["isBuyerMaker"]]
    assert Decimal(k["v"]) == sum(Decimal(t["qty"]) for t in trades)
    assert Decimal(k["q"]) == sum(Decimal(t["quoteQty"]) for t in trades)
    assert Decimal(k["V"]) == sum(Decimal(t["qty"]) for t in taker_buys)
    assert Decimal(k["Q"]) == sum(Decimal(t["quoteQty"]) for t in taker_buys)
    prices = [Decimal(t["price"]) for t in trades]
    assert (Decimal(k["o"]), Decimal(k["h"]), Decimal(k["l"]), Decimal(k["c"])) == (
        prices[0], max(prices), min(prices), prices[-1])


@pytest.mark.parametrize("symbol", ["BTCUSDT", "ETHUSDT"])
def test_rest_klines_trades_and_aggtrades_agree_over_hours(paused, symbol):
    srv = paused
    m = srv.model
    step = STEP[symbol]
    rows = _get(srv, f"klines?symbol={symbol}&interval=1m&limit=1000")
    assert len(rows) == 601 and rows[-1][6] > srv.clock.now_ms()  # 600 closed + the open one
    ks = []
    for r in rows:
        k = _kline_dict(r)
        kl = m.kline(symbol, "1m", min(r[6], srv.clock.now_ms()))
        k["f"], k["L"] = kl.first_trade_id, kl.last_trade_id
        ks.append(k)
    assert kline_violations(ks) == 0
    assert all(b["f"] == a["L"] + 1 for a, b in zip(ks, ks[1:]))  # ids run on from candle to candle
    recorded = m.tape(symbol).candles
    assert [k["n"] for k in ks[:600]] == [c.trades for c in recorded[:600]]  # the recorded counts
    # two hours of candles (and the open one) against every trade, paged through aggTrades
    window = ks[-121:]
    aggs = []
    from_id = window[0]["f"]
    while from_id <= window[-1]["L"]:
        page = _get(srv, f"aggTrades?symbol={symbol}&fromId={from_id}&limit=1000")
        aggs += page
        from_id = page[-1]["a"] + 1
    assert agg_gaps(aggs) == 0 and aggs[-1]["a"] == window[-1]["L"]
    by_id = {a["a"]: a for a in aggs}
    for k in window:
        trades = [{"id": i, "price": by_id[i]["p"], "qty": by_id[i]["q"], "time": by_id[i]["T"],
                   "isBuyerMaker": by_id[i]["m"],
                   "quoteQty": f'{_q8(Decimal(by_id[i]["p"]) * Decimal(by_id[i]["q"]))}'}
                  for i in range(k["f"], k["L"] + 1)]
        _check_candle(k, trades, step)
    # historicalTrades and trades say the same as aggTrades (one trade per aggregate)
    hist = _get(srv, f"historicalTrades?symbol={symbol}&fromId={window[-2]['f']}&limit=1000")
    for t in hist:
        a = by_id[t["id"]]
        assert (t["price"], t["qty"], t["time"], t["isBuyerMaker"]) == (a["p"], a["q"], a["T"], a["m"])
    recent = _get(srv, f"trades?symbol={symbol}&limit=1000")
    assert recent[-1]["id"] == window[-1]["L"] and recent[-1]["time"] <= srv.clock.now_ms()
    _check_candle(window[-1], [t for t in recent if t["id"] >= window[-1]["f"]], step)


@pytest.mark.parametrize("symbol", ["BTCUSDT", "ETHUSDT"])
def test_rest_depth_5000_levels_on_the_grid_around_the_last_trade(paused, symbol):
    srv = paused
    d = _get(srv, f"depth?symbol={symbol}&limit=5000")
    bids = [(Decimal(p), Decimal(q)) for p, q in d["bids"]]
    asks = [(Decimal(p), Decimal(q)) for p, q in d["asks"]]
    assert len(bids) == len(asks) == 5000
    assert all(a[0] > b[0] for a, b in zip(bids, bids[1:])) and all(a[0] < b[0] for a, b in zip(asks, asks[1:]))
    assert all(p % TICK == 0 and q % STEP[symbol] == 0 and q > 0 for p, q in bids + asks)
    now = srv.clock.now_ms()
    assert bids[0][0] == srv.model.last_trade(symbol, now - now % 1000).price and asks[0][0] == bids[0][0] + TICK
    assert d["lastUpdateId"] == _get(srv, f"depth?symbol={symbol}&limit=5")["lastUpdateId"]


# -- the replay on the WebSocket streams ------------------------------------------------------------------
def test_streams_trades_klines_and_depth_agree():
    """Four streams on one connection for several replay minutes (30x): every kline update is the
    sum of the trades streamed up to its ``L`` (the open candle too), ids run without gaps, depth
    diffs are never empty and chain; the depth diffs rebuild the REST book."""
    with ReplayServer(port=0, speed=30, start_wall_ms=START_MS) as srv:
        names = ["ethusdt@trade", "ethusdt@aggTrade", "ethusdt@kline_1m", "ethusdt@depth"]

        async def go():
            got = {n: [] for n in names}
            async with websockets.connect(srv.stream_url + "stream?streams=" + "/".join(names), max_size=None) as ws:
                loop = asyncio.get_running_loop()
                end = loop.time() + 9
                snap = None
                while loop.time() < end:
                    msg = json.loads(await asyncio.wait_for(ws.recv(), 5))
                    got[msg["stream"]].append(msg["data"])
                    if snap is None and len(got["ethusdt@depth"]) >= 2:
                        snap = await asyncio.to_thread(rt.http, "GET", srv.api_url + "/v3/depth?symbol=ETHUSDT&limit=5000")
            return got, snap[2]

        got, snap = rt.run(go(), 60)
    trades, aggs = got["ethusdt@trade"], got["ethusdt@aggTrade"]
    klines = [e["k"] for e in got["ethusdt@kline_1m"]]
    depth = got["ethusdt@depth"]
    assert len(trades) > 1000 and len(klines) > 200 and len(depth) > 50
    assert [t["t"] for t in trades] == list(range(trades[0]["t"], trades[0]["t"] + len(trades)))
    # the two streams are cut at the same wall-clock instant, not the same trade: the last few
    # trades of one may have arrived before their twins on the other (it happened on a loaded machine)
    both = min(len(aggs), len(trades))
    assert len(aggs) + len(trades) - 2 * both <= 50, (len(aggs), len(trades))
    assert agg_gaps(aggs) == 0 and [a["a"] for a in aggs[:both]] == [t["t"] for t in trades[:both]]
    assert all((a["p"], a["q"], a["T"], a["m"]) == (t["p"], t["q"], t["T"], t["m"]) for a, t in zip(aggs, trades))
    assert all(Decimal(t["q"]) % STEP["ETHUSDT"] == 0 and Decimal(t["p"]) % TICK == 0 for t in trades)
    # every kline update against the streamed trades (when the stream holds all of its candle's)
    assert kline_violations(klines) == 0
    by_id = {t["t"]: t for t in trades}
    checked = closed = 0
    for k in klines:
        if k["f"] not in by_id or k["L"] not in by_id:
            continue
        ts = [by_id[i] for i in range(k["f"], k["L"] + 1)]
        rest_like = [{"id": t["t"], "price": t["p"], "qty": t["q"], "time": t["T"], "isBuyerMaker": t["m"],
                      "quoteQty": f'{_q8(Decimal(t["p"]) * Decimal(t["q"]))}'}
                     for t in ts]
        _check_candle(k, rest_like, STEP["ETHUSDT"])
        checked += 1
        closed += k["x"]
    assert checked > 100 and closed >= 2
    # the same growth check as on the recordings, with aggTrades
    assert kline_growth_mismatches(klines, aggs)[0] == 0
    # depth: no empty diff, U = previous u + 1, and the diffs rebuild the book from the snapshot
    assert depth_faults(depth) == (0, 0)
    bids = {p: q for p, q in snap["bids"]}
    asks = {p: q for p, q in snap["asks"]}
    applied = 0
    for e in depth:
        if e["u"] <= snap["lastUpdateId"]:
            continue
        for book, side in ((bids, e["b"]), (asks, e["a"])):
            for p, q in side:
                if Decimal(q) == 0:
                    book.pop(p, None)
                else:
                    book[p] = q
        applied += 1
        last_u = e["u"]
    assert applied > 20
    expected = srv.model.depth("ETHUSDT", srv.model.book_time("ETHUSDT", last_u - UPDATE_ID_BASE), 5000)
    assert sorted(((Decimal(p), Decimal(q)) for p, q in bids.items()), reverse=True)[:5000] == expected.bids
    assert sorted((Decimal(p), Decimal(q)) for p, q in asks.items())[:5000] == expected.asks
