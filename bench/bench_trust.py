"""Cost of the trust-boundary envelope (risk.trust.envelope) on typical tool results, in µs per call.

Run: .venv/bin/python bench/bench_trust.py
"""
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from risk.trust import envelope
ticker = {"symbol": "BTCUSDT", "bidPrice": "7200.01", "bidQty": "1.2", "askPrice": "7200.02", "askQty": "0.3", "time": 1, "lastPrice": "7200.0", "quoteSource": "stream"}
kl = {"symbol": "BTCUSDT", "interval": "1m", "klines": [{"openTime": i, "open": "1", "high": "1", "low": "1", "close": "1", "volume": "1", "closeTime": i, "quoteVolume": "1", "trades": 3, "takerBuyBase": "1", "takerBuyQuote": "1"} for i in range(1000)], "nextStartTime": None}
book = {"symbol": "BTCUSDT", "lastUpdateId": 1, "bids": [["1", "1"]] * 5000, "asks": [["1", "1"]] * 5000}
orders = {"accountId": 1, "orders": [{"symbol": "BTCUSDT", "clientOrderId": f"tmcp-{i:024d}", "rejectReason": None, "fills": [{"symbol": "BTCUSDT", "commissionAsset": "BTC", "price": "1"}]} for i in range(500)]}
for name, v in [("get_ticker", ticker), ("get_klines 1000", kl), ("get_order_book 5000", book), ("list_orders 500", orders)]:
    n = 2000 if name == "get_ticker" else 50
    t = timeit.timeit(lambda: envelope(name, v), number=n) / n
    print(f"{name:22s} {t*1e6:9.1f} µs")
