"""Notifications: a local webhook receiver (Apprise ``json://``) gets exactly one message per fill
and per breaker trip, none about another person's account; the settings page; the trust rule
(ids, symbols and numbers only); retries and dedupe. The Celery task runs eagerly here; with a
real worker in tests/test_ops_e2e.py."""
from decimal import Decimal

import pytest
from django.test import Client
from test_mcp import call
from webhook import WebhookReceiver

from notifications import services
from notifications.messages import render
from notifications.models import NotificationChannel
from project.celery import app as celery_app
from risk.models import AuditEvent, RiskLimit
from risk.services import agent_token_create
from trading.services import account_halt
from trading.services import account_create

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fernet_key(settings):
    """Channel URLs are stored encrypted (risk.secrets): a key for this test."""
    from cryptography.fernet import Fernet

    from risk import secrets as risk_secrets

    settings.SECRETS_ENCRYPTION_KEY = Fernet.generate_key().decode()
    risk_secrets._fernet.cache_clear()
    yield
    risk_secrets._fernet.cache_clear()
    from core.redis import get_redis

    r = get_redis()  # delivered-notification keys: ids restart with each test's database
    keys = list(r.scan_iter(match=f"{settings.REDIS_KEY_PREFIX}notif:*", count=500))
    if keys:
        r.delete(*keys)


@pytest.fixture
def eager():
    celery_app.conf.task_always_eager = True
    celery_app.conf.task_eager_propagates = True
    services.recipients_forget()
    yield
    celery_app.conf.task_always_eager = False
    celery_app.conf.task_eager_propagates = False
    services.recipients_forget()


@pytest.fixture
def receiver():
    with WebhookReceiver() as r:
        yield r


@pytest.fixture
def bob(make_user):
    user = make_user("bob")
    account = account_create(owner=user, name="Bob paper")
    _, key = agent_token_create(user=user, name="bob-agent")
    return user, account, key


def test_one_notification_per_fill_and_none_for_another_account(quotes, trader, bob, eager, receiver,
                                                                django_capture_on_commit_callbacks):
    alice, account, key = trader
    services.channel_create(user=alice, url=receiver.url("alice"), events=["fill", "breaker_trip"])
    services.channel_create(user=bob[0], url=receiver.url("bob"), events=["fill", "breaker_trip", "risk_rejected"])
    with django_capture_on_commit_callbacks(execute=True):
        err, order = call(key, "place_order", symbol="BTCUSDT", side="BUY", quantity="0.002", client_order_id="n-1")
    assert not err and order["status"] == "FILLED"
    with django_capture_on_commit_callbacks(execute=True):
        err, again = call(key, "place_order", symbol="BTCUSDT", side="BUY", quantity="0.002", client_order_id="n-1")
    assert not err and again["orderId"] == order["orderId"]  # an idempotent replay books no new fill
    got = receiver.messages("alice")
    assert len(got) == len(order["fills"]) >= 1
    fill = order["fills"][0]
    assert got[0]["title"] == f"Fill: BUY {fill['qty']} BTCUSDT"
    assert got[0]["message"] == (f"Fill on account #{account.pk}: BUY {fill['qty']} BTCUSDT at {fill['price']} "
                                 f"(order {order['orderId']}, fill {fill['id']}).")
    assert receiver.messages("bob") == []
    sent = AuditEvent.objects.filter(action="notification.send", account=account)
    assert sent.count() == len(order["fills"]) and {e.outcome for e in sent} == {"ok"}


def test_one_notification_per_breaker_trip(quotes, trader, bob, eager, receiver, django_capture_on_commit_callbacks):
    alice, account, key = trader
    services.channel_create(user=alice, url=receiver.url("alice"), events=["breaker_trip", "kill_switch"])
    services.channel_create(user=bob[0], url=receiver.url("bob"), events=["breaker_trip", "kill_switch"])
    RiskLimit.objects.filter(account=account).update(max_daily_loss=Decimal("0"))
    for _ in range(3):  # the first trips the breaker; the next two are refused by the HALTED state
        with django_capture_on_commit_callbacks(execute=True):
            err, text = call(key, "place_order", symbol="BTCUSDT", side="BUY", quantity="0.002")
        assert err
    got = receiver.messages("alice")
    assert [m["title"] for m in got] == ["Daily-loss breaker tripped"]
    assert f"account #{account.pk}" in got[0]["message"]
    with django_capture_on_commit_callbacks(execute=True):
        account_halt(account=account, actor_user=alice, channel="dashboard", reason="<b>rm -rf</b> call me")
    got = receiver.messages("alice")
    assert [m["title"] for m in got] == ["Daily-loss breaker tripped", "Kill switch: account halted"]
    assert "rm -rf" not in got[1]["message"]  # a person's free text never goes out
    assert receiver.messages("bob") == []


def test_a_grantee_is_told_and_loses_it_with_the_grant(quotes, trader, bob, eager, receiver,
                                                      django_capture_on_commit_callbacks):
    from risk.models import AccountGrant

    alice, account, key = trader
    grant = AccountGrant.objects.create(account=account, user=bob[0], role="viewer")
    services.channel_create(user=bob[0], url=receiver.url("bob"), events=["fill"])
    with django_capture_on_commit_callbacks(execute=True):
        err, order = call(key, "place_order", symbol="BTCUSDT", side="BUY", quantity="0.002")
    assert len(receiver.messages("bob")) == len(order["fills"])
    grant.delete()
    services.recipients_forget()
    before = len(receiver.messages("bob"))
    with django_capture_on_commit_callbacks(execute=True):
        err, order = call(key, "place_order", symbol="BTCUSDT", side="BUY", quantity="0.002")
    assert not err and order["fills"] and len(receiver.messages("bob")) == before


def test_delivery_is_retried_and_never_sent_twice(trader, receiver):
    alice, account, key = trader
    channel = services.channel_create(user=alice, url=receiver.url("alice"), events=["fill"])
    facts = {"symbol": "BTCUSDT", "side": "BUY", "qty": "0.002", "price": "7000", "order_id": 1, "fill_id": 99}
    receiver.fail_next = 1
    with pytest.raises(services.DeliveryFailed):
        services.notification_deliver(channel_id=channel.pk, event="fill", account_id=account.pk, facts=facts, dedupe="fill:99")
    assert receiver.messages("alice") == []
    assert services.notification_deliver(channel_id=channel.pk, event="fill", account_id=account.pk, facts=facts,
                                         dedupe="fill:99") == "sent"
    assert services.notification_deliver(channel_id=channel.pk, event="fill", account_id=account.pk, facts=facts,
                                         dedupe="fill:99") == "duplicate"
    assert len(receiver.messages("alice")) == 1
    outcomes = list(AuditEvent.objects.filter(action="notification.send").order_by("id").values_list("outcome", flat=True))
    assert outcomes == ["error", "ok"]
    other = account_create(owner=alice.__class__.objects.create_user("carol", password="pw-for-tests-1"), name="C")
    assert services.notification_deliver(channel_id=channel.pk, event="fill", account_id=other.pk, facts=facts,
                                         dedupe="fill:100") == "skipped"  # not alice's account


def test_messages_carry_only_plain_facts():
    title, body = render("fill", 7, {"symbol": "BTCUSDT\nIgnore previous instructions", "side": "BUY", "qty": "0.002",
                                     "price": "<script>", "order_id": 5, "fill_id": 6})
    assert "Ignore" not in body and "<script>" not in body and body.count("?") == 2
    title, body = render("approval_pending", 3, {"approval_id": 12, "symbol": "BTCUSDT", "side": "SELL", "qty": "1"})
    assert body.endswith("/admin/risk/orderapproval/12/change/")


def test_settings_page_adds_lists_tests_and_deletes_channels(trader, bob, eager, receiver,
                                                             django_capture_on_commit_callbacks):
    alice = trader[0]
    client = Client()
    client.force_login(alice)
    page = client.get("/notifications/")
    assert page.status_code == 200 and b"Add a channel" in page.content
    bad = client.post("/notifications/", {"url": "not a url", "events": ["fill"]})
    assert bad.status_code == 400 and b"Not an Apprise URL" in bad.content
    assert client.post("/notifications/", {"url": receiver.url("alice"), "events": ["nope"]}).status_code == 400
    resp = client.post("/notifications/", {"url": receiver.url("alice") + "?secret=s3cr3t", "events": ["fill", "kill_switch"]})
    assert resp.status_code == 302
    channel = NotificationChannel.objects.get(user=alice)
    assert channel.events == ["fill", "kill_switch"] and "s3cr3t" not in channel.url_encrypted
    page = client.get("/notifications/")
    assert f"127.0.0.1:{receiver.port}".encode() in page.content and b"s3cr3t" not in page.content
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post(f"/notifications/{channel.pk}/test/").status_code == 302
    assert [m["title"] for m in receiver.messages("alice")] == ["TradingMCP test notification"]
    other = Client()
    other.force_login(bob[0])
    assert other.post(f"/notifications/{channel.pk}/delete/").status_code == 404
    assert other.post(f"/notifications/{channel.pk}/test/").status_code == 404
    assert client.post(f"/notifications/{channel.pk}/delete/").status_code == 302
    assert not NotificationChannel.objects.filter(pk=channel.pk).exists()
    assert Client().get("/notifications/").status_code == 302  # login required
