"""Secrets are never returned: for every MCP tool (from tools/list), every REST and page URL of the
project (from the URL resolver), every admin page (from the admin registry) and every audit row,
neither an agent token's plaintext nor an exchange API secret (nor its ciphertext) appears.

Generated from the registries, so a new tool, endpoint or admin model is covered without editing
this file. The account under test has a stored, encrypted credential and a confirm-mode token, and
every tool is called against both a paper and a testnet account (whose signed calls reach the
replay exchange and are refused there, so the error path is searched too)."""
from __future__ import annotations

import csv
import io
import json
import re

import pytest
from cryptography.fernet import Fernet
from django.contrib import admin
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

from risk import secrets as risk_secrets
from risk.audit import audit_drain
from risk.models import AuditEvent, ExchangeCredential
from risk.services import agent_token_create
from trading.credentials import exchange_credential_set
from test_isolation import arguments_for
from test_mcp import call, rpc
from trading.services import account_create

API_SECRET = "SECRETsecretSECRETsecret0123456789abcdefABCDEF0123456789xyzXYZ00"


@pytest.fixture
def world(quotes, trader, settings, django_user_model):
    settings.SECRETS_ENCRYPTION_KEY = Fernet.generate_key().decode()
    risk_secrets._fernet.cache_clear()
    user, paper, key = trader
    testnet = account_create(owner=user, name="Testnet", venue="testnet")
    exchange_credential_set(account=testnet, api_key="KEYkeyKEY0123456789", secret=API_SECRET, actor_user=user,
                            channel="admin")
    _, confirm_key = agent_token_create(user=user, name="confirm-agent", confirm_orders=True)
    is_error, order = call(key, "place_order", symbol="BTCUSDT", side="BUY", quantity="0.002", client_order_id="leak-1")
    assert not is_error, order
    is_error, held = call(confirm_key, "place_order", symbol="BTCUSDT", side="BUY", quantity="0.002",
                          client_order_id="leak-held")
    assert not is_error and held["status"] == "PENDING_APPROVAL"
    superuser = django_user_model.objects.create_superuser("root", "root@example.com", "pw-for-tests-1")
    yield {
        "user": user, "paper": paper, "testnet": testnet, "keys": [key, confirm_key], "superuser": superuser,
        "ids": {"order_id": order["orderId"], "client_order_id": "leak-1"}, "approval_id": held["approvalId"],
        "ciphertext": ExchangeCredential.objects.get(account=testnet).secret_encrypted,
    }
    risk_secrets._fernet.cache_clear()


def forbidden(world) -> list[str]:
    return [*world["keys"], API_SECRET, world["ciphertext"]]


def assert_clean(text: str, world, where: str) -> None:
    for secret in forbidden(world):
        assert secret not in text, f"{where} returned a secret ({secret[:8]}…)"


def test_no_mcp_tool_returns_a_secret(world):
    key = world["keys"][0]
    listing = rpc(key, "tools/list")
    tools = listing.json()["result"]["tools"]
    assert_clean(listing.content.decode(), world, "tools/list")
    called = 0
    for account in (world["paper"], world["testnet"]):
        for tool in tools:
            args = arguments_for(tool, account.pk, world["ids"])
            resp = rpc(key, "tools/call", {"name": tool["name"], "arguments": args})
            assert resp.status_code == 200
            assert_clean(resp.content.decode(), world, f"MCP {tool['name']} on {account.venue}")
            called += 1
    assert called == 2 * len(tools) and len(tools) >= 25
    resp = rpc(world["keys"][1], "tools/call", {"name": "list_pending_orders", "arguments": {}})
    assert "leak-held" in resp.content.decode()
    assert_clean(resp.content.decode(), world, "list_pending_orders")


def _urls(resolver=None, prefix=""):
    """(route, name) of every non-admin URL pattern of the project."""
    resolver = resolver or get_resolver()
    for p in resolver.url_patterns:
        route = prefix + str(p.pattern)
        if isinstance(p, URLResolver):
            if route.startswith("admin/"):
                continue
            yield from _urls(p, route)
        elif isinstance(p, URLPattern):
            yield route, p.name


def _fill(route: str, world) -> str:
    values = {"account_id": world["testnet"].pk, "order_id": world["ids"]["order_id"],
              "approval_id": world["approval_id"], "token_id": 1, "symbol": "BTCUSDT"}
    values.update(accountId=values["account_id"], orderId=values["order_id"], approvalId=values["approval_id"])
    return "/" + re.sub(r"<(?:\w+:)?(\w+)>", lambda m: str(values.get(m.group(1), 1)), route).lstrip("^").rstrip("$")


def test_no_rest_endpoint_or_page_returns_a_secret(world):
    agent, person = APIClient(raise_request_exception=False), APIClient(raise_request_exception=False)
    agent.credentials(HTTP_AUTHORIZATION=f"Bearer {world['keys'][0]}")
    person.force_login(world["user"])
    seen = 0
    for route, name in _urls():
        url = _fill(route, world)
        for client in (agent, person):
            for query in ("", f"?account_id={world['testnet'].pk}"):
                resp = client.get(url + query)
                assert_clean(resp.content.decode(errors="replace"), world, f"GET {url}{query} ({name})")
                seen += 1
    for client in (agent, person):
        resp = client.post(f"/api/v1/accounts/{world['testnet'].pk}/orders", {"symbol": "BTCUSDT", "side": "BUY",
                                                                             "quantity": "0.002"}, format="json")
        assert_clean(resp.content.decode(), world, "POST /api/v1/accounts/<id>/orders (testnet)")
    resp = person.post(f"/api/v1/approvals/{world['approval_id']}/approve", {}, format="json")
    assert resp.status_code == 200
    assert_clean(resp.content.decode(), world, "approve")
    assert seen >= 40


def test_no_admin_page_returns_a_secret(world):
    client = Client(raise_request_exception=False)
    client.force_login(world["superuser"])
    pages = 0
    for model, model_admin in admin.site._registry.items():
        opts = model._meta
        base = f"/admin/{opts.app_label}/{opts.model_name}/"
        urls = [base, base + "?q=a"]
        if model_admin.has_add_permission(type("R", (), {"user": world["superuser"]})()):
            urls.append(base + "add/")
        for obj in model._default_manager.all()[:3]:
            urls += [f"{base}{obj.pk}/change/", f"{base}{obj.pk}/history/"]
        for url in urls:
            resp = client.get(url)
            assert resp.status_code in (200, 302), (url, resp.status_code)
            assert_clean(resp.content.decode(errors="replace"), world, url)
            pages += 1
    assert pages >= 2 * len(admin.site._registry)
    # The audit CSV export, every row selected.
    resp = client.post("/admin/risk/auditevent/", {"action": "export_csv",
                                                   "_selected_action": list(AuditEvent.objects.values_list("pk", flat=True))})
    assert resp.status_code == 200 and len(list(csv.reader(io.StringIO(resp.content.decode())))) > 3
    assert_clean(resp.content.decode(), world, "audit CSV export")


def test_no_audit_row_holds_a_secret(world):
    key = world["keys"][0]
    for tool in rpc(key, "tools/list").json()["result"]["tools"]:
        rpc(key, "tools/call", {"name": tool["name"], "arguments": arguments_for(tool, world["testnet"].pk, world["ids"])})
    rpc("tmcp_" + "x" * 43, "tools/list")
    audit_drain()
    rows = list(AuditEvent.objects.values("action", "params", "result", "message", "risk_decision", "request_id"))
    assert len(rows) >= 25 and {"exchange_credential.set", "order.hold", "order.place"} <= {r["action"] for r in rows}
    for row in rows:
        assert_clean(json.dumps(row, default=str), world, f"audit row {row['action']}")
