"""OAuth sign-in end to end, as a hosted MCP client does it: the official ``mcp`` SDK's
``OAuthClientProvider`` against the running stack (web server subprocess, real Redis, the replay
exchange), the person's sign-in and consent driven in Chromium by Playwright.

The SDK starts from the 401 of ``/mcp`` and discovers the protected-resource metadata (from the
``resource_metadata`` of ``WWW-Authenticate`` once the endpoint sends it, until then from the
well-known URLs it falls back to: ``/.well-known/oauth-protected-resource/mcp``), then the
authorization server metadata, registers (RFC 7591), authorizes with PKCE and exchanges the code
with our ``resource``."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import websockets

from conftest import ARTIFACTS, free_port, wait_until
from core.redis import get_redis
from marketdata.cache import book_key
from marketdata.services import exchange_info_sync
from oauth.models import OAuthGrant
from risk.models import AuditEvent, OrderApproval
from trading.models import Order

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not shutil.which(CHROMIUM), reason="Debian's chromium is not installed (scripts/test installs it)"),
]


class MemoryStorage:
    """The SDK's ``TokenStorage`` protocol, in memory."""

    def __init__(self):
        self.tokens = None
        self.client_info = None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens):
        self.tokens = tokens

    async def get_client_info(self):
        return self.client_info

    async def set_client_info(self, client_info):
        self.client_info = client_info


class Person:
    """A Chromium page where alice signs in and answers the consent page as told; the redirect to
    the client's loopback callback is intercepted and handed to the SDK."""

    def __init__(self, page, callback: str):
        self.page = page
        self.callback = callback
        self.choices: dict = {}
        self.redirected: asyncio.Future | None = None
        self.authorize_urls: list[str] = []

    async def start(self):
        async def intercept(route):
            if self.redirected is not None and not self.redirected.done():
                self.redirected.set_result(route.request.url)
            await route.fulfill(status=200, body="You can close this window.")

        await self.page.route(self.callback + "**", intercept)

    async def redirect_handler(self, url: str) -> None:
        self.redirected = asyncio.get_running_loop().create_future()
        self.authorize_urls.append(url)
        page = self.page
        await page.goto(url)
        if "/login/" in page.url:
            await page.fill("input[name=username]", "alice")
            await page.fill("input[name=password]", "pw-for-tests-1")
            await page.click("button[type=submit]")
        await page.wait_for_selector("#consent-form", timeout=15000)
        self.consent_html = await page.content()
        for scope in ("market:read", "account:read", "trade"):
            box = page.locator(f"input[name=granted_scopes][value='{scope}']")
            if await box.count():
                await box.set_checked(scope in self.choices["scopes"])
        for account_id in self.choices.get("accounts", []):
            await page.check(f"input[name=accounts][value='{account_id}']")
        if self.choices.get("confirm"):
            await page.check("input[name=confirm_orders]")
        await page.screenshot(path=str(ARTIFACTS / f"oauth-consent-{self.choices['name']}.png"))
        await page.click("#consent-allow")

    async def callback_handler(self):
        url = await asyncio.wait_for(self.redirected, 30)
        query = parse_qs(urlsplit(url).query)
        assert "code" in query, url
        return query["code"][0], query.get("state", [None])[0]


async def connect(base_url: str, person: Person, name: str):
    """An SDK OAuth provider for our /mcp (DCR as a public client with a loopback redirect)."""
    from mcp.client.auth import OAuthClientProvider
    from mcp.shared.auth import OAuthClientMetadata

    metadata = OAuthClientMetadata(client_name=name, redirect_uris=[person.callback], grant_types=["authorization_code", "refresh_token"],
                                   response_types=["code"], token_endpoint_auth_method="none")
    storage = MemoryStorage()
    provider = OAuthClientProvider(server_url=f"{base_url}/mcp", client_metadata=metadata, storage=storage,
                                   redirect_handler=person.redirect_handler, callback_handler=person.callback_handler)
    return provider, storage


async def session_calls(base_url: str, provider, calls):
    """Open an MCP session through ``provider`` and run ``calls(session)``."""
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    http = httpx.AsyncClient(auth=provider, timeout=30, follow_redirects=False)
    async with http, streamable_http_client(f"{base_url}/mcp", http_client=http) as (read, write, _):
        async with ClientSession(read, write) as session:
            await session.initialize()
            return await calls(session)


def raw_status(base_url: str, token: str) -> httpx.Response:
    return httpx.post(f"{base_url}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, timeout=30,
                      headers={"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"})


@pytest.fixture
def live(stack, trader):
    exchange_info_sync()
    wait_until(lambda: get_redis().get(book_key("BTCUSDT")), timeout=30, what="a BTCUSDT quote")
    ARTIFACTS.mkdir(exist_ok=True)
    return stack


def test_mcp_client_signs_in_with_oauth_and_gets_exactly_what_was_granted(live, trader):
    from playwright.async_api import async_playwright

    from trading.services import account_create

    user, account, _ = trader
    other = account_create(owner=user, name="Other")
    base = live.base_url
    callback = f"http://127.0.0.1:{free_port()}/callback"

    async def scenario():
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run"])
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            person = Person(page, callback)
            await person.start()
            out = {}

            # 1. read-only on one account
            person.choices = {"name": "read", "scopes": {"market:read", "account:read"}, "accounts": [account.pk]}
            provider, storage = await connect(base, person, "E2E Reader")

            async def read_calls(session):
                tools = await session.list_tools()
                ticker = await session.call_tool("get_ticker", {"symbol": "BTCUSDT"})
                out["read_only_tokens"] = storage.tokens
                out["first_consent_html"] = person.consent_html
                # step-up: the read-only token's place_order answers 403 insufficient_scope; the SDK
                # sends the person to the consent page again for the scopes the challenge names
                # (she grants trade, in confirm mode) and retries the call with the new token
                person.choices = {"name": "step-up", "scopes": {"market:read", "account:read", "trade"},
                                  "accounts": [account.pk], "confirm": True}
                trade = await session.call_tool("place_order", {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.002",
                                                                "client_order_id": "oauth-step-up-1"})
                foreign = await session.call_tool("get_account", {"account_id": other.pk})
                return tools, ticker, trade, foreign

            out["read"] = await session_calls(base, provider, read_calls)
            out["consent_html"] = out["first_consent_html"]
            out["step_up_consent_html"] = person.consent_html
            out["authorize_urls"] = list(person.authorize_urls)
            out["read_tokens"] = storage.tokens
            # refresh: the access token is made to look expired to the SDK, which refreshes it
            provider.context.token_expiry_time = time.time() - 1
            out["after_refresh"] = await session_calls(base, provider, lambda s: s.call_tool("get_ticker", {"symbol": "BTCUSDT"}))
            out["refreshed_tokens"] = storage.tokens

            # 2. trade in confirm mode (a second client)
            person.choices = {"name": "trade", "scopes": {"market:read", "account:read", "trade"}, "accounts": [account.pk], "confirm": True}
            provider2, storage2 = await connect(base, person, "E2E Trader")
            out["held"] = await session_calls(base, provider2, lambda s: s.call_tool(
                "place_order", {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.002", "client_order_id": "oauth-e2e-1"}))
            out["trade_tokens"] = storage2.tokens

            # 3. an open /mcp/ws socket with the trader's access token, then revoke on the tokens page
            ws_url = base.replace("http://", "ws://") + "/mcp/ws"
            async with websockets.connect(ws_url, subprotocols=["mcp"], additional_headers={
                    "Authorization": f"Bearer {storage2.tokens.access_token}"}) as ws:
                await ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
                out["ws_before"] = json.loads(await asyncio.wait_for(ws.recv(), 15))
                await page.goto(base + "/tokens/")
                out["tokens_html"] = await page.content()
                page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
                await page.click("#oauth-grants tr:has-text('E2E Trader') button[type=submit]")
                await page.wait_for_url("**/tokens/?grant_revoked=1")
                await page.screenshot(path=str(ARTIFACTS / "oauth-tokens-page.png"))
                out["revoked_status"] = await asyncio.to_thread(raw_status, base, storage2.tokens.access_token)
                try:  # the revocation may close the socket before this request goes out
                    await ws.send(json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}))
                    out["ws_after"] = json.loads(await asyncio.wait_for(ws.recv(), 15))
                    await asyncio.wait_for(ws.recv(), 15)
                except websockets.ConnectionClosed as closed:
                    out["ws_close"] = closed.rcvd.code if closed.rcvd else None
            await browser.close()
            return out

    out = asyncio.run(asyncio.wait_for(scenario(), 180))

    tools, ticker, trade, foreign = out["read"]
    names = {t.name for t in tools.tools}
    assert "get_ticker" in names and "get_account" in names and "place_order" not in names and "cancel_order" not in names
    assert not ticker.isError and json.loads(ticker.content[0].text)["symbol"] == "BTCUSDT"
    assert foreign.isError
    assert "E2E Reader" in out["consent_html"] and f"127.0.0.1:{urlsplit(callback).port}" in out["consent_html"]
    reader, stepped_up = OAuthGrant.objects.filter(application__name="E2E Reader").order_by("created_at", "id")
    assert reader.agent_token.scopes == ["market:read", "account:read"]
    assert [a.pk for a in reader.agent_token.accounts.all()] == [account.pk]
    # the step-up: a second authorization asking for the challenge's scopes, a second consent, the
    # retried call held in confirm mode under the new grant's permission record
    assert len(out["authorize_urls"]) == 2
    asked = parse_qs(urlsplit(out["authorize_urls"][1]).query)["scope"][0].split()
    assert sorted(asked) == ["account:read", "market:read", "trade"], asked
    assert "E2E Reader" in out["step_up_consent_html"]
    assert stepped_up.agent_token.scopes == ["market:read", "account:read", "trade"] and stepped_up.agent_token.confirm_orders
    stepped = json.loads(trade.content[0].text)
    assert not trade.isError and stepped["status"] == "PENDING_APPROVAL", stepped
    assert OrderApproval.objects.get(client_order_id="oauth-step-up-1").token_id == stepped_up.agent_token_id
    from risk.audit import audit_drain

    audit_drain()  # the refusal went through the audit write-ahead log (the stack runs no drainer)
    assert AuditEvent.objects.filter(action="mcp.place_order", outcome="rejected", actor_token=reader.agent_token).exists()
    assert raw_status(live.base_url, out["read_only_tokens"].access_token).status_code == 200  # the first grant lives on
    assert not out["after_refresh"].isError
    assert out["refreshed_tokens"].access_token != out["read_tokens"].access_token
    assert out["refreshed_tokens"].refresh_token != out["read_tokens"].refresh_token
    assert raw_status(live.base_url, out["read_tokens"].access_token).status_code == 401  # rotated away
    assert raw_status(live.base_url, out["refreshed_tokens"].access_token).status_code == 200

    held = json.loads(out["held"].content[0].text)
    assert not out["held"].isError and held["status"] == "PENDING_APPROVAL", held
    trader_grant = OAuthGrant.objects.get(application__name="E2E Trader")
    approval = OrderApproval.objects.get(client_order_id="oauth-e2e-1")
    assert approval.account_id == account.pk and not Order.objects.exists()
    assert AuditEvent.objects.filter(action="order.hold", actor_token=trader_grant.agent_token).exists()

    assert "E2E Reader" in out["tokens_html"] and "E2E Trader" in out["tokens_html"]
    assert out["ws_before"]["result"]["tools"]
    assert out["revoked_status"].status_code == 401
    assert out.get("ws_close") == 4401 or out.get("ws_after", {}).get("error", {}).get("code") == 4401
    trader_grant.refresh_from_db()
    assert trader_grant.revoked_at is not None and trader_grant.agent_token.revoked_at is not None
    assert raw_status(live.base_url, out["refreshed_tokens"].access_token).status_code == 200  # the other grant lives
