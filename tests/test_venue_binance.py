"""The Binance venue (testnet/live path) through python-binance against the replay exchange's signed
endpoints: every order type placed through ``order_place`` ends with the fills the replayed book and
prints give (checked to 1e-8 against ``replay.model`` and the exchange's own trade list), typed
signature/timestamp/key errors, idempotent retries, crash repair by reconciliation, and the user
data stream follower. Each test gets a fresh API key on a module-wide replay exchange whose clock
is paused (tests move it forward explicitly)."""
from __future__ import annotations

import asyncio
import secrets
import string
import threading
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal

import pytest
from conftest import cache_quotes
import requests

from replay.server import ReplayServer
from risk.models import AuditEvent
from trading import services
from core.errors import OrderRejected
from trading.models import Account, Balance, Fill, Order
from trading.venues import binance as bv

E8 = Decimal("0.00000001")
TICK = Decimal("0.01")
STEP = Decimal("0.00001")
RATE = Decimal("0.001")


def q8(d: Decimal) -> Decimal:
    return d.quantize(E8, rounding=ROUND_HALF_UP)


def rand(n=64) -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(n))


@pytest.fixture(scope="module")
def ex():
    """A replay exchange of its own (clock paused at start), so advancing it disturbs no other test.
    Started on a whole minute, so every run replays the same prints from the same second."""
    import time

    srv = ReplayServer(port=0, paused=True, start_wall_ms=int(time.time() // 60) * 60_000,
                       weight_limit=100_000)  # these tests are about booking, not the weight limit
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def _clean_intents():
    """The venue's intent log lives in Redis; account ids recur across rolled-back tests."""
    yield
    from django.conf import settings

    from core.redis import get_redis

    r = get_redis()
    keys = list(r.scan_iter(match=f"{settings.REDIS_KEY_PREFIX}venue:intent:*", count=500))
    if keys:
        r.delete(*keys)


@dataclass
class Ctx:
    ex: ReplayServer
    key: str
    secret: str
    user: object
    account: Account


def _setup(ex, settings, django_user_model) -> Ctx:
    from marketdata.services import exchange_info_sync
    from trading.services import account_create

    settings.BINANCE_API_URL, settings.BINANCE_STREAM_URL = ex.api_url, ex.stream_url
    settings.BINANCE_WS_API_URL = ex.ws_api_url
    key, secret = rand(), rand()
    ex.add_key(key, secret, {"USDT": "100000", "BTC": "1"})
    settings.BINANCE_API_KEY, settings.BINANCE_API_SECRET = key, secret
    exchange_info_sync()
    cache_quotes()  # the exchange's bookTickers into the cache, as the ingester does
    user = django_user_model.objects.create_user(username=f"u{rand(8)}", password="pw-for-tests-1")
    account = account_create(owner=user, name="Testnet", venue="testnet")
    account.api_key = key
    account.save(update_fields=["api_key"])
    bv.reconcile(account)  # balances from the exchange
    return Ctx(ex, key, secret, user, account)


@pytest.fixture
def ctx(ex, db, settings, django_user_model):
    return _setup(ex, settings, django_user_model)


@pytest.fixture
def ctx_tx(ex, transactional_db, settings, django_user_model):
    return _setup(ex, settings, django_user_model)


def place(c: Ctx, **kw) -> dict:
    args = {"account": c.account, "actor_user": c.user, "channel": "api", "symbol": "BTCUSDT", "side": "BUY"}
    args.update(kw)
    return services.order_place(**args).order


def now_index(c: Ctx, symbol="BTCUSDT") -> int:
    return c.ex.model.trade_index(symbol, c.ex.clock.now_ms())


def book(c: Ctx, index=None, symbol="BTCUSDT"):
    if index is None:  # the book GET /api/v3/depth shows now (it changes on whole replay seconds)
        return c.ex.model.depth(symbol, c.ex.clock.now_ms(), 1000)
    return c.ex.model.depth_at_index(symbol, index, 1000)


def expected_walk(levels, qty, limit=None, buy=True):
    out, left = [], qty
    for p, size in levels:
        if limit is not None and (p > limit if buy else p < limit):
            break
        take = min(size, left)
        out.append((p, take))
        left -= take
        if not left:
            break
    return out


def exchange_trades(c: Ctx, exchange_order_id: int, symbol="BTCUSDT"):
    acct = c.ex.accounts.account(c.key)
    return [(t.price, t.qty, t.commission, t.id) for t in acct.trades.get(symbol, []) if t.order_id == exchange_order_id]


def local_fills(order_id: int):
    return [(f.price, f.qty, f.commission, f.exchange_trade_id) for f in Fill.objects.filter(order_id=order_id).order_by("exchange_trade_id")]


def assert_balances_match(c: Ctx):
    """Local balances equal the exchange's, asset by asset, to 1e-8."""
    remote = {a: (f, lk) for a, (f, lk) in c.ex.accounts.account(c.key).balances.items()}
    local = {b.asset: (b.free, b.locked) for b in Balance.objects.filter(account=c.account)}
    zero = (Decimal("0"), Decimal("0"))
    for asset in set(remote) | set(local):
        assert local.get(asset, zero) == remote.get(asset, zero), asset


def future_trade(c: Ctx, pred, *, min_qty=Decimal("0"), symbol="BTCUSDT", horizon=6 * 3600):
    """The first replayed trade after now whose price satisfies ``pred`` (and qty >= min_qty)."""
    m = c.ex.model
    i = now_index(c, symbol)
    for j in range(i + 1, i + horizon):
        tr = m.trade_at_index(symbol, j)
        if pred(tr.price):
            assert tr.qty >= min_qty, "first trade through the price is too small for this test"
            return tr
    raise AssertionError("no such trade in the replay horizon")


def target(c: Ctx, direction: int, *, min_qty=Decimal("0.002"), symbol="BTCUSDT"):
    """``(level, trade)``: a price ``level`` below the bid (direction -1) or above the ask (+1), as
    far from it as the next two replay hours allow (up to 4 USDT), and the first later trade
    strictly through it, at least ``min_qty`` large: a level a smaller print goes through first
    moves on to that print's price (replayed trade sizes vary like the recorded ones)."""
    m = c.ex.model
    i = now_index(c, symbol)
    bt = m.book_ticker(symbol, c.ex.clock.now_ms())
    start = bt.bid_price if direction < 0 else bt.ask_price
    horizon = m.trade_index(symbol, c.ex.clock.now_ms() + 7_200_000)  # two replay hours of prints
    path = [m.trade_at_index(symbol, j) for j in range(i + 1, horizon + 1)]
    for d in (Decimal("4"), Decimal("1"), Decimal("0.3"), Decimal("0.1"), Decimal("0.02")):
        level = start + direction * d
        for t in path:
            if t.price <= level - TICK if direction < 0 else t.price >= level + TICK:
                if t.qty >= min_qty:
                    return level, t
                level = t.price
    raise AssertionError("the next two replay hours never move a tick that way")


def advance_to(c: Ctx, t_ms: int):
    now = c.ex.clock.now_ms()
    if t_ms > now:
        c.ex.clock.advance(t_ms - now)


# --- errors ----------------------------------------------------------------------------------------

def test_signature_timestamp_and_key_rejections_surface_as_typed_errors(ctx, settings):
    settings.BINANCE_API_SECRET = rand()
    with pytest.raises(bv.VenueAuthError) as err:
        place(ctx, quantity="0.002", client_order_id="bad-sig")
    assert err.value.code == -1022 and "Signature for this request is not valid." in err.value.msg
    assert ctx.secret not in str(err.value) and settings.BINANCE_API_SECRET not in str(err.value.as_dict())
    settings.BINANCE_API_SECRET = ctx.secret

    bv._offsets[ctx.ex.api_url] = (-120_000, float("inf"))  # our clock 2 minutes behind the exchange's
    try:
        with pytest.raises(bv.VenueClockError) as err:
            place(ctx, quantity="0.002", client_order_id="stale-ts")
        assert err.value.code == -1021 and "outside of the recvWindow" in err.value.msg
    finally:
        bv._offsets.pop(ctx.ex.api_url, None)

    ctx.account.api_key = rand()
    ctx.account.save()
    with pytest.raises(bv.VenueAuthError) as err:
        place(ctx, quantity="0.002", client_order_id="bad-key")
    assert err.value.code == -2015

    assert not Order.objects.filter(account=ctx.account).exists()  # nothing booked
    events = AuditEvent.objects.filter(account=ctx.account, action="order.place").order_by("id")
    assert [e.outcome for e in events] == ["rejected"] * 3
    assert ctx.ex.accounts.account(ctx.key).orders == {}


# --- order types -----------------------------------------------------------------------------------

def test_market_by_quantity_and_by_quote_order_qty_fill_like_the_replayed_book(ctx):
    asks = book(ctx).asks
    qty = (asks[0][1] + asks[1][1]).quantize(STEP, rounding=ROUND_DOWN) + STEP * 3
    expected = expected_walk(asks, qty)
    assert len(expected) >= 2
    order = place(ctx, quantity=str(qty), client_order_id="mkt-buy")
    assert order["status"] == "FILLED" and Decimal(order["executedQty"]) == qty
    o = Order.objects.get(pk=order["orderId"])
    fills = local_fills(o.pk)
    assert [(p, q) for p, q, _, _ in fills] == expected
    assert [c for _, _, c, _ in fills] == [q8(q * RATE) for _, q in expected]
    assert fills == exchange_trades(ctx, o.exchange_order_id)
    assert o.cummulative_quote_qty == sum(q8(p * q) for p, q in expected)
    assert all(not f.is_maker for f in Fill.objects.filter(order=o))
    assert_balances_match(ctx)

    bids = book(ctx).bids
    sell = place(ctx, side="SELL", quote_order_qty="25.5", client_order_id="mkt-sell-quote")
    sqty = (Decimal("25.5") / bids[0][0]).quantize(STEP, rounding=ROUND_DOWN)
    assert sell["status"] == "FILLED" and Decimal(sell["executedQty"]) == sqty
    so = Order.objects.get(pk=sell["orderId"])
    assert local_fills(so.pk) == [(bids[0][0], sqty, q8(q8(bids[0][0] * sqty) * RATE), exchange_trades(ctx, so.exchange_order_id)[0][3])]
    assert so.quantity == sqty
    assert_balances_match(ctx)


def test_limit_gtc_ioc_fok_and_limit_maker(ctx):
    d = book(ctx)
    ask0, ask1 = d.asks[0], d.asks[1]
    # GTC through the first ask level only: takes it (taker), rests the rest at its price.
    qty = (ask0[1] + Decimal("0.002")).quantize(STEP, rounding=ROUND_DOWN)
    gtc = place(ctx, order_type="LIMIT", quantity=str(qty), price=str(ask0[0]), time_in_force="GTC", client_order_id="gtc")
    o = Order.objects.get(pk=gtc["orderId"])
    assert gtc["status"] == "PARTIALLY_FILLED" and [(p, q) for p, q, _, _ in local_fills(o.pk)] == [ask0]
    assert local_fills(o.pk) == exchange_trades(ctx, o.exchange_order_id)
    assert o.locked_amount == q8(ask0[0] * (qty - ask0[1]))
    assert_balances_match(ctx)
    # IOC at the second level: takes two levels' worth, the rest expires.
    ioc_qty = (ask0[1] + ask1[1] + Decimal("0.003")).quantize(STEP, rounding=ROUND_DOWN)
    ioc = place(ctx, order_type="LIMIT", quantity=str(ioc_qty), price=str(ask1[0]), time_in_force="IOC", client_order_id="ioc")
    assert ioc["status"] == "EXPIRED"
    assert [(p, q) for p, q, _, _ in local_fills(ioc["orderId"])] == [ask0, ask1]
    # FOK that cannot fill completely: nothing at all.
    fok = place(ctx, order_type="LIMIT", quantity=str(ioc_qty), price=str(ask1[0]), time_in_force="FOK", client_order_id="fok")
    assert fok["status"] == "EXPIRED" and fok["fills"] == []
    assert_balances_match(ctx)
    # LIMIT_MAKER that would take is refused by the exchange and booked REJECTED.
    with pytest.raises(OrderRejected) as err:
        place(ctx, order_type="LIMIT_MAKER", quantity="0.002", price=str(ask0[0]), client_order_id="maker-take")
    assert err.value.code == -2010 and "Order would immediately match and take." in err.value.msg
    assert Order.objects.get(account=ctx.account, client_order_id="maker-take").status == "REJECTED"
    maker = place(ctx, order_type="LIMIT_MAKER", quantity="0.002", price=str(d.bids[0][0]), client_order_id="maker-rest")
    assert maker["status"] == "NEW"
    # Cancel through the venue: lock back to free on both sides.
    services.order_cancel(account=ctx.account, actor_user=ctx.user, channel="api", client_order_id="maker-rest")
    services.order_cancel(account=ctx.account, actor_user=ctx.user, channel="api", client_order_id="gtc")
    assert Order.objects.get(account=ctx.account, client_order_id="gtc").status == "CANCELED"
    assert_balances_match(ctx)
    assert Balance.objects.get(account=ctx.account, asset="USDT").locked == 0


def test_resting_limit_fills_on_the_replayed_print_through_it_and_reconcile_books_it_once(ctx):
    price, tr = target(ctx, -1)
    tr = future_trade(ctx, lambda p: p < price, min_qty=Decimal("0.002"))
    order = place(ctx, order_type="LIMIT", quantity="0.002", price=str(price), client_order_id="rest-buy")
    assert order["status"] == "NEW"
    assert Balance.objects.get(account=ctx.account, asset="USDT").locked == q8(price * Decimal("0.002"))
    advance_to(ctx, tr.time - 1000)
    assert bv.reconcile(ctx.account)["fills"] == 0  # the print before the one through it: no fill
    advance_to(ctx, tr.time)
    out = bv.reconcile(ctx.account)
    assert out["fills"] == 1 and out["balances"] is True
    o = Order.objects.get(account=ctx.account, client_order_id="rest-buy")
    assert o.status == "FILLED"
    assert local_fills(o.pk) == [(price, Decimal("0.002"), q8(Decimal("0.002") * RATE), exchange_trades(ctx, o.exchange_order_id)[0][3])]
    assert Fill.objects.get(order=o).is_maker
    assert bv.reconcile(ctx.account)["fills"] == 0  # seen again: booked once
    assert Fill.objects.filter(order=o).count() == 1
    assert ctx.account.__class__.objects.get(pk=ctx.account.pk).last_trade_ids["BTCUSDT"] == o.fills.get().exchange_trade_id
    assert_balances_match(ctx)


@pytest.mark.parametrize("order_type,side,direction", [
    ("STOP_LOSS", "SELL", -1), ("TAKE_PROFIT", "SELL", 1), ("STOP_LOSS_LIMIT", "BUY", 1), ("TAKE_PROFIT_LIMIT", "BUY", -1),
])
def test_stops_trigger_on_the_replayed_print_and_execute_against_that_seconds_book(ctx, order_type, side, direction):
    stop, _ = target(ctx, direction)
    tr = future_trade(ctx, (lambda p: p >= stop) if direction > 0 else (lambda p: p <= stop))
    kw = {"order_type": order_type, "side": side, "quantity": "0.003", "stop_price": str(stop), "client_order_id": f"stop-{order_type}"}
    limit = None
    if order_type.endswith("_LIMIT"):
        limit = stop + Decimal("2")  # BUY: a limit above the trigger takes the asks of that second
        kw.update(price=str(limit), time_in_force="GTC")
    order = place(ctx, **kw)
    assert order["status"] == "NEW" and order["isWorking"] is False
    assert_balances_match(ctx)
    advance_to(ctx, tr.time)
    bv.reconcile(ctx.account)
    o = Order.objects.get(pk=order["orderId"])
    d = ctx.ex.model.depth_at_index("BTCUSDT", tr.index, 1000)
    levels = d.asks if side == "BUY" else d.bids
    expected = expected_walk(levels, Decimal("0.003"), limit=limit, buy=side == "BUY")
    assert o.status == "FILLED" and o.is_working
    fills = local_fills(o.pk)
    assert [(p, q) for p, q, _, _ in fills] == expected
    receive = (lambda p, q: q * RATE) if side == "BUY" else (lambda p, q: q8(p * q) * RATE)
    assert [c for _, _, c, _ in fills] == [q8(receive(p, q)) for p, q in expected]
    assert fills == exchange_trades(ctx, o.exchange_order_id)
    assert_balances_match(ctx)


# --- idempotency and crashes -----------------------------------------------------------------------

def test_retries_by_client_order_id_never_make_a_second_order(ctx, monkeypatch, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        _retries(ctx, monkeypatch)
    assert bv.intents(ctx.account.pk) == {}  # each intent cleared once its booking committed


def _retries(ctx, monkeypatch):
    first = place(ctx, quantity="0.002", client_order_id="retry-1")
    again = services.order_place(account=ctx.account, actor_user=ctx.user, channel="api", symbol="BTCUSDT", side="BUY",
                                 quantity="0.002", client_order_id="retry-1")
    assert again.duplicate and again.order["orderId"] == first["orderId"]
    remote = ctx.ex.accounts.account(ctx.key)
    assert [o.client_order_id for o in remote.orders.values()].count("retry-1") == 1

    # The exchange takes the order but the answer never arrives (read timeout): the venue looks
    # it up by origClientOrderId and books it with its fills from myTrades; no second order.
    from binance.client import Client

    real = Client.create_order
    calls = []

    def lost_answer(self, **params):
        calls.append(params["newClientOrderId"])
        real(self, **params)
        raise requests.exceptions.ReadTimeout("read timed out")

    monkeypatch.setattr(Client, "create_order", lost_answer)
    lost = place(ctx, quantity="0.002", client_order_id="lost-answer")
    monkeypatch.setattr(Client, "create_order", real)
    assert calls == ["lost-answer"] and lost["status"] == "FILLED"
    o = Order.objects.get(pk=lost["orderId"])
    assert local_fills(o.pk) == exchange_trades(ctx, o.exchange_order_id) and len(local_fills(o.pk)) >= 1
    assert [x.client_order_id for x in remote.orders.values()].count("lost-answer") == 1

    # A 503 before the matching engine: looked up (-2013, not there), sent once more with the same id.
    from replay.testing import http

    http("POST", ctx.ex.base_url + "/_replay/fail", {"status": 503, "count": 1, "paths": ["/api/v3/order"]})
    again = place(ctx, quantity="0.002", client_order_id="after-503")
    assert again["status"] == "FILLED"
    assert [x.client_order_id for x in remote.orders.values()].count("after-503") == 1
    assert_balances_match(ctx)


def test_order_placed_but_booking_lost_is_repaired_by_reconciliation(ctx, monkeypatch, django_capture_on_commit_callbacks):
    def crash(*a, **kw):
        raise RuntimeError("worker killed after the exchange accepted the order")

    monkeypatch.setattr(bv, "book_exchange_order", crash)
    with pytest.raises(RuntimeError):
        place(ctx, quantity="0.004", client_order_id="crashed")
    monkeypatch.undo()
    assert not Order.objects.filter(account=ctx.account, client_order_id="crashed").exists()
    assert "crashed" in bv.intents(ctx.account.pk)
    remote = next(o for o in ctx.ex.accounts.account(ctx.key).orders.values() if o.client_order_id == "crashed")
    assert remote.status == "FILLED"

    # And one placed behind our back (another client with the same key): no intent, found by myTrades.
    from binance.client import Client

    other = Client(ctx.key, ctx.secret, ping=False)
    other.API_URL = ctx.ex.api_url
    outside = other.create_order(symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.002", newClientOrderId="outside")
    resting = other.create_order(symbol="BTCUSDT", side="SELL", type="LIMIT", timeInForce="GTC", quantity="0.002",
                                 price="99999", newClientOrderId="outside-rest")

    with django_capture_on_commit_callbacks(execute=True):
        out = bv.reconcile(ctx.account)
    assert out["adopted"] == 3
    for cid in ("crashed", "outside", "outside-rest"):
        o = Order.objects.get(account=ctx.account, client_order_id=cid)
        assert local_fills(o.pk) == exchange_trades(ctx, o.exchange_order_id)
    assert Order.objects.get(account=ctx.account, client_order_id="outside").exchange_order_id == outside["orderId"]
    rest = Order.objects.get(account=ctx.account, client_order_id="outside-rest")
    assert rest.status == "NEW" and rest.exchange_order_id == resting["orderId"] and rest.locked_amount == Decimal("0.002")
    assert bv.intents(ctx.account.pk) == {}
    assert_balances_match(ctx)

    again = bv.reconcile(ctx.account)  # nothing lost, nothing doubled
    assert again["adopted"] == 0 and again["fills"] == 0
    assert Fill.objects.filter(account=ctx.account).count() == sum(len(v) for v in ctx.ex.accounts.account(ctx.key).trades.values())


def test_user_stream_follower_fills_a_resting_order_and_a_restart_books_what_it_missed(ctx_tx):
    c = ctx_tx
    price, _ = target(c, -1)
    tr = future_trade(c, lambda p: p < price, min_qty=Decimal("0.002"))
    order = place(c, order_type="LIMIT", quantity="0.002", price=str(price), client_order_id="follow-me")

    follower = Follower(c.account.pk).start()
    try:
        advance_to(c, tr.time)  # the replay's matcher fills it and pushes executionReport + balances
        o = wait_for(lambda: Order.objects.filter(pk=order["orderId"], status="FILLED").first(), "executionReport FILLED")
        assert local_fills(o.pk) == exchange_trades(c, o.exchange_order_id)
        wait_for(lambda: _balances_equal(c), "outboundAccountPosition")
    finally:
        follower.stop()

    # Killed follower: the next resting fill happens while nobody listens; a restart reconciles it.
    price2, _ = target(c, -1)
    tr2 = future_trade(c, lambda p: p < price2, min_qty=Decimal("0.002"))
    second = place(c, order_type="LIMIT", quantity="0.002", price=str(price2), client_order_id="missed")
    advance_to(c, tr2.time)
    assert Order.objects.get(pk=second["orderId"]).status == "NEW"
    follower = Follower(c.account.pk).start()
    try:
        o2 = Order.objects.get(pk=second["orderId"])
        assert o2.status == "FILLED" and local_fills(o2.pk) == exchange_trades(c, o2.exchange_order_id)
    finally:
        follower.stop()
    assert Fill.objects.filter(account=c.account).count() == 2
    assert_balances_match(c)


def _balances_equal(c) -> bool:
    try:
        assert_balances_match(c)
        return True
    except AssertionError:
        return False


def wait_for(pred, what: str, timeout: float = 15.0):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Follower:
    """``follow_account`` on its own thread and event loop; ``start()`` returns once it has
    connected and reconciled."""

    def __init__(self, account_id: int):
        self.account_id = account_id
        self.ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.stop_evt = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        from asgiref.sync import sync_to_async
        from django.db import connections

        async def main():
            self.stop_evt = asyncio.Event()
            try:
                await bv.follow_account(self.account_id, stop=self.stop_evt, on_ready=self.ready.set)
            finally:
                await sync_to_async(connections.close_all)()

        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(main())
        leftovers = asyncio.all_tasks(self.loop)  # python-binance's reconnect/keepalive tasks, if any
        for task in leftovers:
            task.cancel()
        self.loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
        self.loop.close()

    def start(self):
        self.thread.start()
        assert self.ready.wait(15), "follower did not connect"
        return self

    def stop(self):
        self.loop.call_soon_threadsafe(self.stop_evt.set)
        self.thread.join(15)


# --- OCO on the exchange --------------------------------------------------------------------------

def test_oco_on_the_exchange_books_both_legs_with_one_lock_and_a_fill_expires_the_other(ctx):
    """A SELL OCO through ``oco_place`` reaches ``POST /api/v3/orderList/oco``; when the replay
    prints through the LIMIT_MAKER the stop leg EXPIRES; reconciliation books the fill once and
    local balances equal the exchange's."""
    from trading.models import OrderList

    level, hit = target(ctx, +1)
    stop = level - 300
    out = services.oco_place(account=ctx.account, actor_user=ctx.user, channel="api", symbol="BTCUSDT", side="SELL",
                             quantity="0.002", price=str(level), stop_price=str(stop), stop_limit_price=str(stop - 10),
                             list_client_order_id="bracket-1")
    olist = OrderList.objects.get(account=ctx.account, list_client_order_id="bracket-1")
    remote = ctx.ex.accounts.account(ctx.key).order_lists[olist.exchange_order_list_id]
    assert [o["type"] for o in out["orders"]] == ["LIMIT_MAKER", "STOP_LOSS_LIMIT"]
    assert [o["status"] for o in out["orders"]] == ["NEW", "NEW"]
    legs = list(Order.objects.filter(order_list_id=olist.pk).order_by("id"))
    assert [o.exchange_order_id for o in legs] == [r.order_id for r in remote.legs]
    assert Balance.objects.get(account=ctx.account, asset="BTC").locked == Decimal("0.002")  # once, not per leg
    assert_balances_match(ctx)
    assert AuditEvent.objects.filter(action="order.oco", outcome="ok", account=ctx.account).count() == 1

    advance_to(ctx, hit.time)
    bv.reconcile(ctx.account)
    maker, stop_leg = (Order.objects.get(pk=o.pk) for o in legs)
    assert maker.executed_qty > 0 and stop_leg.status == "EXPIRED"
    assert local_fills(maker.pk) == sorted(exchange_trades(ctx, maker.exchange_order_id), key=lambda t: t[3])
    assert_balances_match(ctx)


def test_canceling_an_exchange_oco_leg_cancels_the_list_and_a_bad_list_books_nothing(ctx):
    from trading.models import OrderList

    bid = book(ctx).bids[0][0]
    out = services.oco_place(account=ctx.account, actor_user=ctx.user, channel="api", symbol="BTCUSDT", side="SELL",
                             quantity="0.002", price=str(bid + 500), stop_price=str(bid - 500))
    services.order_cancel(account=ctx.account, actor_user=ctx.user, channel="api", order_id=out["orders"][1]["orderId"])
    olist = OrderList.objects.get(pk=out["orderListId"])
    assert olist.list_status_type == "ALL_DONE"
    assert set(Order.objects.filter(order_list_id=olist.pk).values_list("status", flat=True)) == {"CANCELED"}
    assert_balances_match(ctx)

    before = Order.objects.filter(account=ctx.account).count()
    with pytest.raises(OrderRejected) as err:  # more BTC than the exchange account holds: the exchange says no
        services.oco_place(account=ctx.account, actor_user=ctx.user, channel="api", symbol="BTCUSDT", side="SELL",
                           quantity="5", price=str(bid + 500), stop_price=str(bid - 500))
    assert err.value.code == -2010
    assert Order.objects.filter(account=ctx.account).count() == before
    assert not OrderList.objects.filter(account=ctx.account, list_status_type="EXEC_STARTED").exists()
    assert_balances_match(ctx)


# --- 2026: WebSocket API user stream, Ed25519 keys, per-account endpoints and fees ----------------

@pytest.fixture(scope="module")
def ex_testnet():
    """A second replay exchange standing in for the testnet, beside ``ex`` (the "live" one)."""
    import time

    srv = ReplayServer(port=0, paused=True, start_wall_ms=int(time.time() // 60) * 60_000,
                       weight_limit=100_000)  # these tests are about booking, not the weight limit
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def secrets_key(settings):
    """A Fernet key for the encrypted credentials (``risk.secrets``), forgotten afterwards."""
    from cryptography.fernet import Fernet

    from risk import secrets as risk_secrets

    settings.SECRETS_ENCRYPTION_KEY = Fernet.generate_key().decode()
    risk_secrets._fernet.cache_clear()
    yield
    risk_secrets._fernet.cache_clear()


def _exchange_account(exchange: ReplayServer, *, user, name: str, venue: str, ed25519: bool) -> tuple[Account, str]:
    """An account whose ``ExchangeCredential`` names ``exchange``'s endpoints and a fresh key on it
    (Ed25519: the exchange holds the public key, we the private one). Returns (account, api key)."""
    from replay.testing import ed25519_pair
    from trading.credentials import exchange_credential_set
    from trading.services import account_create

    key = rand()
    if ed25519:
        private, public = ed25519_pair()
        exchange.add_key(key, public, {"USDT": "100000", "BTC": "1"})
        secret, key_type = private, "ED25519"
    else:
        secret = rand()
        exchange.add_key(key, secret, {"USDT": "100000", "BTC": "1"})
        key_type = "HMAC_SHA256"
    account = account_create(owner=user, name=name, venue=venue)
    exchange_credential_set(account=account, api_key=key, secret=secret, key_type=key_type, api_url=exchange.api_url,
                            ws_api_url=exchange.ws_api_url, actor_user=user, channel="admin")
    bv.reconcile(account)
    return account, key


def _resting_buy(exchange: ReplayServer, account: Account, user, cid: str):
    """A BUY LIMIT below the last print that a later replayed print fills; returns (order, trade)."""
    m = exchange.model
    now = exchange.clock.now_ms()
    i = m.trade_index("BTCUSDT", now)
    level = min(m.trade_at_index("BTCUSDT", i).price, m.book_ticker("BTCUSDT", now).bid_price) - TICK
    for j in range(i + 1, m.trade_index("BTCUSDT", now + 7_200_000)):
        tr = m.trade_at_index("BTCUSDT", j)  # the first print through the level fills it whole (or moves it)
        if tr.price < level:
            if tr.qty >= Decimal("0.002"):
                break
            level = tr.price
    else:
        raise AssertionError("no print through a level below the book in two replay hours")
    order = services.order_place(account=account, actor_user=user, channel="api", symbol="BTCUSDT", side="BUY",
                                 order_type="LIMIT", quantity="0.002", price=str(level), client_order_id=cid).order
    return order, tr


def _remote_balances_equal(exchange: ReplayServer, key: str, account: Account) -> bool:
    remote = {a: (f, lk) for a, (f, lk) in exchange.accounts.account(key).balances.items() if f or lk}
    local = {b.asset: (b.free, b.locked) for b in Balance.objects.filter(account=account) if b.free or b.locked}
    return remote == local


def test_ed25519_live_account_is_booked_from_the_ws_api_user_stream_without_a_reconcile_pass(ex, transactional_db,
                                                                                           settings, django_user_model,
                                                                                           secrets_key):
    """The issue's "done when": an order on a replay "live" account with an Ed25519 key fills on a
    replayed print and is booked from the WebSocket API user stream (python-binance's
    ``user_socket()``), with no reconcile pass: the reconciliation cursor stays where the follower's
    connect-time reconcile left it. The deadline is generous; the latency is printed."""
    import time

    from marketdata.services import exchange_info_sync

    settings.BINANCE_API_URL, settings.BINANCE_STREAM_URL, settings.BINANCE_WS_API_URL = ex.api_url, ex.stream_url, ex.ws_api_url
    settings.BINANCE_VENUE = "live"  # the account's own credential endpoints decide, not the deployment's venue
    exchange_info_sync()
    cache_quotes()
    user = django_user_model.objects.create_user(username=f"u{rand(8)}", password="pw-for-tests-1")
    account, key = _exchange_account(ex, user=user, name="Live", venue="live", ed25519=True)
    assert bv.credentials(account).private_key.startswith("-----BEGIN PRIVATE KEY-----")
    order, tr = _resting_buy(ex, account, user, "ed-live-1")
    assert ex.accounts.account(key).orders[Order.objects.get(pk=order["orderId"]).exchange_order_id].status == "NEW"

    follower = Follower(account.pk).start()
    try:
        cursor = Account.objects.get(pk=account.pk).last_trade_ids
        ex.clock.advance(tr.time - ex.clock.now_ms())
        t0 = time.monotonic()
        o = wait_for(lambda: Order.objects.filter(pk=order["orderId"], status="FILLED").first(), "executionReport FILLED", 10)
        print(f"\nbooked from the WebSocket API user stream {1000 * (time.monotonic() - t0):.0f} ms after the print")
        assert local_fills(o.pk) == [(t.price, t.qty, t.commission, t.id)
                                     for t in ex.accounts.account(key).trades["BTCUSDT"] if t.order_id == o.exchange_order_id]
        assert Fill.objects.get(order_id=o.pk).exchange_trade_id == ex.accounts.account(key).trades["BTCUSDT"][-1].id
        wait_for(lambda: _remote_balances_equal(ex, key, account), "outboundAccountPosition", 10)
        assert Account.objects.get(pk=account.pk).last_trade_ids == cursor  # no reconcile pass booked it
    finally:
        follower.stop()


def test_live_and_testnet_accounts_side_by_side_each_on_its_own_endpoint(ex, ex_testnet, transactional_db, settings,
                                                                         django_user_model, secrets_key):
    """A live account (Ed25519, the "live" replay) and a testnet account (HMAC, a second replay) in
    one deployment: orders reach their own exchange, both user streams book their fills, and each
    account's commission rates come from its own exchange account."""
    from marketdata.services import exchange_info_sync

    settings.BINANCE_API_URL, settings.BINANCE_STREAM_URL, settings.BINANCE_WS_API_URL = ex.api_url, ex.stream_url, ex.ws_api_url
    exchange_info_sync()
    cache_quotes()
    user = django_user_model.objects.create_user(username=f"u{rand(8)}", password="pw-for-tests-1")
    live, live_key = _exchange_account(ex, user=user, name="Live", venue="live", ed25519=True)
    test, test_key = _exchange_account(ex_testnet, user=user, name="Testnet", venue="testnet", ed25519=False)
    assert bv.endpoints(live, live.exchange_credential) == (ex.api_url, ex.ws_api_url)
    assert bv.endpoints(test, test.exchange_credential) == (ex_testnet.api_url, ex_testnet.ws_api_url)

    ex.accounts.account(live_key).maker_rate = Decimal("0.00075")
    ex_testnet.accounts.account(test_key).taker_rate = Decimal("0.0009")
    assert bv.account_fees_sync(live)["maker"] == Decimal("0.00075")
    assert bv.account_fees_sync(test)["taker"] == Decimal("0.0009")
    live.refresh_from_db()
    test.refresh_from_db()
    assert (live.maker_fee_rate, live.taker_fee_rate) == (Decimal("0.00075"), Decimal("0.001"))
    assert (test.maker_fee_rate, test.taker_fee_rate) == (Decimal("0.001"), Decimal("0.0009"))

    followers = [Follower(live.pk).start(), Follower(test.pk).start()]
    try:
        placed = []
        for exchange, account, key, cid in ((ex, live, live_key, "side-live"), (ex_testnet, test, test_key, "side-test")):
            order, tr = _resting_buy(exchange, account, user, cid)
            local = Order.objects.get(pk=order["orderId"])
            assert [o.client_order_id for o in exchange.accounts.account(key).orders.values()] == [cid]
            placed.append((exchange, account, key, local, tr))
        for exchange, account, key, local, tr in placed:
            exchange.clock.advance(max(0, tr.time - exchange.clock.now_ms()))
        for exchange, account, key, local, tr in placed:
            o = wait_for(lambda: Order.objects.filter(pk=local.pk, status="FILLED").first(), f"{account.name} FILLED", 10)
            assert local_fills(o.pk) == [(t.price, t.qty, t.commission, t.id)
                                         for t in exchange.accounts.account(key).trades["BTCUSDT"]]
            wait_for(lambda: _remote_balances_equal(exchange, key, account), f"{account.name} balances", 10)
        assert Fill.objects.filter(account=live).count() == Fill.objects.filter(account=test).count() == 1
    finally:
        for f in followers:
            f.stop()


def _later_fill(c: Ctx, cid: str):
    """A resting LIMIT that a later replayed print fills: a BUY below the last print, or a SELL
    above it when the next two replay hours never go lower (the shared clock moves per test)."""
    for direction, side in ((-1, "BUY"), (+1, "SELL")):
        try:
            price, _ = target(c, direction)
        except AssertionError:
            continue
        through = (lambda p: p < price) if side == "BUY" else (lambda p: p > price)
        tr = future_trade(c, through, min_qty=Decimal("0.002"))
        order = place(c, side=side, order_type="LIMIT", quantity="0.002", price=str(price), client_order_id=cid)
        return order, tr
    raise AssertionError("the replay does not move a tick either way in two hours")


def test_follower_subscribes_again_after_the_exchange_drops_the_ws_api_connection(ctx_tx):
    """A WebSocket API subscription dies with its connection: after the replay drops every socket,
    the follower connects and subscribes again (and reconciles), so a later fill is still booked."""
    c = ctx_tx
    follower = Follower(c.account.pk).start()
    try:
        wait_for(lambda: any(s.subscribers for s in [c.ex.accounts.account(c.key)]), "a subscription")
        first = next(iter(c.ex.accounts.account(c.key).subscribers))
        c.ex.drop_connections()
        wait_for(lambda: c.ex.accounts.account(c.key).subscribers and first not in c.ex.accounts.account(c.key).subscribers,
                 "a new subscription", 20)
        order, tr = _later_fill(c, "after-drop")
        advance_to(c, tr.time)
        wait_for(lambda: Order.objects.filter(pk=order["orderId"], status="FILLED").first(), "FILLED after the drop")
    finally:
        follower.stop()


def test_follower_subscribes_again_after_event_stream_terminated(ctx_tx):
    """``eventStreamTerminated`` ends a subscription (Binance "Event Stream Terminated"): the
    follower subscribes again, and a later fill is still booked from the stream."""
    from replay.testing import http

    c = ctx_tx
    follower = Follower(c.account.pk).start()
    try:
        remote = c.ex.accounts.account(c.key)
        wait_for(lambda: remote.subscribers, "a subscription")
        first = next(iter(remote.subscribers))
        status, _, body = http("POST", f"{c.ex.base_url}/_replay/accounts/{c.key}/terminate")
        assert status == 200 and body == {"terminated": 1}
        wait_for(lambda: remote.subscribers and first not in remote.subscribers, "a new subscription", 20)
        order, tr = _later_fill(c, "after-terminated")
        advance_to(c, tr.time)
        wait_for(lambda: Order.objects.filter(pk=order["orderId"], status="FILLED").first(), "FILLED after the new subscription")
    finally:
        follower.stop()
