"""The paper matcher process logic against the replay exchange at 60x: a resting LIMIT order fills
as maker when a replayed trade prints through its price."""
import asyncio
import threading
import time
from decimal import Decimal

import pytest
from django.conf import settings

from conftest import cache_quotes, sqlite_pass_only, wait_until
from replay.server import ReplayServer
from marketdata.services import exchange_info_sync
from trading.matcher import PaperMatcher
from trading.models import Balance, Fill, Order
from trading.services import order_place

TICK = Decimal("0.01")


@pytest.fixture
def fast_replay():
    start = (int(time.time() * 1000) // 60_000) * 60_000
    srv = ReplayServer(port=0, speed=60.0, start_wall_ms=start)
    srv.start()
    from trading.venues import paper

    from core.redis import get_redis
    from trading.matcher import _last_trade_key

    # Trade ids restart with each replay server: so must the matcher's memory of the last one it matched.
    paper._last_trade_id.clear()
    get_redis().delete(_last_trade_key("BTCUSDT"))
    old = (settings.BINANCE_API_URL, settings.BINANCE_STREAM_URL)
    settings.BINANCE_API_URL, settings.BINANCE_STREAM_URL = srv.api_url, srv.stream_url
    yield srv
    settings.BINANCE_API_URL, settings.BINANCE_STREAM_URL = old
    srv.stop()


def first_print_through(m, now: int, bid: Decimal, ask: Decimal, qty=Decimal("0.002")):
    """``(side, price, index)``: the first print after trade ``now`` through a price outside the
    quote, either way, big enough to fill ``qty`` whole: a resting BUY under the bid or SELL over
    the ask that this print (and no earlier one) trades through. A smaller print through a level
    moves that level on to its price (replayed trade sizes vary like the recorded ones)."""
    below, above = bid - TICK, ask + TICK
    for j in range(now + 1, now + 50_000):
        tr = m.trade_at_index("BTCUSDT", j)
        if tr.price < below or tr.price > above:
            if tr.qty >= qty:
                return ("BUY", below, j) if tr.price < below else ("SELL", above, j)
            below, above = min(below, tr.price), max(above, tr.price)
    raise AssertionError("no print big enough through a level outside the quote")


@pytest.mark.django_db(transaction=True)
def test_resting_limit_fills_on_a_replayed_print_through_it(fast_replay, trader):
    user, account, _ = trader
    exchange_info_sync()
    fast_replay.clock.pause()  # price the order on a still market; the prints resume below
    book = {b["symbol"]: b for b in cache_quotes(["BTCUSDT"])}["BTCUSDT"]
    bid, ask = Decimal(book["bidPrice"]), Decimal(book["askPrice"])
    Balance.objects.update_or_create(account=account, asset="BTC", defaults={"free": Decimal("1")})
    m = fast_replay.model
    side, price, _ = first_print_through(m, m.trade_index("BTCUSDT", fast_replay.clock.now_ms()), bid, ask)
    order = order_place(account=account, actor_user=user, channel="api", symbol="BTCUSDT", side=side,
                        order_type="LIMIT", quantity="0.002", price=str(price), time_in_force="GTC").order
    assert order["status"] == "NEW"

    matcher = PaperMatcher(["BTCUSDT"])
    stop = _run_matcher(matcher)
    try:
        wait_until(lambda: matcher.sessions >= 1, timeout=30, what="the matcher to subscribe")
        fast_replay.clock.resume()  # the prints start once the matcher listens
        wait_until(lambda: Order.objects.get(pk=order["orderId"]).status == "FILLED", timeout=30,
                   what="the resting order to fill on a replayed trade")
        # The fill commits in paper_match's worker thread before the matcher's loop counts it: the
        # order can read FILLED here a moment before the count moves (this test's old flake).
        wait_until(lambda: matcher.fills >= 1, timeout=10, what="the matcher to count the fill it made")
    finally:
        stop()
    fill = Fill.objects.get(order_id=order["orderId"])
    assert fill.price == price and fill.is_maker and fill.qty == Decimal("0.002")
    assert matcher.trades > 0


def _run_matcher(matcher):
    holder = {}

    async def main():
        holder["loop"] = asyncio.get_running_loop()
        await matcher.run()

    def run():  # as the paper_matcher command runs it: asyncio.run cancels what is left at the end
        asyncio.run(main())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    wait_until(lambda: "loop" in holder, timeout=10, what="the matcher loop")

    def stop():
        from asgiref.sync import SyncToAsync
        from django.db import connections

        holder["loop"].call_soon_threadsafe(matcher.stop)
        thread.join(15)
        stop.stopped = not thread.is_alive()
        # paper_match ran in asgiref's sync thread: close its connection, or the test database
        # cannot be dropped at the end of the run ("being accessed by other users").
        SyncToAsync.single_thread_executor.submit(connections.close_all).result(10)
    return stop


@pytest.mark.django_db(transaction=True)
def test_prints_missed_while_no_matcher_ran_are_matched_on_restart(fast_replay, trader):
    """A matcher that stops (crash, takeover) must not lose the prints of the gap: the next one
    replays them from the last matched trade id. The clock stays paused after the gap, so no live
    print can fill the order: only the catch-up can."""
    user, account, _ = trader
    exchange_info_sync()
    m = fast_replay.model
    first = PaperMatcher(["BTCUSDT"])
    stop = _run_matcher(first)
    try:
        wait_until(lambda: first.trades >= 3, timeout=30, what="the first matcher to match a few prints")
    finally:
        stop()
    from core.redis import get_redis
    from trading.matcher import _last_trade_key

    saved = get_redis().get(_last_trade_key("BTCUSDT"))
    assert saved is not None and int(saved) == first._last_ids["BTCUSDT"], (saved, first._last_ids)
    fast_replay.clock.pause()
    book = {b["symbol"]: b for b in cache_quotes(["BTCUSDT"])}["BTCUSDT"]
    bid, ask = Decimal(book["bidPrice"]), Decimal(book["askPrice"])
    Balance.objects.update_or_create(account=account, asset="BTC", defaults={"free": Decimal("1")})
    now = m.trade_index("BTCUSDT", fast_replay.clock.now_ms())
    side, price, cross = first_print_through(m, now, bid, ask)
    order = order_place(account=account, actor_user=user, channel="api", symbol="BTCUSDT", side=side,
                        order_type="LIMIT", quantity="0.002", price=str(price), time_in_force="GTC").order
    assert order["status"] == "NEW"
    fast_replay.clock.advance(m.trade_at_index("BTCUSDT", cross).time - fast_replay.clock.now_ms() + 1000)

    second = PaperMatcher(["BTCUSDT"])
    stop = _run_matcher(second)
    try:
        wait_until(lambda: Order.objects.get(pk=order["orderId"]).status == "FILLED", timeout=30,
                   what="the order to fill from the replayed gap")
    finally:
        stop()
    assert second.caught_up >= cross - now and second.trades == 0  # filled from REST, the stream was still
    fill = Fill.objects.get(order_id=order["orderId"])
    assert fill.price == price and fill.is_maker


@sqlite_pass_only
@pytest.mark.django_db(transaction=True)
def test_a_matcher_stops_promptly_when_the_exchange_has_gone_too(fast_replay):
    """``make run``'s Ctrl-C stops the replay exchange and the matcher together. python-binance's
    socket then keeps reconnecting (5 attempts with backoff, ~25 s) and its close waits for that;
    the matcher gives the close ``SOCKET_CLOSE_TIMEOUT_S`` and stops (it was SIGKILLed before).
    A liveness bound, not a speed goal: the join allows several times what a stop takes."""
    from trading.matcher import SOCKET_CLOSE_TIMEOUT_S

    exchange_info_sync()
    matcher = PaperMatcher(["BTCUSDT"])
    stop = _run_matcher(matcher)
    wait_until(lambda: matcher.sessions >= 1, timeout=30, what="the matcher to subscribe")
    fast_replay.stop()
    time.sleep(0.5)  # the socket has seen the exchange go and is reconnecting
    started = time.monotonic()
    stop()
    assert stop.stopped, "the matcher was still running 15 s after it was told to stop"
    assert SOCKET_CLOSE_TIMEOUT_S <= 2 and time.monotonic() - started < 10  # ~1.5 s here; unbounded, 15-25 s
