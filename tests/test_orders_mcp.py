"""The order, position and P&L MCP tools in-process (POST /mcp), per-user isolation included."""
from decimal import Decimal

from test_mcp import call

from risk.models import AuditEvent
from risk.services import agent_token_create
from trading.models import Balance, Order, PortfolioSnapshot
from trading.portfolio import daily_pnl_rollup, snapshot_take
from trading.services import account_create


def test_limit_order_lifecycle_through_mcp(quotes, trader, replay):
    user, account, key = trader
    bid = replay.model.depth("BTCUSDT", replay.clock.now_ms(), 5).bids[0][0]
    price = bid - Decimal("1")
    err, order = call(key, "place_order", symbol="BTCUSDT", side="BUY", type="LIMIT", quantity="0.002",
                      price=format(price, "f"), client_order_id="mcp-limit")
    assert not err and order["status"] == "NEW" and order["price"] == format(price.quantize(Decimal("1e-8")), "f")
    err, open_orders = call(key, "list_open_orders", symbol="BTCUSDT")
    assert [o["clientOrderId"] for o in open_orders["orders"]] == ["mcp-limit"]
    err, got = call(key, "get_order", client_order_id="mcp-limit")
    assert not err and got["orderId"] == order["orderId"]
    err, canceled = call(key, "cancel_order", symbol="BTCUSDT", order_id=order["orderId"])
    assert not err and canceled["status"] == "CANCELED"
    err, message = call(key, "cancel_order", symbol="BTCUSDT", order_id=order["orderId"])
    assert err and "[-2011]" in message
    err, message = call(key, "place_order", symbol="BTCUSDT", side="BUY", type="LIMIT", quantity="0.002", price="7000.001")
    assert err and "[-1013] Filter failure: PRICE_FILTER" in message and "nearest valid: 7000" in message
    assert Balance.objects.get(account=account, asset="USDT").locked == 0
    assert [e.outcome for e in AuditEvent.objects.filter(action="order.cancel").order_by("id")] == ["ok", "rejected"]


def test_positions_portfolio_pnl_and_close_through_mcp(quotes, trader, replay):
    user, account, key = trader
    book = replay.model.depth("BTCUSDT", replay.clock.now_ms(), 5)
    ask, bid = book.asks[0][0], book.bids[0][0]
    err, order = call(key, "place_order", symbol="BTCUSDT", side="BUY", quantity="0.004", client_order_id="p-1")
    assert not err and order["status"] == "FILLED"
    snapshot_take(account=account)
    err, positions = call(key, "get_positions")
    pos = positions["positions"][0]
    qty = Decimal("0.004") - Decimal("0.000004")
    assert (pos["symbol"], Decimal(pos["quantity"]), Decimal(pos["avgEntryPrice"])) == ("BTCUSDT", qty, ask)
    assert Decimal(pos["markPrice"]) == bid and Decimal(pos["unrealizedPnl"]) == ((bid - ask) * qty).quantize(Decimal("1e-8"))
    err, pf = call(key, "get_portfolio")
    usdt = Decimal("10000") - (ask * Decimal("0.004")).quantize(Decimal("1e-8"))
    assert Decimal(pf["value"]) == usdt + (qty * bid).quantize(Decimal("1e-8"))
    err, pnl = call(key, "get_pnl", period="today")
    assert not err and Decimal(pnl["fees"]) == (Decimal("0.000004") * ask).quantize(Decimal("1e-8"))
    assert pnl["startValue"] == format(PortfolioSnapshot.objects.get().value, "f")
    err, message = call(key, "get_pnl", period="week")
    assert err and "period must be one of" in message
    from django.utils import timezone

    row = daily_pnl_rollup(account=account, day=timezone.now().date())
    assert row.fees == Decimal(pnl["fees"]) and row.pnl == 0
    err, closed = call(key, "close_position", symbol="BTCUSDT", client_order_id="close-1")
    assert not err and closed["side"] == "SELL" and closed["executedQty"] == "0.00399000"
    err, trades = call(key, "get_trade_history", symbol="BTCUSDT")
    assert [t["side"] for t in trades["trades"]] == ["SELL", "BUY"]


def test_other_users_orders_are_invisible(quotes, trader, make_user, replay):
    _, account_a, key_a = trader
    bid = replay.model.depth("BTCUSDT", replay.clock.now_ms(), 5).bids[0][0]
    _, order = call(key_a, "place_order", symbol="BTCUSDT", side="BUY", type="LIMIT", quantity="0.002",
                    price=format(bid - 1, "f"))
    bob = make_user("bob")
    account_create(owner=bob, name="Bob paper")
    _, key_b = agent_token_create(user=bob, name="bob-agent")
    for name, args in [("cancel_order", {"symbol": "BTCUSDT", "order_id": order["orderId"]}),
                       ("get_order", {"order_id": order["orderId"]})]:
        err, message = call(key_b, name, **args)
        assert err and "Order does not exist" in message, message
    err, message = call(key_b, "cancel_all_orders", symbol="BTCUSDT", account_id=account_a.pk)
    assert err and f"Account {account_a.pk} not found" in message
    err, out = call(key_b, "cancel_all_orders", symbol="BTCUSDT")
    assert out["canceled"] == [] and Order.objects.get(pk=order["orderId"]).status == "NEW"


def test_oco_through_mcp_is_idempotent_and_cancels_as_one(quotes, trader, replay):
    user, account, key = trader
    Balance.objects.update_or_create(account=account, asset="BTC", defaults={"free": Decimal("0.01")})
    bid = replay.model.depth("BTCUSDT", replay.clock.now_ms(), 5).bids[0][0]
    args = {"symbol": "BTCUSDT", "side": "SELL", "quantity": "0.002", "price": format(bid + 300, "f"),
            "stop_price": format(bid - 300, "f"), "list_client_order_id": "bracket"}
    err, olist = call(key, "place_oco", **args)
    assert not err, olist
    assert [o["type"] for o in olist["orders"]] == ["LIMIT_MAKER", "STOP_LOSS"]
    assert Balance.objects.get(account=account, asset="BTC").locked == Decimal("0.002")  # one lock for both legs
    err, again = call(key, "place_oco", **args)
    assert not err and again["orderListId"] == olist["orderListId"]
    assert Order.objects.filter(account=account).count() == 2
    err, canceled = call(key, "cancel_order", symbol="BTCUSDT", order_id=olist["orders"][0]["orderId"])
    assert not err
    assert set(Order.objects.filter(account=account).values_list("status", flat=True)) == {"CANCELED"}
    assert Balance.objects.get(account=account, asset="BTC").locked == 0
    err, message = call(key, "place_oco", **{**args, "price": format(bid - 600, "f"), "list_client_order_id": "wrong-way"})
    assert err and "[-1013]" in message and Order.objects.filter(account=account).count() == 2
