"""Conformance check: unmodified ccxt and ccxt.pro against the replay exchange, only its URLs changed.

REST: ``load_markets`` (exchangeInfo), ``fetch_ticker``, ``fetch_order_book``, ``fetch_ohlcv`` and,
with an API key of the replay, ``create_order`` (a MARKET buy) and ``fetch_balance``. ccxt.pro:
``watch_ticker``, ``watch_order_book`` (``/ws/<id>`` then ``SUBSCRIBE``, depth diffs applied to a
REST snapshot) and ``watch_ohlcv``. Prints one JSON object; ``"ok": true`` when every step worked.

ccxt is not a project dependency: ccxt 4.5.90 pins ``uvloop==0.22.1`` (and exact multidict, idna,
... versions), which conflicts with requirements.txt's ``uvloop==0.23.0``. It runs from a venv of
its own (``tests/replay/test_ccxt.py`` makes ``var/ccxt-venv``) against a replay started with the
project's::

    python3 -m venv var/ccxt-venv && var/ccxt-venv/bin/pip install 'ccxt==4.5.90'
    .venv/bin/python -m replay --port 9911 --account KEY:SECRET &
    var/ccxt-venv/bin/python scripts/ccxt_replay_check.py http://127.0.0.1:9911 KEY SECRET
"""
import asyncio
import json
import sys

import ccxt.pro as pro

base = sys.argv[1]  # http://127.0.0.1:PORT
api_key, secret = (sys.argv[2], sys.argv[3]) if len(sys.argv) > 3 else (None, None)
ws = base.replace("http", "ws", 1)


def exchange() -> pro.binance:
    # spot only: no margin pairs (sapi) and no currencies (sapi) lookups, which the replay does not serve
    options = {"options": {"defaultType": "spot", "fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False,
                           "fetchMargins": False}}
    if api_key:
        options.update({"apiKey": api_key, "secret": secret})
    e = pro.binance(options)
    e.urls["api"]["public"] = base + "/api/v3"
    e.urls["api"]["private"] = base + "/api/v3"
    e.urls["api"]["v1"] = base + "/api/v1"
    e.urls["api"]["sapi"] = base + "/sapi/v1"  # never the real Binance, whatever ccxt calls
    e.urls["api"]["ws"]["spot"] = ws + "/ws"
    e.urls["api"]["ws"]["ws-api"]["spot"] = ws + "/ws-api/v3"
    return e


async def main():
    e = exchange()
    out = {}
    step = "load_markets"
    try:
        await e.load_markets()
        out["markets"] = sorted(s for s in e.markets if "/" in s)[:5]
        step = "fetch_ticker"
        t = await e.fetch_ticker("BTC/USDT")
        out["rest_ticker"] = {k: t[k] for k in ("symbol", "last", "bid", "ask", "baseVolume", "timestamp")}
        step = "fetch_order_book"
        ob = await e.fetch_order_book("BTC/USDT", limit=5)
        out["rest_order_book"] = {"bids": ob["bids"][:5], "asks": ob["asks"][:5], "nonce": ob.get("nonce")}
        step = "fetch_ohlcv"
        out["rest_ohlcv"] = await e.fetch_ohlcv("BTC/USDT", "1m", limit=3)
        if api_key:
            step = "create_order"
            o = await e.create_order("BTC/USDT", "market", "buy", 0.002)
            out["order"] = {k: o[k] for k in ("id", "status", "side", "type", "filled", "amount", "average", "cost")}
            out["order"]["fees"] = [{"currency": f["currency"], "cost": f["cost"]} for f in o.get("fees") or []]
            step = "fetch_balance"
            b = await e.fetch_balance()
            out["balance"] = {a: b[a] for a in ("BTC", "USDT") if a in b}
        step = "watch_ticker"
        t = await asyncio.wait_for(e.watch_ticker("BTC/USDT"), 20)
        out["ticker"] = {k: t[k] for k in ("symbol", "last", "bid", "ask", "baseVolume", "timestamp")}
        step = "watch_order_book"
        ob = await asyncio.wait_for(e.watch_order_book("BTC/USDT", limit=5), 30)
        ob = await asyncio.wait_for(e.watch_order_book("BTC/USDT", limit=5), 30)
        out["order_book"] = {"bids": ob["bids"][:2], "asks": ob["asks"][:2], "nonce": ob.get("nonce")}
        step = "watch_ohlcv"
        k = await asyncio.wait_for(e.watch_ohlcv("BTC/USDT", "1m"), 20)
        out["ohlcv"] = k[-1]
        out["ok"] = True
    except Exception as exc:  # report which step failed, as JSON
        out["error"] = f"{step}: {type(exc).__name__}: {exc}"
    finally:
        await e.close()
    print(json.dumps(out, default=str))


asyncio.run(main())
