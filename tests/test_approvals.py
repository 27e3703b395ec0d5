"""Confirm mode (trading.approvals): a confirm-mode token's orders wait as PENDING_APPROVAL until a
person approves (the order is placed then, risk-checked then) or rejects them. Through the real
MCP endpoint, the REST API and the admin, on the paper venue with replayed quotes."""
from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from risk.models import AccountGrant, AgentToken, AuditEvent, OrderApproval, RiskLimit
from risk.services import agent_token_create
from test_mcp import call
from trading.models import Balance, Order


@pytest.fixture
def confirm(quotes, trader):
    """(user, account, plain key of a confirm-mode token)."""
    user, account, _ = trader
    _, key = agent_token_create(user=user, name="careful-agent", confirm_orders=True)
    return user, account, key


def balances(account):
    return sorted(Balance.objects.filter(account=account).values_list("asset", "free", "locked"))


def session(user):
    client = APIClient()
    client.force_login(user)
    return client


def test_confirm_token_orders_wait_and_are_idempotent(confirm):
    user, account, key = confirm
    before = balances(account)
    is_error, held = call(key, "place_order", symbol="BTCUSDT", side="BUY", quantity="0.002", client_order_id="wait-1")
    assert not is_error, held
    assert held["status"] == "PENDING_APPROVAL" and held["clientOrderId"] == "wait-1" and held["orderId"] is None
    assert held["requestedBy"] == "careful-agent" and held["duplicate"] is False
    assert not Order.objects.filter(account=account).exists() and balances(account) == before

    is_error, again = call(key, "place_order", symbol="BTCUSDT", side="BUY", quantity="0.002", client_order_id="wait-1")
    assert not is_error and again["approvalId"] == held["approvalId"] and again["duplicate"] is True
    assert OrderApproval.objects.count() == 1

    is_error, pending = call(key, "list_pending_orders")
    assert not is_error and [a["approvalId"] for a in pending["approvals"]] == [held["approvalId"]]
    hold = AuditEvent.objects.get(action="order.hold")
    assert hold.actor_token.name == "careful-agent" and hold.outcome == "ok"


def test_bad_orders_from_a_confirm_token_are_refused_at_once(confirm):
    _, account, key = confirm
    is_error, message = call(key, "place_order", symbol="BTCUSDT", side="BUY", quantity="0.0000001")
    assert is_error and "LOT_SIZE" in message
    is_error, message = call(key, "place_order", symbol="BTCUSD", side="BUY", quantity="0.002")
    assert is_error and "Invalid symbol" in message
    assert not OrderApproval.objects.exists()
    assert AuditEvent.objects.filter(action="order.hold", outcome="rejected").count() == 2


def test_approval_places_the_order_under_the_agents_client_order_id(confirm):
    user, account, key = confirm
    _, held = call(key, "place_order", symbol="BTCUSDT", side="BUY", quantity="0.002", client_order_id="wait-2")
    resp = session(user).post(f"/api/v1/approvals/{held['approvalId']}/approve", {"note": "looks fine"}, format="json")
    assert resp.status_code == 200, resp.content
    out = resp.json()
    assert out["error"] is None and out["order"]["status"] == "FILLED" and out["order"]["clientOrderId"] == "wait-2"
    assert out["approval"]["status"] == "APPROVED" and out["approval"]["decidedBy"] == user.username
    order = Order.objects.get(account=account, client_order_id="wait-2")
    assert Balance.objects.get(account=account, asset="BTC").free > 0
    placed = AuditEvent.objects.get(action="order.place", outcome="ok")
    assert placed.actor_token.name == "careful-agent", "the order is the agent's, placed on approval"
    decision = AuditEvent.objects.get(action="order.approve")
    assert decision.actor_user == user and decision.result["before"] == "PENDING_APPROVAL" and decision.result["orderId"] == order.pk

    is_error, again = call(key, "place_order", symbol="BTCUSDT", side="BUY", quantity="0.002", client_order_id="wait-2")
    assert not is_error and again["orderId"] == order.pk and again["duplicate"] is True
    assert Order.objects.filter(account=account).count() == 1
    assert call(key, "list_pending_orders")[1]["approvals"] == []
    resp = session(user).post(f"/api/v1/approvals/{held['approvalId']}/approve", {}, format="json")
    assert resp.status_code == 400 and "not pending" in resp.json()["msg"]
    assert Order.objects.filter(account=account).count() == 1


def test_approval_reruns_the_risk_check_at_approval_time(confirm):
    user, account, key = confirm
    _, held = call(key, "place_order", symbol="BTCUSDT", side="BUY", quantity="0.002", client_order_id="wait-3")
    RiskLimit.objects.filter(account=account).update(max_order_notional=Decimal("5"))  # tightened meanwhile
    resp = session(user).post(f"/api/v1/approvals/{held['approvalId']}/approve", {}, format="json")
    assert resp.status_code == 200
    out = resp.json()
    assert out["order"]["status"] == "REJECTED" and "max_order_notional" in out["error"]["msg"]
    assert out["approval"]["status"] == "APPROVED"
    assert Balance.objects.filter(account=account, asset="BTC", free__gt=0).count() == 0


def test_reject_places_nothing(confirm):
    user, account, key = confirm
    _, held = call(key, "place_order", symbol="BTCUSDT", side="BUY", quantity="0.002")
    resp = session(user).post(f"/api/v1/approvals/{held['approvalId']}/reject", {"note": "no"}, format="json")
    assert resp.status_code == 200 and resp.json()["approval"]["status"] == "REJECTED" and resp.json()["order"] is None
    assert not Order.objects.filter(account=account).exists()
    event = AuditEvent.objects.get(action="order.reject")
    assert event.result == {"before": "PENDING_APPROVAL", "after": "REJECTED"} and event.params["note"] == "no"
    resp = session(user).post(f"/api/v1/approvals/{held['approvalId']}/approve", {}, format="json")
    assert resp.status_code == 400 and not Order.objects.filter(account=account).exists()


def test_agents_viewers_and_strangers_cannot_decide(confirm, make_user):
    user, account, key = confirm
    _, held = call(key, "place_order", symbol="BTCUSDT", side="BUY", quantity="0.002")
    url = f"/api/v1/approvals/{held['approvalId']}/approve"
    _, plain_key = agent_token_create(user=user, name="plain")  # the owner's own token, no confirm mode
    for token_key in (key, plain_key):
        agent = APIClient()
        agent.credentials(HTTP_AUTHORIZATION=f"Bearer {token_key}")
        resp = agent.post(url, {}, format="json")
        assert resp.status_code == 403 and "not by an agent token" in resp.json()["msg"]
    viewer, stranger = make_user("vera"), make_user("mallory")
    AccountGrant.objects.create(account=account, user=viewer, role="viewer")
    refused = session(viewer).post(url, {}, format="json")  # a viewer sees it, so it is forbidden, not missing
    assert refused.status_code == 403 and "may only view" in refused.json()["msg"]
    assert session(viewer).post(url.replace("/approve", "/reject"), {}, format="json").status_code == 403
    assert session(stranger).post(url, {}, format="json").status_code == 404
    assert session(stranger).get(f"/api/v1/accounts/{account.pk}/approvals").status_code == 404
    assert OrderApproval.objects.get().status == "PENDING_APPROVAL" and not Order.objects.exists()
    listed = session(viewer).get(f"/api/v1/accounts/{account.pk}/approvals").json()
    assert [a["approvalId"] for a in listed["approvals"]] == [held["approvalId"]]


def test_turning_confirm_mode_on_takes_effect_at_once(quotes, trader):
    user, account, key = trader
    is_error, order = call(key, "place_order", symbol="BTCUSDT", side="BUY", quantity="0.002")
    assert not is_error and order["status"] == "FILLED"  # the token's identity is now cached
    token = AgentToken.objects.get(name="alice-agent")
    token.confirm_orders = True
    token.save()
    is_error, held = call(key, "place_order", symbol="BTCUSDT", side="BUY", quantity="0.002")
    assert not is_error and held["status"] == "PENDING_APPROVAL"
    assert Order.objects.filter(account=account).count() == 1


def test_rest_orders_of_a_confirm_token_answer_202(confirm):
    _, account, key = confirm
    agent = APIClient()
    agent.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    resp = agent.post(f"/api/v1/accounts/{account.pk}/orders", {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.002"}, format="json")
    assert resp.status_code == 202 and resp.json()["status"] == "PENDING_APPROVAL"
    assert not Order.objects.filter(account=account).exists()


def test_admin_actions_approve_and_reject(confirm, client, django_user_model):
    _, account, key = confirm
    _, first = call(key, "place_order", symbol="BTCUSDT", side="BUY", quantity="0.002", client_order_id="adm-1")
    _, second = call(key, "place_order", symbol="BTCUSDT", side="BUY", quantity="0.002", client_order_id="adm-2")
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw-for-tests-1")
    client.force_login(admin)
    assert client.get("/admin/risk/orderapproval/").status_code == 200
    resp = client.post("/admin/risk/orderapproval/", {"action": "approve", "_selected_action": [first["approvalId"]]})
    assert resp.status_code == 302
    resp = client.post("/admin/risk/orderapproval/", {"action": "reject", "_selected_action": [second["approvalId"]]})
    assert resp.status_code == 302
    assert Order.objects.get(account=account).client_order_id == "adm-1"
    assert dict(OrderApproval.objects.values_list("client_order_id", "status")) == {"adm-1": "APPROVED", "adm-2": "REJECTED"}
    assert set(AuditEvent.objects.filter(channel="admin").values_list("action", flat=True)) == {"order.approve", "order.reject"}


@pytest.mark.django_db(transaction=True)
def test_racing_approvals_place_the_order_once(symbols, trader, make_user):
    """Several people approving (and rejecting) one held order at the same moment: the approval row
    lock lets exactly one decision through, so the order is placed at most once."""
    import threading

    from django.db import connection

    from conftest import cache_quotes
    from trading import approvals
    from core.errors import TradingError

    symbols.clock.pause()
    try:
        cache_quotes()
        user, account, _ = trader
        _, key = agent_token_create(user=user, name="careful-agent", confirm_orders=True)
        _, held = call(key, "place_order", symbol="BTCUSDT", side="BUY", quantity="0.002", client_order_id="race-1")
        deciders = [user] + [make_user(f"trader{i}") for i in range(5)]
        for person in deciders[1:]:
            AccountGrant.objects.create(account=account, user=person, role="trader")
        barrier = threading.Barrier(len(deciders))
        outcomes = []

        def decide(i, person):
            barrier.wait()
            fn = approvals.order_reject if i == 3 else approvals.order_approve
            try:
                fn(user=person, approval_id=held["approvalId"], channel="dashboard")
                outcomes.append("approved" if fn is approvals.order_approve else "rejected")
            except TradingError as exc:
                outcomes.append("not pending" if "not pending" in exc.msg else str(exc))
            finally:
                connection.close()

        threads = [threading.Thread(target=decide, args=(i, p)) for i, p in enumerate(deciders)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        symbols.clock.resume()
    assert outcomes.count("not pending") == len(deciders) - 1, outcomes
    final = OrderApproval.objects.get().status
    assert Order.objects.filter(account=account).count() == (1 if final == "APPROVED" else 0)
    assert AuditEvent.objects.filter(action__in=["order.approve", "order.reject"]).count() == 1
