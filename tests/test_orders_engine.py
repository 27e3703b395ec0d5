"""The paper order engine: every order type, the book walk, resting fills on replayed prints,
stops, OCO, cancels, filters and locked balances. Expected prices come from the replay model
(the same recorded data the replay exchange serves), fills are checked to 1e-8."""
from decimal import ROUND_DOWN, ROUND_HALF_UP, ROUND_UP, Decimal

import pytest

from risk.models import AuditEvent
from trading import services
from core.errors import FilterFailure, InvalidInput, NotFound, OrderRejected
from trading.models import Balance, Fill, Order, OrderList
from trading.venues import paper

E8 = Decimal("0.00000001")
TICK = Decimal("0.01")
STEP = Decimal("0.00001")


def q8(d: Decimal) -> Decimal:
    return d.quantize(E8, rounding=ROUND_HALF_UP)


@pytest.fixture(autouse=True)
def _fresh_engine_state():
    """The engine's per-process caches (depth, last trade id) start empty in each test."""
    from trading.market import depth_forget

    depth_forget()
    paper._last_trade_id.clear()
    yield
    depth_forget()
    paper._last_trade_id.clear()


def bal(account, asset) -> tuple[Decimal, Decimal]:
    b = Balance.objects.filter(account=account, asset=asset).first()
    return (b.free, b.locked) if b else (Decimal("0"), Decimal("0"))


def fund(account, asset, amount):
    Balance.objects.update_or_create(account=account, asset=asset, defaults={"free": Decimal(amount), "locked": 0})


def place(account, user, **kw):
    args = {"symbol": "BTCUSDT", "side": "BUY", "channel": "api"}
    args.update(kw)
    return services.order_place(account=account, actor_user=user, **args).order


def book(replay, symbol="BTCUSDT"):
    return replay.model.depth(symbol, replay.clock.now_ms(), 100)


def future_trade(replay, pred, symbol="BTCUSDT"):
    """The first replayed trade after now whose price satisfies ``pred``."""
    m = replay.model
    now = replay.clock.now_ms()
    j = m.trade_index(symbol, now) + 1
    while (tr := m.trade_at_index(symbol, j)).time <= now + 24 * 3_600_000:  # the tape's recorded trade count
        if pred(tr.price):
            return tr
        j += 1
    raise AssertionError("no such trade in the next 24 replay hours")


def up_to_step(d: Decimal) -> Decimal:
    """Recorded book sizes have 6 decimals; order quantities must be multiples of the 1e-5 step."""
    return d.quantize(STEP, rounding=ROUND_UP)


def expected_walk(levels, qty):
    out, left = [], qty
    for p, size in levels:
        take = min(size, left)
        out.append((p, take))
        left -= take
        if not left:
            return out
    raise AssertionError("book too thin")


def as_event(tr) -> dict:
    return {"t": tr.id, "p": format(tr.price, "f"), "q": format(tr.qty, "f")}


# --- MARKET --------------------------------------------------------------------------------------

def test_market_buy_walks_the_book_to_an_average_price(quotes, trader, replay):
    user, account, _ = trader
    fund(account, "USDT", "100000")
    asks = book(replay).asks
    qty = up_to_step(asks[0][1] + asks[1][1]) + STEP * 3
    expected = expected_walk(asks, qty)
    assert len(expected) == 3
    order = place(account, user, quantity=str(qty), client_order_id="walk")

    fills = list(Fill.objects.filter(order_id=order["orderId"]).order_by("id"))
    assert [(f.price, f.qty) for f in fills] == expected
    assert all(not f.is_maker and f.commission == q8(f.qty * Decimal("0.001")) for f in fills)
    cost = sum(q8(p * q) for p, q in expected)
    assert order["status"] == "FILLED" and Decimal(order["executedQty"]) == qty
    assert Decimal(order["cummulativeQuoteQty"]) == cost
    assert Decimal(order["avgPrice"]) == (cost / qty).quantize(E8)
    assert bal(account, "USDT") == (Decimal("100000") - cost, 0)
    assert bal(account, "BTC") == (qty - sum(f.commission for f in fills), 0)


def test_market_by_quote_order_qty_buy_and_sell(quotes, trader, replay):
    user, account, _ = trader
    b = book(replay)
    ask, bid = b.asks[0][0], b.bids[0][0]
    buy = place(account, user, quote_order_qty="25.5", client_order_id="qoq-buy")
    qty = (Decimal("25.5") / ask).quantize(STEP, rounding=ROUND_DOWN)
    assert buy["status"] == "FILLED" and buy["origQuoteOrderQty"] == "25.50000000"
    assert Decimal(buy["executedQty"]) == qty and Decimal(buy["cummulativeQuoteQty"]) == q8(ask * qty)
    assert bal(account, "USDT")[0] == Decimal("10000") - q8(ask * qty)

    fund(account, "BTC", "1")
    sell = place(account, user, side="SELL", quote_order_qty="12", client_order_id="qoq-sell")
    sqty = (Decimal("12") / bid).quantize(STEP, rounding=ROUND_DOWN)
    proceeds = q8(bid * sqty)
    assert Decimal(sell["executedQty"]) == sqty and Decimal(sell["cummulativeQuoteQty"]) == proceeds <= Decimal("12")
    assert sell["fills"][0]["commissionAsset"] == "USDT" and Decimal(sell["fills"][0]["commission"]) == q8(proceeds * Decimal("0.001"))


def test_market_slippage_cap_expires_the_rest(quotes, trader, replay, settings):
    user, account, _ = trader
    settings.PAPER_MAX_SLIPPAGE = "0.0001"
    fund(account, "BTC", "50")
    bids = book(replay).bids
    cap = bids[0][0] * (1 - Decimal("0.0001"))
    within = [(p, q) for p, q in bids if p >= cap]
    total = sum(q for _, q in within)
    order = place(account, user, side="SELL", quantity=str(up_to_step(total + 1)), client_order_id="slip")
    assert order["status"] == "EXPIRED"
    assert [(Decimal(f["price"]), Decimal(f["qty"])) for f in order["fills"]] == within
    assert bal(account, "BTC") == (Decimal("50") - total, 0)


# --- LIMIT ----------------------------------------------------------------------------------------

def test_resting_limit_locks_and_cancel_releases_exactly(quotes, trader, replay):
    user, account, _ = trader
    price = book(replay).bids[0][0] - 50 * TICK
    order = place(account, user, order_type="LIMIT", quantity="0.01", price=str(price), client_order_id="rest")
    assert order["status"] == "NEW" and order["timeInForce"] == "GTC" and order["fills"] == []
    assert bal(account, "USDT") == (Decimal("10000") - price * Decimal("0.01"), price * Decimal("0.01"))
    again = services.order_place(account=account, actor_user=user, channel="api", symbol="BTCUSDT", side="BUY",
                                 order_type="LIMIT", quantity="0.01", price=str(price), client_order_id="rest")
    assert again.duplicate and again.order["orderId"] == order["orderId"]
    assert bal(account, "USDT")[1] == price * Decimal("0.01")

    canceled = services.order_cancel(account=account, actor_user=user, channel="api", symbol="BTCUSDT", order_id=order["orderId"])
    assert canceled["status"] == "CANCELED"
    assert bal(account, "USDT") == (Decimal("10000"), 0)
    with pytest.raises(OrderRejected) as exc:
        services.order_cancel(account=account, actor_user=user, channel="api", order_id=order["orderId"])
    assert exc.value.code == -2011
    with pytest.raises(NotFound):
        services.order_cancel(account=account, actor_user=user, channel="api", client_order_id="nope")
    actions = list(AuditEvent.objects.filter(action="order.cancel").values_list("outcome", flat=True).order_by("id"))
    assert actions == ["ok", "rejected", "rejected"]


def test_resting_limit_fills_on_trades_through_its_price_as_maker(quotes, trader, replay):
    user, account, _ = trader
    account.maker_fee_rate = Decimal("0.0005")
    account.save()
    fund(account, "USDT", "100000")  # 3x a recorded print may cost more than the default 10,000
    price = book(replay).bids[0][0] - TICK  # rests: one tick under the best bid
    through = future_trade(replay, lambda p: p < price)
    qty = (through.qty * 3).quantize(STEP)
    order = place(account, user, order_type="LIMIT", quantity=str(qty), price=str(price), client_order_id="maker")

    # a print AT the price does not fill (the queue ahead of us is unknown); one through it does
    assert paper.paper_match("BTCUSDT", trade={"t": through.id - 1, "p": str(price), "q": "5"}) == []
    changed = paper.paper_match("BTCUSDT", trade=as_event(through))
    assert [c["orderId"] for c in changed] == [order["orderId"]]
    o = Order.objects.get(pk=order["orderId"])
    assert o.status == "PARTIALLY_FILLED" and o.executed_qty == through.qty
    fill = Fill.objects.get(order=o)
    assert fill.price == price and fill.is_maker and fill.commission == q8(through.qty * Decimal("0.0005"))
    # the same trade again (a reconnect replays it) fills nothing
    assert paper.paper_match("BTCUSDT", trade=as_event(through)) == []
    # the best ask reaching the price fills up to the ask size
    paper.paper_match("BTCUSDT", book={"b": str(price - TICK), "B": "1", "a": str(price), "A": "100"})
    o.refresh_from_db()
    assert o.status == "FILLED" and o.executed_qty == qty and o.locked_amount == 0
    assert bal(account, "USDT") == (Decimal("100000") - q8(price * qty), 0)
    assert sum(f.qty - f.commission for f in o.fills.all()) == bal(account, "BTC")[0]


def test_limit_crossing_on_entry_takes_then_rests(quotes, trader, replay):
    user, account, _ = trader
    fund(account, "USDT", "100000")
    asks = book(replay).asks
    limit = asks[1][0]
    qty = up_to_step(asks[0][1] + asks[1][1] + Decimal("1"))
    order = place(account, user, order_type="LIMIT", quantity=str(qty), price=str(limit), client_order_id="cross")
    assert order["status"] == "PARTIALLY_FILLED"
    assert [(Decimal(f["price"]), Decimal(f["qty"]), f["isMaker"]) for f in order["fills"]] == [
        (asks[0][0], asks[0][1], False), (asks[1][0], asks[1][1], False)]
    spent = q8(asks[0][0] * asks[0][1]) + q8(asks[1][0] * asks[1][1])
    rest_lock = q8(limit * qty) - q8(limit * asks[0][1]) - q8(limit * asks[1][1])
    assert bal(account, "USDT") == (Decimal("100000") - spent - rest_lock, rest_lock)
    assert Order.objects.get(pk=order["orderId"]).locked_amount == rest_lock


@pytest.mark.parametrize("tif, status, filled", [("IOC", "EXPIRED", True), ("FOK", "EXPIRED", False), ("GTC", "PARTIALLY_FILLED", True)])
def test_time_in_force(quotes, trader, replay, tif, status, filled):
    user, account, _ = trader
    fund(account, "USDT", "100000")
    ask, size = book(replay).asks[0]
    qty = up_to_step(size + 1)
    order = place(account, user, order_type="LIMIT", time_in_force=tif, quantity=str(qty), price=str(ask), client_order_id=f"tif-{tif}")
    assert order["status"] == status
    assert [Decimal(f["qty"]) for f in order["fills"]] == ([size] if filled else [])
    spent = q8(ask * size) if filled else 0
    locked = q8(ask * qty) - q8(ask * size) if tif == "GTC" else 0
    assert bal(account, "USDT") == (Decimal("100000") - spent - locked, locked)


def test_limit_maker_rejected_when_it_would_take(quotes, trader, replay):
    user, account, _ = trader
    ask = book(replay).asks[0][0]
    with pytest.raises(OrderRejected) as exc:
        place(account, user, order_type="LIMIT_MAKER", quantity="0.002", price=str(ask), client_order_id="lm-bad")
    assert exc.value.code == -2010 and exc.value.msg == "Order would immediately match and take."
    assert Order.objects.get(client_order_id="lm-bad").status == "REJECTED"
    ok = place(account, user, order_type="LIMIT_MAKER", quantity="0.002", price=str(ask - TICK), client_order_id="lm-ok")
    assert ok["status"] == "NEW" and ok["timeInForce"] is None
    assert bal(account, "USDT")[1] == (ask - TICK) * Decimal("0.002")


# --- stops ----------------------------------------------------------------------------------------

def test_stop_loss_triggers_on_last_trade_and_sells_at_the_book(quotes, trader, replay):
    user, account, _ = trader
    fund(account, "BTC", "1")
    b = book(replay)
    mid = (b.bids[0][0] + b.asks[0][0]) / 2
    with pytest.raises(OrderRejected) as exc:
        place(account, user, side="SELL", order_type="STOP_LOSS", quantity="0.01", stop_price=str(b.asks[0][0]), client_order_id="sl-now")
    assert exc.value.msg == "Stop price would trigger immediately."
    stop = b.bids[0][0] - 3 * TICK
    order = place(account, user, side="SELL", order_type="STOP_LOSS", quantity="0.01", stop_price=str(stop), client_order_id="sl")
    assert order["status"] == "NEW" and order["isWorking"] is False and mid > stop
    assert bal(account, "BTC") == (Decimal("0.99"), Decimal("0.01"))
    # a trade above the stop does nothing; one at or below triggers a market sell into the bids
    assert paper.paper_match("BTCUSDT", trade={"t": 1, "p": str(stop + TICK), "q": "1"}) == []
    paper.paper_match("BTCUSDT", trade={"t": 2, "p": str(stop), "q": "1"})
    o = Order.objects.get(pk=order["orderId"])
    fill = Fill.objects.get(order=o)
    assert o.status == "FILLED" and o.is_working and (fill.price, fill.qty, fill.is_maker) == (b.bids[0][0], Decimal("0.01"), False)
    assert bal(account, "BTC") == (Decimal("0.99"), 0)
    assert bal(account, "USDT")[0] == Decimal("10000") + q8(b.bids[0][0] * Decimal("0.01")) - fill.commission


def test_take_profit_limit_becomes_a_working_limit_then_fills_as_maker(quotes, trader, replay):
    user, account, _ = trader
    fund(account, "BTC", "1")
    b = book(replay)
    stop = b.asks[0][0] + 20 * TICK
    order = place(account, user, side="SELL", order_type="TAKE_PROFIT_LIMIT", quantity="0.01", stop_price=str(stop),
                  price=str(stop), client_order_id="tpl")
    assert order["isWorking"] is False and order["timeInForce"] == "GTC"
    paper.paper_match("BTCUSDT", trade={"t": 10, "p": str(stop), "q": "1"})
    o = Order.objects.get(pk=order["orderId"])
    assert o.is_working and o.status == "NEW" and not o.fills.exists()  # the bids are below the price
    paper.paper_match("BTCUSDT", book={"b": str(stop), "B": "0.004", "a": str(stop + TICK), "A": "1"})
    o.refresh_from_db()
    assert o.status == "PARTIALLY_FILLED" and o.executed_qty == Decimal("0.004")
    assert Fill.objects.get(order=o).is_maker and Fill.objects.get(order=o).price == stop


def test_stop_loss_limit_buy_crossing_after_trigger_takes(quotes, trader, replay):
    user, account, _ = trader
    b = book(replay)
    stop = b.asks[0][0] + 2 * TICK
    price = b.asks[3][0]
    order = place(account, user, order_type="STOP_LOSS_LIMIT", quantity="0.002", stop_price=str(stop), price=str(price),
                  client_order_id="sll")
    assert bal(account, "USDT")[1] == q8(price * Decimal("0.002"))
    paper.paper_match("BTCUSDT", trade={"t": 20, "p": str(stop), "q": "1"})
    o = Order.objects.get(pk=order["orderId"])
    assert o.status == "FILLED" and [(f.price, f.is_maker) for f in o.fills.all()] == [(b.asks[0][0], False)]
    assert bal(account, "USDT") == (Decimal("10000") - q8(b.asks[0][0] * Decimal("0.002")), 0)


# --- OCO, cancel-all, cancel-replace, close ----------------------------------------------------------------

def test_oco_sell_one_leg_fills_the_other_expires(quotes, trader, replay):
    user, account, _ = trader
    fund(account, "BTC", "1")
    b = book(replay)
    up, down = b.asks[0][0] + 30 * TICK, b.bids[0][0] - 30 * TICK
    olist = services.oco_place(account=account, actor_user=user, channel="api", symbol="BTCUSDT", side="SELL",
                               quantity="0.01", price=str(up), stop_price=str(down), list_client_order_id="oco-1")
    legs = olist["orders"]
    assert [(o["type"], o["status"]) for o in legs] == [("LIMIT_MAKER", "NEW"), ("STOP_LOSS", "NEW")]
    assert bal(account, "BTC") == (Decimal("0.99"), Decimal("0.01"))  # one lock for both legs
    paper.paper_match("BTCUSDT", trade={"t": 30, "p": str(up + TICK), "q": "5"})
    lm, sl = Order.objects.filter(order_list_id=olist["orderListId"]).order_by("id")
    assert (lm.status, sl.status) == ("FILLED", "EXPIRED")
    assert OrderList.objects.get(pk=olist["orderListId"]).list_order_status == "ALL_DONE"
    assert bal(account, "BTC") == (Decimal("0.99"), 0)
    again = services.oco_place(account=account, actor_user=user, channel="api", symbol="BTCUSDT", side="SELL",
                               quantity="0.01", price=str(up), stop_price=str(down), list_client_order_id="oco-1")
    assert again["duplicate"] and again["orderListId"] == olist["orderListId"]


def test_oco_stop_leg_triggers_and_takes_the_shared_lock(quotes, trader, replay):
    user, account, _ = trader
    fund(account, "BTC", "1")
    b = book(replay)
    up, down = b.asks[0][0] + 30 * TICK, b.bids[0][0] - 30 * TICK
    olist = services.oco_place(account=account, actor_user=user, channel="api", symbol="BTCUSDT", side="SELL",
                               quantity="0.01", price=str(up), stop_price=str(down))
    paper.paper_match("BTCUSDT", trade={"t": 31, "p": str(down), "q": "5"})
    lm, sl = Order.objects.filter(order_list_id=olist["orderListId"]).order_by("id")
    assert (lm.status, sl.status) == ("EXPIRED", "FILLED")
    assert Fill.objects.get(order=sl).price == b.bids[0][0]
    assert bal(account, "BTC") == (Decimal("0.99"), 0)


def test_cancel_all_and_cancel_replace(quotes, trader, replay):
    user, account, _ = trader
    bid = book(replay).bids[0][0]
    ids = [place(account, user, order_type="LIMIT", quantity="0.002", price=str(bid - i * TICK), client_order_id=f"ca-{i}")["orderId"]
           for i in range(1, 4)]
    replaced = services.order_cancel_replace(account=account, actor_user=user, channel="api", symbol="BTCUSDT", side="BUY",
                                             order_type="LIMIT", cancel_order_id=ids[0], quantity="0.003",
                                             price=str(bid - 10 * TICK), client_order_id="ca-new")
    assert replaced["cancelResult"] == replaced["newOrderResult"] == "SUCCESS"
    assert replaced["cancelResponse"]["status"] == "CANCELED" and replaced["newOrderResponse"]["status"] == "NEW"
    locked = sum((bid - i * TICK) * Decimal("0.002") for i in (2, 3)) + (bid - 10 * TICK) * Decimal("0.003")
    assert bal(account, "USDT") == (Decimal("10000") - locked, locked)
    with pytest.raises(OrderRejected) as exc:  # cancel succeeds, the new order breaks MIN_NOTIONAL
        services.order_cancel_replace(account=account, actor_user=user, channel="api", symbol="BTCUSDT", side="BUY",
                                      order_type="LIMIT", cancel_order_id=ids[1], quantity="0.0001", price=str(bid))
    assert exc.value.code == -2021 and exc.value.details["cancelResponse"]["orderId"] == ids[1]
    out = services.order_cancel_all(account=account, actor_user=user, channel="api", symbol="btcusdt")
    assert sorted(o["orderId"] for o in out) == sorted([ids[2], replaced["newOrderResponse"]["orderId"]])
    assert bal(account, "USDT") == (Decimal("10000"), 0)
    assert not Order.objects.filter(status__in=["NEW", "PARTIALLY_FILLED"]).exists()


def test_close_position_sells_the_free_base_after_canceling(quotes, trader, replay):
    user, account, _ = trader
    b = book(replay)
    place(account, user, quantity="0.004", client_order_id="open")
    place(account, user, side="SELL", order_type="LIMIT", quantity="0.002", price=str(b.asks[0][0] + 100 * TICK), client_order_id="tp")
    result = services.position_close(account=account, actor_user=user, channel="api", symbol="BTCUSDT", client_order_id="close")
    assert Order.objects.get(client_order_id="tp").status == "CANCELED"
    assert result.order["status"] == "FILLED" and result.order["executedQty"] == "0.00399000"  # 0.003996 floored to the step
    assert bal(account, "BTC") == (Decimal("0.000006"), 0)


# --- filters and parameters -------------------------------------------------------------------------

def set_filters(symbol, **replace):
    from marketdata.models import Symbol

    row = Symbol.objects.get(symbol=symbol)
    fs = [f for f in row.filters if f["filterType"] not in replace]
    fs += [dict(v, filterType=k) for k, v in replace.items() if v is not None]
    row.filters = fs
    row.save()


@pytest.mark.parametrize("kwargs, filter_name, nearest", [
    ({"order_type": "LIMIT", "quantity": "0.002", "price": "7000.005"}, "PRICE_FILTER", "7000.01"),
    ({"order_type": "LIMIT", "quantity": "0.002", "price": "0.001"}, "PRICE_FILTER", "0.01"),
    ({"order_type": "LIMIT", "quantity": "10000", "price": "7000"}, "LOT_SIZE", "9000"),
    ({"order_type": "LIMIT", "quantity": "0.001", "price": "7000"}, "NOTIONAL", "0.00143"),
    ({"order_type": "LIMIT", "quantity": "0.002", "price": "100"}, "PERCENT_PRICE_BY_SIDE", None),
    ({"order_type": "STOP_LOSS", "side": "SELL", "quantity": "0.002", "stop_price": "7000.001"}, "PRICE_FILTER", "7000"),
    ({"quantity": "0.001"}, "NOTIONAL", None),  # the replay serves today's filters (NOTIONAL, PERCENT_PRICE_BY_SIDE)
])
def test_filter_failures_are_binance_errors_and_book_nothing(quotes, trader, kwargs, filter_name, nearest):
    user, account, _ = trader
    with pytest.raises(FilterFailure) as exc:
        place(account, user, client_order_id="f", **kwargs)
    assert exc.value.code == -1013 and exc.value.msg.startswith(f"Filter failure: {filter_name}.")
    assert exc.value.details["filter"] == filter_name
    if nearest:
        assert exc.value.details["nearestValid"] == nearest and f"nearest valid: {nearest}" in exc.value.msg
    assert not Order.objects.exists() and bal(account, "USDT") == (Decimal("10000"), 0)
    assert AuditEvent.objects.get(action="order.place").outcome == "rejected"


def test_market_min_notional_hint_is_the_smallest_valid_quantity(quotes, trader, replay):
    user, account, _ = trader
    b = book(replay)
    ref = (b.bids[0][0] + b.asks[0][0]) / 2
    with pytest.raises(FilterFailure) as exc:
        place(account, user, quantity="0.001")
    hint = Decimal(exc.value.details["nearestValid"])
    assert hint * ref >= 10 and (hint - STEP) * ref < 10
    assert place(account, user, quantity=str(hint))["status"] == "FILLED"


def test_notional_percent_by_side_market_lot_and_max_num_orders(quotes, trader, replay):
    user, account, _ = trader
    bid = book(replay).bids[0][0]
    set_filters("BTCUSDT", MIN_NOTIONAL=None, PERCENT_PRICE=None,
                NOTIONAL={"minNotional": "5", "applyMinToMarket": True, "maxNotional": "100", "applyMaxToMarket": False, "avgPriceMins": 5},
                PERCENT_PRICE_BY_SIDE={"bidMultiplierUp": "1.01", "bidMultiplierDown": "0.99", "askMultiplierUp": "1.2",
                                       "askMultiplierDown": "0.8", "avgPriceMins": 5},
                MARKET_LOT_SIZE={"minQty": "0.001", "maxQty": "0.05", "stepSize": "0.001"},
                MAX_NUM_ORDERS={"maxNumOrders": 2})
    with pytest.raises(FilterFailure) as exc:
        place(account, user, order_type="LIMIT", quantity="0.02", price=str(bid))
    assert exc.value.details["filter"] == "NOTIONAL" and "above maxNotional 100" in exc.value.msg
    with pytest.raises(FilterFailure) as exc:
        place(account, user, order_type="LIMIT", quantity="0.002", price=str((bid * Decimal("0.98")).quantize(TICK)))
    assert exc.value.details["filter"] == "PERCENT_PRICE_BY_SIDE"
    with pytest.raises(FilterFailure) as exc:
        place(account, user, quantity="0.0015")
    assert exc.value.details["filter"] == "MARKET_LOT_SIZE" and exc.value.details["nearestValid"] == "0.001"
    for i in range(2):
        place(account, user, order_type="LIMIT", quantity="0.001", price=str(bid - (i + 1) * TICK), client_order_id=f"m{i}")
    with pytest.raises(FilterFailure) as exc:
        place(account, user, order_type="LIMIT", quantity="0.001", price=str(bid - 5 * TICK), client_order_id="m3")
    assert exc.value.msg.startswith("Filter failure: MAX_NUM_ORDERS.")
    assert Order.objects.count() == 2 and not Order.objects.filter(client_order_id="m3").exists()


@pytest.mark.django_db(transaction=True)
def test_an_order_that_waited_for_the_account_lock_counts_the_orders_booked_meanwhile(quotes, trader, replay):
    """Orders of one account queue on its row lock, and the one that waited sees what the one
    before it booked: with MAX_NUM_ORDERS 1, a LIMIT placed while another LIMIT's transaction holds
    the lock is refused once that one commits (on PostgreSQL the open orders are read by a
    statement that starts after the lock is granted, not in the locking statement's snapshot)."""
    import threading
    import time

    from django.db import connection, transaction

    user, account, _ = trader
    bid = book(replay).bids[0][0]
    set_filters("BTCUSDT", MAX_NUM_ORDERS={"maxNumOrders": 1})
    holding, release, outcome = threading.Event(), threading.Event(), {}

    def first():
        try:
            with transaction.atomic():
                place(account, user, order_type="LIMIT", quantity="0.002", price=str(bid - 5 * TICK), client_order_id="first")
                holding.set()
                release.wait(30)
        finally:
            connection.close()

    def second():
        try:
            outcome["second"] = place(account, user, order_type="LIMIT", quantity="0.002", price=str(bid - 6 * TICK),
                                      client_order_id="second")["status"]
        except FilterFailure as exc:
            outcome["second"] = exc.details["filter"]
        finally:
            connection.close()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    threads[0].start()
    assert holding.wait(30)
    threads[1].start()
    if connection.vendor == "postgresql":  # release once the second order waits for the row lock
        for _ in range(200):
            with connection.cursor() as cur:
                cur.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()")
                if cur.fetchone()[0]:
                    break
            time.sleep(0.05)
    else:  # SQLite: the second one's BEGIN IMMEDIATE waits for the first one's write lock
        time.sleep(0.3)
    release.set()
    for t in threads:
        t.join(60)
    assert outcome == {"second": "MAX_NUM_ORDERS"}
    assert list(Order.objects.filter(account=account).values_list("client_order_id", flat=True)) == ["first"]


@pytest.mark.parametrize("kwargs, code, text", [
    ({"order_type": "LIMIT", "quantity": "0.002"}, -1102, "Mandatory parameter 'price'"),
    ({"order_type": "STOP_LOSS", "quantity": "0.002"}, -1102, "Mandatory parameter 'stopPrice'"),
    ({"quantity": "0.002", "price": "7000"}, -1106, "Parameter 'price' sent when not required"),
    ({"quantity": "0.002", "quote_order_qty": "20"}, -1106, "quoteOrderQty"),
    ({"order_type": "LIMIT", "quantity": "0.002", "price": "7000", "time_in_force": "GTX"}, -1115, "timeInForce"),
    ({"order_type": "LIMIT_MAKER", "quantity": "0.002", "price": "7000", "time_in_force": "GTC"}, -1106, "timeInForce"),
    ({"order_type": "TRAILING", "quantity": "0.002"}, -1116, "not supported"),
])
def test_parameter_errors(quotes, trader, kwargs, code, text):
    user, account, _ = trader
    with pytest.raises(InvalidInput) as exc:
        place(account, user, **kwargs)
    assert exc.value.code == code and text in exc.value.msg
    assert not Order.objects.exists()


def test_insufficient_balance_for_a_limit_locks_nothing(quotes, trader, replay):
    user, account, _ = trader
    with pytest.raises(OrderRejected) as exc:
        place(account, user, side="SELL", order_type="LIMIT", quantity="0.01", price="9000", client_order_id="no-btc")
    assert exc.value.code == -2010 and "insufficient balance" in exc.value.msg
    assert Order.objects.get(client_order_id="no-btc").status == "REJECTED"
    assert bal(account, "USDT") == (Decimal("10000"), 0)
