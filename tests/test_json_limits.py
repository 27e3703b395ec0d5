"""Hostile JSON on the dashboard's order ticket (the REST API ``/api/v1/``) and socket (issue 18): nesting deep enough to exhaust Python's recursion
(``[`` x 100,000) or a body over Django's size limit is a 4xx that changes nothing, never a 500;
on the dashboard socket such a frame is ignored and the socket keeps working."""
import asyncio

import pytest
from django.conf import settings
from django.http import HttpRequest
from django.test import Client

from risk.models import AuditEvent
from trading.models import Order

HOSTILE = ["[" * 100_000, '{"a":' * 50_000 + "1" + "}" * 50_000, "[" * 2000 + "]" * 2000]


@pytest.fixture
def logged_in(trader):
    client = Client(raise_request_exception=False)
    assert client.login(request=HttpRequest(), username="alice", password="pw-for-tests-1")
    return client


@pytest.mark.django_db
@pytest.mark.parametrize("body", HOSTILE, ids=["open-brackets", "nested-objects", "deep-but-closed"])
def test_order_ticket_refuses_deeply_nested_json_with_a_400(logged_in, trader, body):
    _, account, _ = trader
    resp = logged_in.post(f"/api/v1/accounts/{account.pk}/orders", data=body, content_type="application/json")
    assert resp.status_code == 400, resp.content[:300]
    assert resp.json()["code"] == -1100
    assert not Order.objects.exists()
    approval = logged_in.post("/api/v1/approvals/1/approve", data=body, content_type="application/json")
    assert approval.status_code in (400, 404), approval.content[:300]  # never a 500


@pytest.mark.django_db
def test_order_ticket_refuses_an_oversized_body(logged_in, trader):
    _, account, _ = trader
    body = '{"symbol": "' + "A" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 10) + '"}'
    resp = logged_in.post(f"/api/v1/accounts/{account.pk}/orders", data=body, content_type="application/json")
    assert resp.status_code == 413 and resp.json()["code"] == -1100
    assert not Order.objects.exists() and not AuditEvent.objects.filter(action="order.place").exists()


@pytest.mark.django_db(transaction=True)
def test_dashboard_socket_ignores_a_hostile_frame_and_keeps_answering(trader):
    from channels.auth import AuthMiddlewareStack
    from channels.routing import URLRouter
    from channels.testing import WebsocketCommunicator

    from dashboard.routing import websocket_urlpatterns

    client = Client()
    assert client.login(request=HttpRequest(), username="alice", password="pw-for-tests-1")
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}".encode()

    async def run():
        comm = WebsocketCommunicator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)), "/ws/dashboard/",
                                     headers=[(b"cookie", cookie)])
        assert (await comm.connect(timeout=10))[0]
        try:
            assert (await comm.receive_json_from(timeout=5))["type"] == "hello"
            for frame in HOSTILE + ["not json at all"]:
                await comm.send_to(text_data=frame)
            await comm.send_json_to({"type": "ping"})
            while True:
                msg = await comm.receive_json_from(timeout=5)
                if msg["type"] == "pong":
                    break
                assert msg["type"] == "market", msg
        finally:
            await comm.disconnect()

    asyncio.run(run())
