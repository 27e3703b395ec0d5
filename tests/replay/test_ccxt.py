"""Unmodified ccxt 4.5.90 and ccxt.pro against the replay, only its URLs changed
(``scripts/ccxt_replay_check.py``): REST ticker, order book, OHLCV and a MARKET order on a replay
account; ccxt.pro's ``watch_ticker``, ``watch_order_book`` and ``watch_ohlcv``.

ccxt cannot join requirements.txt (it pins ``uvloop==0.22.1``; ours is 0.23.0), so it lives in a
venv of its own, ``var/ccxt-venv``, made on first use and kept between runs (a stamp file names
the installed version)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from replay.model import UPDATE_ID_BASE
from replay.server import ReplayServer

ROOT = Path(__file__).resolve().parents[2]
CCXT = "ccxt==4.5.90"
VENV = ROOT / "var" / "ccxt-venv"
KEY, SECRET = "c" * 64, "d" * 64


def _ccxt_python() -> Path:
    """``var/ccxt-venv/bin/python`` with ccxt installed (created once; atomic via a rename)."""
    python = VENV / "bin" / "python"
    stamp = VENV / ".installed"
    if python.exists() and stamp.exists() and stamp.read_text() == CCXT:
        return python
    tmp = VENV.with_name(f"ccxt-venv.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(tmp)], check=True, timeout=120)
    pip = subprocess.run([str(tmp / "bin" / "python"), "-m", "pip", "install", "--quiet", CCXT],
                         capture_output=True, text=True, timeout=600)
    if pip.returncode:
        shutil.rmtree(tmp, ignore_errors=True)
        pytest.fail(f"pip install {CCXT} failed: {pip.stderr[-2000:]}")
    (tmp / ".installed").write_text(CCXT)
    shutil.rmtree(VENV, ignore_errors=True)
    tmp.rename(VENV)  # bin/python finds its packages through pyvenv.cfg next to it, wherever it is
    return python


@pytest.fixture(scope="module")
def ccxt_python() -> Path:
    return _ccxt_python()


def test_ccxt_pins_a_uvloop_our_requirements_cannot_take(ccxt_python):
    """Why ccxt has a venv of its own: its uvloop pin differs from requirements.txt's."""
    reqs = subprocess.run([str(ccxt_python), "-c", "import importlib.metadata as m; print('\\n'.join(m.requires('ccxt')))"],
                          capture_output=True, text=True, check=True).stdout.splitlines()
    ccxt_uvloop = next(r.split(";")[0].strip() for r in reqs if r.startswith("uvloop"))
    ours = next(line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()
                if line.startswith("uvloop"))
    assert ccxt_uvloop.startswith("uvloop==") and ours.startswith("uvloop==") and ccxt_uvloop != ours


def test_ccxt_rest_and_ccxt_pro_streams_work_with_only_the_urls_changed(ccxt_python):
    with ReplayServer(port=0, speed=1, accounts={KEY: SECRET}, starting_balances={"USDT": "10000"}) as srv:
        run = subprocess.run([str(ccxt_python), str(ROOT / "scripts" / "ccxt_replay_check.py"), srv.base_url, KEY, SECRET],
                             capture_output=True, text=True, timeout=90)
        out = json.loads(run.stdout.strip().splitlines()[-1]) if run.stdout.strip() else {"error": run.stderr[-2000:]}
        assert out.get("ok") is True, out
        m = srv.model
        now = srv.clock.now_ms()
        acct = srv.accounts.account(KEY)
        orders = list(acct.orders.values())
    assert {"BTC/USDT", "ETH/USDT"} <= set(out["markets"])
    # REST: the ticker and book are the replay's (1 tick spread, ids the book's update ids)
    rt_ = out["rest_ticker"]
    assert rt_["symbol"] == "BTC/USDT" and Decimal(str(rt_["ask"])) - Decimal(str(rt_["bid"])) == Decimal("0.01")
    ob = out["rest_order_book"]
    assert len(ob["bids"]) == len(ob["asks"]) == 5 and ob["bids"][0][0] < ob["asks"][0][0]
    assert [b[0] for b in ob["bids"]] == sorted((b[0] for b in ob["bids"]), reverse=True)
    second = ob["nonce"] - UPDATE_ID_BASE
    book = m.depth_at_second("BTCUSDT", second, 5)
    assert ob["bids"] == [[float(p), float(q)] for p, q in book.bids] and ob["asks"] == [[float(p), float(q)] for p, q in book.asks]
    # OHLCV: the closed candles are the model's
    for row in out["rest_ohlcv"][:-1]:
        k = m.kline("BTCUSDT", "1m", row[0] + 59_999)
        assert row == [k.open_time, float(k.open), float(k.high), float(k.low), float(k.close), float(k.volume)]
    # the MARKET order: filled on the replay account, as ccxt reports it
    order = out["order"]
    assert (order["status"], order["side"], order["type"], order["filled"], order["amount"]) == (
        "closed", "buy", "market", 0.002, 0.002)
    assert len(orders) == 1 and str(orders[0].order_id) == order["id"] and orders[0].status == "FILLED"
    assert order["fees"] == [{"currency": "BTC", "cost": 0.000002}]
    assert out["balance"]["BTC"]["free"] == 0.001998 and out["balance"]["USDT"]["free"] == pytest.approx(10000 - order["cost"])
    # ccxt.pro
    t = out["ticker"]  # ccxt.pro subscribes <symbol>@miniTicker: no bid/ask in it
    tk = m.ticker_24h("BTCUSDT", t["timestamp"])
    assert (t["symbol"], t["last"], t["baseVolume"]) == ("BTC/USDT", float(tk.last_price), float(tk.volume))
    book = out["order_book"]
    assert book["bids"][0][0] < book["asks"][0][0] and book["nonce"] > UPDATE_ID_BASE
    k = out["ohlcv"]
    assert k[0] % 60_000 == 0 and k[0] <= now
    assert k[1] == float(m.kline("BTCUSDT", "1m", k[0]).open)  # the candle's open is the minute's first print
