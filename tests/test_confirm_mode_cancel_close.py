"""Confirm mode and risk-reducing actions (issue 18): a confirm-mode token's cancels go through at
once (audited with the token), and its close_position holds the sell for approval without
canceling the resting orders first; the tokens page states both rules."""
from decimal import Decimal

import pytest
from django.test import Client

from risk.models import AuditEvent, OrderApproval
from risk.services import agent_token_create
from test_mcp import call
from trading.models import Balance, Order
from trading.services import order_place


def market_lot(quantity: Decimal) -> Decimal:
    """``quantity`` rounded down to BTCUSDT's MARKET_LOT_SIZE step, as close_position sells it."""
    from marketdata.selectors import symbol_get
    from trading import filters

    sym = symbol_get("BTCUSDT")
    return filters.round_step(quantity, filters.lot_step(sym, market=True))


@pytest.fixture
def holding(quotes, trader):
    """alice holds ~0.004 BTC, 0.002 of it locked by a resting LIMIT SELL 2 % above the ask; plus a
    confirm-mode token. (user, account, confirm key, the resting order)."""
    user, account, _ = trader
    order_place(account=account, actor_user=user, channel="dashboard", symbol="BTCUSDT", side="BUY", quantity="0.004")
    ask = Decimal(quotes["BTCUSDT"]["askPrice"])
    price = (ask * Decimal("1.02")).quantize(Decimal("0.01"))
    resting = order_place(account=account, actor_user=user, channel="dashboard", symbol="BTCUSDT", side="SELL",
                          order_type="LIMIT", quantity="0.002", price=str(price), time_in_force="GTC").order
    assert resting["status"] == "NEW"
    _, key = agent_token_create(user=user, name="careful-agent", confirm_orders=True)
    return user, account, key, Order.objects.get(pk=resting["orderId"])


def test_close_position_in_confirm_mode_holds_the_sell_and_leaves_resting_orders(holding):
    user, account, key, resting = holding
    btc = Balance.objects.get(account=account, asset="BTC")
    is_error, held = call(key, "close_position", symbol="BTCUSDT")
    assert not is_error, held
    assert held["status"] == "PENDING_APPROVAL" and held["side"] == "SELL"
    resting.refresh_from_db()
    assert resting.status == "NEW", "the resting order must stay while the sell waits for approval"
    assert Balance.objects.get(account=account, asset="BTC").locked == btc.locked == Decimal("0.002")
    approval = OrderApproval.objects.get(pk=held["approvalId"])
    # the free part only (down to the lot step), not what the resting order locks
    assert Decimal(approval.params["quantity"]) == market_lot(btc.free)
    assert not AuditEvent.objects.filter(action__in=["order.cancel", "order.cancel_all"]).exists()
    # rejected: nothing was sold and nothing canceled
    resp = Client()
    resp.force_login(user)
    assert resp.post(f"/api/v1/approvals/{approval.pk}/reject", "{}", content_type="application/json").status_code == 200
    resting.refresh_from_db()
    assert resting.status == "NEW" and Balance.objects.get(account=account, asset="BTC").free == btc.free


def test_cancels_of_a_confirm_token_go_through_at_once_and_are_audited(holding):
    user, account, key, resting = holding
    is_error, out = call(key, "cancel_order", symbol="BTCUSDT", order_id=resting.pk)
    assert not is_error, out
    assert out["status"] == "CANCELED" and not OrderApproval.objects.exists()
    event = AuditEvent.objects.get(action="order.cancel", outcome="ok")
    assert event.actor_token.name == "careful-agent" and event.account_id == account.pk
    # with nothing left resting, close_position's held sell covers the whole position
    is_error, held = call(key, "close_position", symbol="BTCUSDT")
    assert not is_error and held["status"] == "PENDING_APPROVAL"
    quantity = Decimal(OrderApproval.objects.get(pk=held["approvalId"]).params["quantity"])
    assert quantity == market_lot(Balance.objects.get(account=account, asset="BTC").free) > Decimal("0.003")


def test_close_position_says_what_resting_orders_lock_when_nothing_is_free(quotes, trader):
    user, account, _ = trader
    order_place(account=account, actor_user=user, channel="dashboard", symbol="BTCUSDT", side="BUY", quantity="0.003")
    free = market_lot(Balance.objects.get(account=account, asset="BTC").free)  # all but dust below the step
    ask = Decimal(quotes["BTCUSDT"]["askPrice"])
    order_place(account=account, actor_user=user, channel="dashboard", symbol="BTCUSDT", side="SELL", order_type="LIMIT",
                quantity=str(free), price=str((ask * Decimal("1.02")).quantize(Decimal("0.01"))), time_in_force="GTC")
    _, key = agent_token_create(user=user, name="careful-agent", confirm_orders=True)
    is_error, message = call(key, "close_position", symbol="BTCUSDT")
    assert is_error and "locked by open orders" in message and "cancel them" in message
    assert Order.objects.filter(account=account, status="NEW").count() == 1 and not OrderApproval.objects.exists()


@pytest.mark.django_db
def test_tokens_page_shows_confirm_mode_and_its_rules(trader):
    user, _, _ = trader
    agent_token_create(user=user, name="careful-agent", confirm_orders=True)
    client = Client()
    client.force_login(user)
    page = client.get("/tokens/").content.decode()
    row = page[page.index("careful-agent"):]
    assert 'class="badge confirm-mode"' in row[:2000]
    policy = page[page.index('id="confirm-mode-policy"'):]
    assert "close_position" in policy and "Cancels are never held" in policy
