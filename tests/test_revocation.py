"""Revocation reaches open sockets (``risk.signals``): revoking a token, deleting a grant,
deactivating a user, logging out or a token's expiry closes or narrows every affected ``/mcp/ws``
and ``/ws/dashboard/`` socket within a second, through the channel layer (so on every worker)."""
import asyncio
import json
import time
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest
from django.test import Client
from django.utils import timezone

from risk.models import AccountGrant, AgentToken, GrantRole
from risk.services import agent_token_create, agent_token_revoke

pytestmark = [pytest.mark.django_db(transaction=True)]
WITHIN_S = 1.0


class WsClient:
    """Drives ``mcpapi.ws.MCPWebSocketApp`` in process as an ASGI server would."""

    def __init__(self, token):
        from mcpapi.ws import MCPWebSocketApp

        self.app = MCPWebSocketApp()
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.frames: list[dict] = []
        self.closed: dict | None = None
        self.closed_at: float | None = None
        self.accepted = asyncio.Event()
        self.scope = {"type": "websocket", "path": "/mcp/ws", "subprotocols": ["mcp"], "query_string": b"",
                      "client": ("127.0.0.1", 1), "server": ("localhost", 8000),
                      "headers": [(b"host", b"localhost"), (b"authorization", f"Bearer {token}".encode())]}

    async def start(self):
        await self.inbox.put({"type": "websocket.connect"})
        self.task = asyncio.create_task(self.app(self.scope, self.inbox.get, self.send))
        await asyncio.wait_for(self.accepted.wait(), 10)
        await asyncio.sleep(0.3)  # its groups are joined

    async def send(self, message):
        if message["type"] == "websocket.accept":
            self.accepted.set()
        elif message["type"] == "websocket.send":
            self.frames.append(json.loads(message["text"]))
        elif message["type"] == "websocket.close":
            self.closed, self.closed_at = message, time.monotonic()
            await self.inbox.put({"type": "websocket.disconnect", "code": message.get("code", 1000)})

    async def wait_closed(self, timeout):
        end = time.monotonic() + timeout
        while self.closed is None and time.monotonic() < end:
            await asyncio.sleep(0.01)
        return self.closed

    async def stop(self):
        if self.closed is None:
            await self.inbox.put({"type": "websocket.disconnect", "code": 1000})
        await asyncio.wait_for(self.task, 10)

    def order_events(self, account_id):
        return [f["params"]["data"] for f in self.frames
                if f.get("params", {}).get("kind") == "order" and f["params"].get("account") == account_id]


async def _push(account_id, tag):
    from channels.layers import get_channel_layer

    await get_channel_layer().group_send(f"account.{account_id}", {
        "type": "account.event", "kind": "order", "account": account_id, "data": {"clientOrderId": tag}})


def _run(coro):
    from core.redis import async_redis_shared_close

    async def main():
        try:
            return await asyncio.wait_for(coro, 60)
        finally:
            await async_redis_shared_close()

    return asyncio.run(main())


def test_revoking_a_token_closes_its_open_mcp_socket_within_a_second(trader):
    user, _, key = trader

    async def scenario():
        client = WsClient(key)
        await client.start()
        t0 = time.monotonic()
        await sync_to_async(agent_token_revoke)(token=await sync_to_async(AgentToken.objects.get)(user=user))
        closed = await client.wait_closed(WITHIN_S + 1)
        await client.stop()
        return closed, (client.closed_at or 1e9) - t0

    closed, took = _run(scenario())
    assert closed is not None and closed["code"] == 4401, closed
    assert took <= WITHIN_S, took


def test_deactivating_the_user_closes_its_mcp_socket(trader):
    user, _, key = trader

    async def scenario():
        client = WsClient(key)
        await client.start()
        user.is_active = False
        await sync_to_async(user.save)()
        closed = await client.wait_closed(WITHIN_S)
        await client.stop()
        return closed

    closed = _run(scenario())
    assert closed is not None and closed["code"] == 4401


def test_a_token_closes_its_socket_when_it_expires(trader):
    user, _, _ = trader
    row, key = agent_token_create(user=user, name="short-lived")
    AgentToken.objects.filter(pk=row.pk).update(expires_at=timezone.now() + timedelta(seconds=1.5))

    async def scenario():
        client = WsClient(key)
        await client.start()
        closed = await client.wait_closed(1.5 + WITHIN_S)
        await client.stop()
        return closed

    closed = _run(scenario())
    assert closed is not None and closed["code"] == 4401


def test_deleting_a_grant_stops_pushes_of_that_account_to_the_grantees_mcp_socket(trader, make_user):
    _, account, _ = trader
    bob = make_user("bob")
    grant = AccountGrant.objects.create(account=account, user=bob, role=GrantRole.VIEWER)
    _, bob_key = agent_token_create(user=bob, name="bob-agent")

    async def scenario():
        client = WsClient(bob_key)
        await client.start()
        await _push(account.pk, "before")
        await asyncio.sleep(0.5)
        seen_before = client.order_events(account.pk)
        await sync_to_async(grant.delete)()
        await asyncio.sleep(WITHIN_S)
        await _push(account.pk, "after")
        await asyncio.sleep(0.5)
        still_open = client.closed is None
        seen = client.order_events(account.pk)
        await client.stop()
        return seen_before, seen, still_open

    seen_before, seen, still_open = _run(scenario())
    assert seen_before == [{"clientOrderId": "before"}]
    assert seen == [{"clientOrderId": "before"}] and still_open  # narrowed, not closed: bob's token is still valid


def _login(username):
    client = Client()
    assert client.login(request=HttpRequest(), username=username, password="pw-for-tests-1")
    return client, f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}".encode()


async def _dashboard(cookie):
    from channels.auth import AuthMiddlewareStack
    from channels.routing import URLRouter
    from channels.testing import WebsocketCommunicator

    from dashboard.routing import websocket_urlpatterns

    comm = WebsocketCommunicator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)), "/ws/dashboard/",
                                 headers=[(b"cookie", cookie)])
    connected, _ = await comm.connect(timeout=10)
    assert connected
    while (await comm.receive_json_from(timeout=5))["type"] != "hello":
        pass
    return comm


async def _outputs(comm, timeout):
    """What the socket sent within ``timeout`` s (``receive_nothing`` polls without cancelling the
    application, as ``receive_output``'s timeout would)."""
    out, end = [], time.monotonic() + timeout
    while time.monotonic() < end:
        if await comm.receive_nothing(timeout=0.05, interval=0.01):
            continue
        out.append(await comm.receive_output(timeout=1))
    return out


async def _closed_within(comm, timeout):
    return next((m for m in await _outputs(comm, timeout) if m["type"] == "websocket.close"), None)


def test_logging_out_closes_the_dashboard_socket_of_that_session(trader):
    browser, cookie = _login("alice")
    _, other_cookie = _login("alice")  # another session of the same user stays open

    async def scenario():
        comm = await _dashboard(cookie)
        other = await _dashboard(other_cookie)
        await sync_to_async(browser.logout)()
        closed = await _closed_within(comm, WITHIN_S)
        other_closed = await _closed_within(other, 0.5)
        await other.disconnect()
        return closed, other_closed

    closed, other_closed = asyncio.run(scenario())
    assert closed is not None and closed["code"] == 4401
    assert other_closed is None


def test_deleting_a_grant_stops_that_account_on_the_grantees_dashboard(trader, make_user):
    _, account, _ = trader
    make_user("bob")
    from django.contrib.auth import get_user_model

    grant = AccountGrant.objects.create(account=account, user=get_user_model().objects.get(username="bob"),
                                        role=GrantRole.VIEWER)
    _, cookie = _login("bob")

    async def account_frames(comm, timeout):
        frames = [json.loads(m["text"]) for m in await _outputs(comm, timeout) if m["type"] == "websocket.send"]
        return [f for f in frames if f.get("type") == "account"]

    async def scenario():
        comm = await _dashboard(cookie)
        await _push(account.pk, "before")
        before = await account_frames(comm, 0.6)
        await sync_to_async(grant.delete)()
        await asyncio.sleep(WITHIN_S)
        await _push(account.pk, "after")
        after = await account_frames(comm, 0.6)
        await comm.disconnect()
        return before, after

    before, after = asyncio.run(scenario())
    assert [f["data"]["clientOrderId"] for f in before] == ["before"]
    assert after == []
