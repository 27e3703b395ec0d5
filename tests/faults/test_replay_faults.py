"""The venue misbehaving: the replay exchange drops every WebSocket every few seconds and answers
REST calls with 429/418 (``Retry-After``), 500 and 503, through its control API
(``POST /_replay/drop``, ``POST /_replay/fail``).

- The ingester (60x replay) backs off and reconnects; the stored 1m series stays the recording,
  with no gap and no duplicate.
- Orders of a testnet account: every failure reaches the caller as a typed venue error (or is
  absorbed by the lookup-then-resend rule); a retry with the same client_order_id never makes a
  second order; every order on the exchange carries one of our client_order_ids and is booked
  locally exactly once with the exchange's own fills; balances equal the exchange's.
(A read timeout after the exchange took the order: tests/test_venue_binance.py.)
"""
import random
import threading
import time

import pytest

from conftest import wait_until
from faultkit import sqlite_pass
from marketdata.binance import VenueRateLimited
from replay.testing import http
from test_marketdata_ingester import assert_series_is_the_recording, fast_replay  # noqa: F401  (fixture)
from test_marketdata_tools import IngesterThread
from test_venue_binance import _clean_intents, assert_balances_match, ctx, ex, exchange_trades, local_fills  # noqa: F401
from trading import services
from core.errors import TradingError
from trading.models import Order
from trading.venues import binance as bv

pytestmark = [pytest.mark.timeout(180), sqlite_pass]


class Chaos(threading.Thread):
    """Every ``every_s``: drop all WebSockets; every other time also make the next 1-2 REST calls
    fail (429/418/500/503, seeded, so every run injects the same sequence)."""

    def __init__(self, replay, every_s=6.0, paths=("/api/v3/klines", "/api/v3/ticker/bookTicker", "/api/v3/exchangeInfo")):
        super().__init__(daemon=True)
        self.replay, self.every_s, self.paths = replay, every_s, list(paths)
        self.stop = threading.Event()
        self.rng = random.Random(8)
        self.drops = self.failures = 0

    def run(self):
        while not self.stop.wait(self.every_s):
            status = self.rng.choice([429, 500, 503, 418])
            if self.drops % 2 == 0:
                count = self.rng.randint(1, 2)
                code, _, _body = http("POST", f"{self.replay.base_url}/_replay/fail",
                                      {"status": status, "count": count, "retry_after": 1, "paths": self.paths})
                assert code == 200
                self.failures += count
            code, _, _body = http("POST", f"{self.replay.base_url}/_replay/drop")
            assert code == 200
            self.drops += 1


def test_ingester_survives_dropped_sockets_and_failing_rest(fast_replay):
    replay = fast_replay
    chaos = Chaos(replay)
    with IngesterThread(["BTCUSDT"], snapshots=False) as ing:
        wait_until(lambda: ing.backfills >= 1 and ing.closed_stored >= 2, timeout=45, what="first closed candles")
        chaos.start()
        try:
            wait_until(lambda: chaos.drops >= 4 and ing.connects >= 4, timeout=120, what="several drops and reconnects")
        finally:
            chaos.stop.set()
            chaos.join(10)
            http("DELETE", f"{replay.base_url}/_replay/fail")
        # Calm again: it catches up by itself (backfill on reconnect) and streams on.
        connects = ing.connects
        wait_until(lambda: ing.backfills >= connects, timeout=60, what="the backfill after the last reconnect")
        closed = ing.closed_stored
        wait_until(lambda: ing.closed_stored >= closed + 2, timeout=45, what="candles after the chaos")
    replay.clock.pause()
    assert_series_is_the_recording(replay, "BTCUSDT", min_rows=125)
    assert chaos.failures > 0


FAULTS = [None, (500, 1), (503, 2), (429, 1), (500, 3), (418, 1), (503, 1), None, (500, 2), (429, 2)]


def test_orders_through_failing_rest_are_placed_once_with_their_client_order_id(ctx, django_capture_on_commit_callbacks):
    c = ctx
    remote = c.ex.accounts.account(c.key)
    typed, absorbed = [], 0
    with django_capture_on_commit_callbacks(execute=True):
        for i, fault in enumerate(FAULTS):
            cid = f"chaos-{i}"
            side = "BUY" if i % 2 == 0 else "SELL"
            if fault:
                status, count = fault
                http("POST", c.ex.base_url + "/_replay/fail",
                     {"status": status, "count": count, "retry_after": 1, "paths": ["/api/v3/order"]})
            for attempt in range(6):
                try:
                    result = services.order_place(account=c.account, actor_user=c.user, channel="api", symbol="BTCUSDT",
                                                  side=side, quantity="0.002", client_order_id=cid)
                    assert result.order["status"] == "FILLED", result.order
                    if fault and attempt == 0:
                        absorbed += 1
                    break
                except (bv.VenueError, VenueRateLimited) as exc:
                    # Typed, with Binance's code and a reason; the agent retries with the same id.
                    assert isinstance(exc, TradingError) and exc.code in (-1003, -1007), exc
                    typed.append((cid, exc.code))
                    time.sleep(1.1 if exc.code == -1003 else 0.1)
            else:
                raise AssertionError(f"{cid} never went through")
    http("DELETE", c.ex.base_url + "/_replay/fail")
    cids = [f"chaos-{i}" for i in range(len(FAULTS))]
    on_exchange = [o.client_order_id for o in remote.orders.values()]
    assert sorted(on_exchange) == sorted(cids), "each order sent under its own client_order_id, once"
    for cid in cids:
        o = Order.objects.get(account=c.account, client_order_id=cid)
        assert o.status == "FILLED" and local_fills(o.pk) == exchange_trades(c, o.exchange_order_id)
    assert typed and absorbed, (typed, absorbed)  # both paths were exercised
    assert bv.intents(c.account.pk) == {}
    assert_balances_match(c)
