"""Conformance check: unmodified ccxt.pro against the replay exchange, only its URLs changed.

``load_markets`` (REST exchangeInfo), ``watch_ticker``, ``watch_order_book`` (``/ws/<id>`` then
``SUBSCRIBE``, depth diffs applied to a REST snapshot) and ``watch_ohlcv``. Prints one JSON line,
``"ok": true`` when all worked.

ccxt is not a project dependency: ccxt 4.5.90 pins ``uvloop==0.22.1`` (and exact multidict, idna,
... versions), which conflicts with requirements.txt's ``uvloop==0.23.0``. Run it from a venv of
its own against a replay started with the project's::

    python3 -m venv /tmp/ccxtvenv && /tmp/ccxtvenv/bin/pip install 'ccxt==4.5.90'
    .venv/bin/python -m replay --port 9911 &
    /tmp/ccxtvenv/bin/python scripts/ccxt_replay_check.py http://127.0.0.1:9911
"""
import asyncio, sys, json
import ccxt.pro as pro

base = sys.argv[1]  # http://127.0.0.1:PORT
ws = base.replace("http", "ws")

async def main():
    e = pro.binance({"options": {"defaultType": "spot", "fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False}})
    e.urls["api"]["public"] = base + "/api/v3"
    e.urls["api"]["private"] = base + "/api/v3"
    e.urls["api"]["v1"] = base + "/api/v1"
    e.urls["api"]["ws"]["spot"] = ws + "/ws"
    e.urls["api"]["ws"]["ws-api"]["spot"] = ws + "/ws-api/v3"
    out = {}
    try:
        await e.load_markets()
        out["markets"] = sorted(s for s in e.markets if "/" in s)[:5]
        t = await asyncio.wait_for(e.watch_ticker("BTC/USDT"), 20)
        out["ticker"] = {k: t[k] for k in ("symbol", "last", "bid", "ask", "baseVolume")}
        ob = await asyncio.wait_for(e.watch_order_book("BTC/USDT", limit=5), 30)
        ob = await asyncio.wait_for(e.watch_order_book("BTC/USDT", limit=5), 30)
        out["order_book"] = {"bids": ob["bids"][:2], "asks": ob["asks"][:2], "nonce": ob.get("nonce")}
        k = await asyncio.wait_for(e.watch_ohlcv("BTC/USDT", "1m"), 20)
        out["ohlcv"] = k[-1]
        out["ok"] = True
    except Exception as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        await e.close()
    print(json.dumps(out, default=str))

asyncio.run(main())
