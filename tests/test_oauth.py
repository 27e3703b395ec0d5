"""OAuth 2.1 for MCP clients (oauth app, django-oauth-toolkit), in process: discovery documents,
dynamic client registration, the consent page, PKCE code exchange bound to our MCP resource,
refresh rotation, revocation, and the access token working at the real /mcp endpoint through the
permission record the consent created (scopes, accounts, confirm mode)."""
from __future__ import annotations

import base64
import json
import hashlib
import secrets
from datetime import timedelta
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_application_model

from oauth.models import OAuthGrant
from oauth.selectors import resolve_oauth_access_token, www_authenticate
from risk.models import AgentToken, AuditEvent
from test_mcp import call, rpc

REDIRECT = "http://127.0.0.1:33418/callback"


def pkce():
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def register(client: Client, **metadata):
    body = {"client_name": "Test Agent", "redirect_uris": [REDIRECT], "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"], "token_endpoint_auth_method": "none", **metadata}
    return client.post("/oauth/register/", body, content_type="application/json")


def authorize_params(client_id, challenge, *, scope="market:read account:read trade", resource=None, redirect_uri=REDIRECT, **extra):
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri, "state": "st-1",
              "code_challenge": challenge, "code_challenge_method": "S256", "scope": scope,
              "resource": settings.MCP_RESOURCE_URL if resource is None else resource, **extra}
    return {k: v for k, v in params.items() if v != ""}


def consent(client: Client, client_id, challenge, *, granted=("market:read",), accounts=(), confirm=False,
            symbols="", expires_days="30", scope="market:read account:read trade"):
    """GET the consent page, POST the person's choices; return the redirect URL's query."""
    page = client.get("/oauth/authorize/?" + urlencode(authorize_params(client_id, challenge, scope=scope)))
    assert page.status_code == 200, page.content[:500]
    form = page.context["form"]
    data = {name: form.initial.get(name) or "" for name in
            ("redirect_uri", "scope", "client_id", "state", "response_type", "code_challenge", "code_challenge_method", "resource")}
    data.update({"allow": "on", "granted_scopes": list(granted), "accounts": [str(a) for a in accounts],
                 "symbols": symbols, "expires_days": expires_days})
    if confirm:
        data["confirm_orders"] = "1"
    resp = client.post("/oauth/authorize/", data)
    assert resp.status_code == 302, resp.content[:800]
    return parse_qs(urlsplit(resp["Location"]).query)


def exchange(client: Client, client_id, code, verifier, *, resource=None, redirect_uri=REDIRECT):
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri, "client_id": client_id,
            "code_verifier": verifier, "resource": settings.MCP_RESOURCE_URL if resource is None else resource}
    return client.post("/oauth/token/", {k: v for k, v in data.items() if v != ""})


def refresh(client: Client, client_id, refresh_token, **extra):
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client_id,
            "resource": settings.MCP_RESOURCE_URL, **extra}
    return client.post("/oauth/token/", data)


@pytest.fixture(autouse=True)
def _close_thread_connections():
    """The in-process /mcp calls run sync code in the tool pool: close those threads' database
    connections after each test (PostgreSQL cannot drop the test database while they are open)."""
    yield
    from core import workers

    workers.close_tool_connections()


@pytest.fixture
def person(trader, make_user):
    """(browser Client logged in as alice, alice, her paper account, a second account of hers)."""
    from trading.services import account_create

    user, account, _ = trader
    second = account_create(owner=user, name="Second")
    browser = Client()
    browser.force_login(user)
    return browser, user, account, second


@pytest.fixture
def app_client(db):
    resp = register(Client())
    assert resp.status_code == 201, resp.content
    return resp.json()["client_id"]


def signed_in(person, app_client, **choices):
    """Run consent + exchange; return (token response JSON, client_id)."""
    browser = person[0]
    verifier, challenge = pkce()
    query = consent(browser, app_client, challenge, **choices)
    assert query["state"] == ["st-1"] and query["iss"] == [settings.PUBLIC_BASE_URL], query  # RFC 9207
    resp = exchange(Client(), app_client, query["code"][0], verifier)
    assert resp.status_code == 200, resp.content
    return resp.json()


# --- discovery ------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_discovery_documents_describe_our_mcp_resource_and_authorization_server():
    c = Client()
    for path in ("/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"):
        prm = c.get(path).json()
        assert prm["resource"] == settings.MCP_RESOURCE_URL
        assert prm["authorization_servers"] == [settings.PUBLIC_BASE_URL]
        assert sorted(prm["scopes_supported"]) == ["account:read", "market:read", "trade"]
        assert prm["bearer_methods_supported"] == ["header"]
    for path in ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"):
        asm = c.get(path).json()
        assert asm["issuer"] == settings.PUBLIC_BASE_URL
        assert asm["code_challenge_methods_supported"] == ["S256"]
        assert asm["authorization_endpoint"] == settings.PUBLIC_BASE_URL + "/oauth/authorize/"
        assert asm["token_endpoint"] == settings.PUBLIC_BASE_URL + "/oauth/token/"
        assert asm["registration_endpoint"] == settings.PUBLIC_BASE_URL + "/oauth/register/"
        assert asm["revocation_endpoint"].endswith("/oauth/revoke_token/") and asm["introspection_endpoint"].endswith("/oauth/introspect/")
        assert asm["response_types_supported"] == ["code"] and "none" in asm["token_endpoint_auth_methods_supported"]
        assert asm["client_id_metadata_document_supported"] is True
        assert asm["authorization_response_iss_parameter_supported"] is True


def test_www_authenticate_names_the_metadata_and_the_scope():
    meta = f'resource_metadata="{settings.PUBLIC_BASE_URL}/.well-known/oauth-protected-resource/mcp"'
    assert www_authenticate() == f"Bearer {meta}"
    assert www_authenticate("trade") == f'Bearer scope="trade",{meta}'
    assert www_authenticate("trade", error="insufficient_scope") == f'Bearer error="insufficient_scope",scope="trade",{meta}'
    with pytest.raises(ValueError):
        www_authenticate("admin")


# --- registration ---------------------------------------------------------------------------------

@pytest.mark.django_db
@pytest.mark.parametrize("metadata, message", [
    ({"redirect_uris": ["http://evil.example/cb"]}, "https, or http on a loopback host"),
    ({"redirect_uris": ["https://ok.example/cb#frag"]}, "fragment"),
    ({"redirect_uris": []}, "non-empty"),
    ({"grant_types": ["client_credentials"]}, "authorization_code"),
    ({"grant_types": ["authorization_code", "password"]}, "authorization_code"),
    ({"response_types": ["token"]}, "response_types"),
])
def test_registration_refuses_what_we_do_not_serve(metadata, message):
    resp = register(Client(), **metadata)
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_client_metadata"
    assert message in resp.json()["error_description"]
    assert not get_application_model().objects.exists()
    assert AuditEvent.objects.filter(action="oauth.register", outcome="rejected").count() == 1


@pytest.mark.django_db
def test_registration_creates_a_public_client_visible_in_the_admin(admin_client):
    resp = register(Client(), redirect_uris=[REDIRECT, "https://claude.ai/api/mcp/auth_callback"])
    assert resp.status_code == 201
    body = resp.json()
    app = get_application_model().objects.get(client_id=body["client_id"])
    assert app.client_type == "public" and app.name == "Test Agent" and "client_secret" not in body
    assert AuditEvent.objects.get(action="oauth.register").params["client_id"] == body["client_id"]
    listing = admin_client.get("/admin/oauth2_provider/application/")
    assert listing.status_code == 200 and b"Test Agent" in listing.content
    assert admin_client.post(f"/admin/oauth2_provider/application/{app.pk}/delete/", {"post": "yes"}).status_code == 302
    assert not get_application_model().objects.filter(pk=app.pk).exists()


# --- the flow -------------------------------------------------------------------------------------

def test_consent_page_shows_client_and_redirect_host_and_is_framing_denied(person, app_client):
    browser = person[0]
    _, challenge = pkce()
    page = browser.get("/oauth/authorize/?" + urlencode(authorize_params(app_client, challenge)))
    assert page.status_code == 200
    assert page["X-Frame-Options"] == "DENY"
    html = page.content.decode()
    assert "Test Agent" in html and "127.0.0.1:33418" in html and "csrfmiddlewaretoken" in html
    for scope in ("market:read", "account:read", "trade"):
        assert scope in html
    anonymous = Client().get("/oauth/authorize/?" + urlencode(authorize_params(app_client, challenge)))
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/login/")


def test_consent_without_csrf_token_is_refused(person, app_client):
    _, user, _, _ = person
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(user)
    _, challenge = pkce()
    data = {**authorize_params(app_client, challenge), "allow": "on", "granted_scopes": ["market:read"]}
    assert strict.post("/oauth/authorize/", data).status_code == 403
    assert not OAuthGrant.objects.exists()


def test_read_only_grant_on_one_account_works_at_mcp_and_cannot_trade(person, app_client, quotes):
    browser, user, account, second = person
    tokens = signed_in(person, app_client, granted=("market:read", "account:read"), accounts=[account.pk])
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] <= settings.OAUTH_ACCESS_TOKEN_TTL_S
    assert set(tokens["scope"].split()) == {"market:read", "account:read"}
    grant = OAuthGrant.objects.get()
    record = grant.agent_token
    assert [a.pk for a in record.accounts.all()] == [account.pk] and record.scopes == ["market:read", "account:read"]
    assert grant.token_family is not None and grant.resource == settings.MCP_RESOURCE_URL

    access = tokens["access_token"]
    listed = rpc(access, "tools/list").json()["result"]["tools"]
    names = {t["name"] for t in listed}
    assert "get_ticker" in names and "get_account" in names and "place_order" not in names
    is_error, ticker = call(access, "get_ticker", symbol="BTCUSDT")
    assert not is_error and ticker["symbol"] == "BTCUSDT"
    refused = rpc(access, "tools/call", {"name": "place_order", "arguments": {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.002"}})
    assert refused.status_code == 403 and "trade" in refused.json()["error"]["message"]  # step-up, see below
    is_error, message = call(access, "get_account", account_id=second.pk)
    assert is_error
    from risk.audit import audit_drain

    audit_drain()
    assert AuditEvent.objects.filter(action="mcp.get_ticker", actor_token=record, channel="mcp").exists()
    consent_event = AuditEvent.objects.get(action="oauth.consent")
    assert consent_event.actor_token_id == record.pk and consent_event.params["scopes"] == ["market:read", "account:read"]
    assert AuditEvent.objects.filter(action="oauth.token", outcome="ok", actor_token=record).exists()

    page = browser.get("/tokens/").content.decode()
    assert "Test Agent" in page and f'data-grant-id="{grant.pk}"' in page
    assert f'data-token-id="{record.pk}"' not in page  # the record is listed as the grant, not as a bearer token


def test_trade_grant_in_confirm_mode_holds_orders_and_refresh_rotates(person, app_client, quotes, django_capture_on_commit_callbacks):
    _, user, account, _ = person
    tokens = signed_in(person, app_client, granted=("market:read", "account:read", "trade"), confirm=True)
    is_error, held = call(tokens["access_token"], "place_order", symbol="BTCUSDT", side="BUY", quantity="0.002",
                          client_order_id="oauth-held-1")
    assert not is_error and held["status"] == "PENDING_APPROVAL", held
    assert AuditEvent.objects.get(action="order.hold").actor_token_id == OAuthGrant.objects.get().agent_token_id

    with django_capture_on_commit_callbacks(execute=True):
        new = refresh(Client(), app_client, tokens["refresh_token"])
    assert new.status_code == 200, new.content
    new = new.json()
    assert new["access_token"] != tokens["access_token"] and new["refresh_token"] != tokens["refresh_token"]
    assert rpc(tokens["access_token"], "tools/list").status_code == 401  # rotated away
    assert rpc(new["access_token"], "tools/list").status_code == 200
    # the old refresh token is spent; replaying it (reuse) revokes the family
    with django_capture_on_commit_callbacks(execute=True):
        assert refresh(Client(), app_client, tokens["refresh_token"]).status_code == 400
    assert rpc(new["access_token"], "tools/list").status_code == 401


def test_revoking_the_grant_on_the_tokens_page_cuts_off_at_once(person, app_client, quotes, django_capture_on_commit_callbacks):
    browser, user, _, _ = person
    tokens = signed_in(person, app_client)
    access = tokens["access_token"]
    assert rpc(access, "tools/list").status_code == 200  # now cached by the endpoint
    grant = OAuthGrant.objects.get()
    with django_capture_on_commit_callbacks(execute=True):
        assert browser.post(f"/oauth/grants/{grant.pk}/revoke/").status_code == 302
    assert rpc(access, "tools/list").status_code == 401
    assert refresh(Client(), app_client, tokens["refresh_token"]).status_code == 400
    grant.refresh_from_db()
    assert grant.revoked_at is not None and grant.agent_token.revoked_at is not None
    assert AuditEvent.objects.filter(action="oauth.revoke", actor_user=user).exists()


def test_another_person_cannot_revoke_my_grant(person, app_client, make_user):
    signed_in(person, app_client)
    grant = OAuthGrant.objects.get()
    mallory = Client()
    mallory.force_login(make_user("mallory"))
    assert mallory.post(f"/oauth/grants/{grant.pk}/revoke/").status_code == 404
    grant.refresh_from_db()
    assert grant.revoked_at is None
    assert "Test Agent" not in mallory.get("/tokens/").content.decode()


def test_revoking_the_record_in_the_admin_or_rfc7009_stops_the_token(person, app_client, quotes, django_capture_on_commit_callbacks):
    tokens = signed_in(person, app_client)
    assert rpc(tokens["access_token"], "tools/list").status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        resp = Client().post("/oauth/revoke_token/", {"token": tokens["access_token"], "client_id": app_client})
    assert resp.status_code == 200
    assert rpc(tokens["access_token"], "tools/list").status_code == 401
    grant = OAuthGrant.objects.get()
    assert grant.revoked_at is not None and grant.agent_token.revoked_at is not None  # shown as revoked
    assert refresh(Client(), app_client, tokens["refresh_token"]).status_code == 400

    tokens = signed_in(person, app_client)
    assert rpc(tokens["access_token"], "tools/list").status_code == 200
    record = OAuthGrant.objects.order_by("-id").first().agent_token
    with django_capture_on_commit_callbacks(execute=True):
        record.revoked_at = timezone.now()
        record.save()
    assert rpc(tokens["access_token"], "tools/list").status_code == 401


def test_expired_access_token_is_refused(person, app_client, quotes):
    tokens = signed_in(person, app_client)
    get_access_token_model().objects.update(expires=timezone.now() - timedelta(seconds=1))
    assert resolve_oauth_access_token(tokens["access_token"]) is None
    assert rpc(tokens["access_token"], "tools/list").status_code == 401


def test_token_for_another_resource_is_refused(person, app_client):
    tokens = signed_in(person, app_client)
    assert resolve_oauth_access_token(tokens["access_token"]) is not None
    get_access_token_model().objects.update(resource=["https://other.example/mcp"])
    assert resolve_oauth_access_token(tokens["access_token"]) is None
    assert rpc(tokens["access_token"], "tools/list").status_code == 401


# --- negative ---------------------------------------------------------------------------------

def test_wrong_pkce_verifier_and_reused_code_are_refused(person, app_client):
    verifier, challenge = pkce()
    query = consent(person[0], app_client, challenge)
    code = query["code"][0]
    wrong = exchange(Client(), app_client, code, pkce()[0])
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    ok = exchange(Client(), app_client, code, verifier)
    assert ok.status_code == 200
    again = exchange(Client(), app_client, code, verifier)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    assert AuditEvent.objects.filter(action="oauth.token", outcome="rejected").count() == 2


def test_missing_or_foreign_resource_is_invalid_target(person, app_client):
    browser = person[0]
    _, challenge = pkce()
    for resource in ("", "https://other.example/mcp"):
        resp = browser.get("/oauth/authorize/?" + urlencode(authorize_params(app_client, challenge, resource=resource or "")))
        if not resource:
            resp = browser.get("/oauth/authorize/?" + urlencode({k: v for k, v in authorize_params(app_client, challenge).items() if k != "resource"}))
        assert resp.status_code == 302, resp.content[:300]
        query = parse_qs(urlsplit(resp["Location"]).query)
        assert query["error"] == ["invalid_target"] and query["state"] == ["st-1"]
    verifier, challenge = pkce()
    code = consent(browser, app_client, challenge)["code"][0]
    for resource in ("https://other.example/mcp", None):
        data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "client_id": app_client,
                "code_verifier": verifier}
        if resource:
            data["resource"] = resource
        resp = Client().post("/oauth/token/", data)
        assert resp.status_code == 400 and resp.json()["error"] == "invalid_target", resp.content
    assert exchange(Client(), app_client, code, verifier).status_code == 200


def test_redirect_uri_mismatch_is_refused_but_loopback_ports_may_differ(person, app_client):
    browser = person[0]
    _, challenge = pkce()
    bad = browser.get("/oauth/authorize/?" + urlencode(authorize_params(app_client, challenge, redirect_uri="http://127.0.0.1:33418/other")))
    assert bad.status_code == 400 and not bad.has_header("Location")  # never redirected to an unregistered URI
    evil = browser.get("/oauth/authorize/?" + urlencode(authorize_params(app_client, challenge, redirect_uri="https://evil.example/callback")))
    assert evil.status_code == 400
    other_port = browser.get("/oauth/authorize/?" + urlencode(authorize_params(app_client, challenge, redirect_uri="http://127.0.0.1:50123/callback")))
    assert other_port.status_code == 200  # RFC 8252 §7.3


def test_client_cannot_get_scopes_the_person_did_not_grant(person, app_client, quotes):
    browser = person[0]
    tokens = signed_in(person, app_client, granted=("market:read",))
    assert tokens["scope"] == "market:read"
    wider = refresh(Client(), app_client, tokens["refresh_token"], scope="market:read trade")
    assert wider.status_code == 400 and wider.json()["error"] == "invalid_scope"
    refused = rpc(tokens["access_token"], "tools/call", {"name": "get_account", "arguments": {}})
    assert refused.status_code == 403 and "account:read" in refused.json()["error"]["message"]
    # a tampered consent granting more than the client asked for is refused
    _, challenge = pkce()
    page = browser.get("/oauth/authorize/?" + urlencode(authorize_params(app_client, challenge, scope="market:read")))
    form = page.context["form"]
    data = {name: form.initial.get(name) or "" for name in
            ("redirect_uri", "scope", "client_id", "state", "response_type", "code_challenge", "code_challenge_method", "resource")}
    data.update({"allow": "on", "granted_scopes": ["market:read", "trade"]})
    resp = browser.post("/oauth/authorize/", data)
    assert resp.status_code == 200 and b"did not ask for trade" in resp.content
    assert OAuthGrant.objects.count() == 1


def test_denying_consent_redirects_with_access_denied_and_creates_nothing(person, app_client):
    browser = person[0]
    _, challenge = pkce()
    page = browser.get("/oauth/authorize/?" + urlencode(authorize_params(app_client, challenge)))
    form = page.context["form"]
    data = {name: form.initial.get(name) or "" for name in
            ("redirect_uri", "scope", "client_id", "state", "response_type", "code_challenge", "code_challenge_method", "resource")}
    resp = browser.post("/oauth/authorize/", data)
    assert resp.status_code == 302 and parse_qs(urlsplit(resp["Location"]).query)["error"] == ["access_denied"]
    assert not OAuthGrant.objects.exists() and not AgentToken.objects.filter(name__startswith="OAuth:").exists()
    denied = AuditEvent.objects.get(action="oauth.consent")
    assert denied.outcome == "rejected" and denied.params["client_id"] == app_client


def test_pkce_s256_is_required(person, app_client):
    _, challenge = pkce()
    for method in ("plain", ""):
        resp = person[0].get("/oauth/authorize/?" + urlencode(authorize_params(app_client, challenge, code_challenge_method=method)))
        assert resp.status_code == 302
        query = parse_qs(urlsplit(resp["Location"]).query)
        assert query["error"] == ["invalid_request"] and "S256" in query["error_description"][0]
    assert not OAuthGrant.objects.exists()


def test_static_bearer_tokens_keep_working(trader, quotes):
    _, _, key = trader
    is_error, ticker = call(key, "get_ticker", symbol="BTCUSDT")
    assert not is_error and ticker["symbol"] == "BTCUSDT"


@pytest.mark.django_db
def test_login_and_token_endpoints_are_rate_limited_and_sign_ins_audited(settings, make_user):
    settings.OAUTH_RATE_LIMIT = "3/m"
    make_user("bob", "right-password-1")
    c = Client()
    statuses = [c.post("/login/", {"username": "bob", "password": "wrong"}).status_code for _ in range(4)]
    assert statuses[:3] == [200, 200, 200] and statuses[3] == 429
    assert AuditEvent.objects.filter(action="auth.login_failed", params__username="bob").count() == 3
    assert AuditEvent.objects.filter(action="oauth.rate_limited", params__endpoint="login").count() == 1
    token = [Client().post("/oauth/token/", {"grant_type": "authorization_code", "code": "x"}) for _ in range(4)]
    assert [r.status_code for r in token][3] == 429 and token[3]["Retry-After"] == "60"


def test_oauth_tokens_are_stored_only_as_checksums_and_never_shown(person, app_client, admin_client):
    tokens = signed_in(person, app_client)
    from oauth2_provider.models import get_refresh_token_model

    for model in (get_access_token_model(), get_refresh_token_model()):
        assert not model.objects.filter(token__in=[tokens["access_token"], tokens["refresh_token"]]).exists()
    for page in ("/admin/oauth2_provider/accesstoken/", "/admin/oauth2_provider/refreshtoken/", "/admin/oauth/oauthgrant/",
                 f"/admin/oauth/oauthgrant/{OAuthGrant.objects.get().pk}/change/", "/tokens/"):
        html = admin_client.get(page).content.decode()
        assert tokens["access_token"] not in html and tokens["refresh_token"] not in html, page
    assert tokens["access_token"] not in str(list(AuditEvent.objects.values_list("params", "result")))


# --- client ID metadata documents ------------------------------------------------------------------

CIMD_URL = "https://agent.example/oauth/client.json"


class LoopbackDocumentFetcher:
    """Test transport for ``oauth.clients.CheckedMetadataFetcher``: the https client_id URL's path
    is fetched from a real HTTP server on loopback (django-oauth-toolkit's own fetcher refuses
    non-public addresses, so a local document cannot be reached through it)."""

    base_url = ""

    def fetch_document(self, client_id):
        import httpx

        resp = httpx.get(self.base_url + urlsplit(client_id).path, timeout=3)
        resp.raise_for_status()
        return resp.json(), 300


@pytest.fixture
def cimd_document(settings):
    """Serve a client ID metadata document from a loopback HTTP server; the fetcher reads it there."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from oauth.clients import CheckedMetadataFetcher

    document = {"client_id": CIMD_URL, "client_name": "Metadata Agent", "redirect_uris": [REDIRECT],
                "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
                "token_endpoint_auth_method": "none"}
    fetched = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            fetched.append(self.path)
            body = json.dumps(document).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    fetcher = type("Fetcher", (LoopbackDocumentFetcher, CheckedMetadataFetcher),
                   {"base_url": f"http://127.0.0.1:{server.server_address[1]}"})
    settings.OAUTH2_PROVIDER = {**settings.OAUTH2_PROVIDER, "CIMD_METADATA_FETCHER": fetcher}
    yield document, fetched
    server.shutdown()
    from django.core.cache import cache

    cache.clear()  # django-oauth-toolkit's per-URL failure backoff


def test_client_id_metadata_document_client_signs_in(person, cimd_document, quotes):
    document, fetched = cimd_document
    browser = person[0]
    verifier, challenge = pkce()
    query = consent(browser, CIMD_URL, challenge, granted=("market:read",))
    assert fetched == ["/oauth/client.json"]
    app = get_application_model().objects.get(client_id=CIMD_URL)
    assert app.name == "Metadata Agent" and app.client_type == "public"
    resp = exchange(Client(), CIMD_URL, query["code"][0], verifier)
    assert resp.status_code == 200, resp.content
    is_error, ticker = call(resp.json()["access_token"], "get_ticker", symbol="BTCUSDT")
    assert not is_error and ticker["symbol"] == "BTCUSDT"
    assert fetched == ["/oauth/client.json"]  # cached on the Application, not fetched per request


def test_metadata_document_breaking_our_rules_is_an_unknown_client(person, cimd_document):
    document, fetched = cimd_document
    document["redirect_uris"] = ["http://evil.example/cb"]
    _, challenge = pkce()
    resp = person[0].get("/oauth/authorize/?" + urlencode(authorize_params(CIMD_URL, challenge, redirect_uri="http://evil.example/cb")))
    assert resp.status_code == 400 and not resp.has_header("Location")
    assert fetched and not get_application_model().objects.filter(client_id=CIMD_URL).exists()


def test_deactivating_the_person_stops_their_oauth_tokens(person, app_client, quotes, django_capture_on_commit_callbacks):
    _, user, _, _ = person
    tokens = signed_in(person, app_client)
    assert rpc(tokens["access_token"], "tools/list").status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        user.is_active = False
        user.save()
    assert rpc(tokens["access_token"], "tools/list").status_code == 401


def test_consent_is_asked_even_for_auto_approval_or_skip_authorization_clients(person, app_client):
    browser = person[0]
    signed_in(person, app_client)
    _, challenge = pkce()
    auto = browser.get("/oauth/authorize/?" + urlencode(authorize_params(app_client, challenge, approval_prompt="auto")))
    assert auto.status_code == 200 and b"consent-form" in auto.content
    get_application_model().objects.filter(client_id=app_client).update(skip_authorization=True)
    skip = browser.get("/oauth/authorize/?" + urlencode(authorize_params(app_client, challenge)))
    assert skip.status_code == 200 and b"consent-form" in skip.content
    assert OAuthGrant.objects.count() == 1


def test_symbol_restriction_from_consent_applies_and_unknown_symbols_are_refused(person, app_client, quotes):
    browser = person[0]
    _, challenge = pkce()
    page = browser.get("/oauth/authorize/?" + urlencode(authorize_params(app_client, challenge)))
    form = page.context["form"]
    data = {name: form.initial.get(name) or "" for name in
            ("redirect_uri", "scope", "client_id", "state", "response_type", "code_challenge", "code_challenge_method", "resource")}
    data.update({"allow": "on", "granted_scopes": ["market:read", "trade"], "symbols": "NOPEUSDT"})
    resp = browser.post("/oauth/authorize/", data)
    assert resp.status_code == 200 and b"consent-form-error" in resp.content and b"NOPEUSDT" in resp.content
    assert not OAuthGrant.objects.exists() and not AgentToken.objects.filter(name__startswith="OAuth:").exists()

    tokens = signed_in(person, app_client, granted=("market:read", "trade"), symbols="ethusdt")
    assert OAuthGrant.objects.get().agent_token.symbols == ["ETHUSDT"]
    is_error, message = call(tokens["access_token"], "place_order", symbol="BTCUSDT", side="BUY", quantity="0.002")
    assert is_error and "BTCUSDT" in message


def test_introspection_for_a_confidential_client_reflects_revocation(person, app_client, django_capture_on_commit_callbacks):
    app = get_application_model().objects.create(name="resource server", client_type="confidential",
                                                 authorization_grant_type="client-credentials", client_secret="s3cret-for-tests",
                                                 client_id="rs-client")
    assert app.pk
    tokens = signed_in(person, app_client)
    basic = "Basic " + base64.b64encode(b"rs-client:s3cret-for-tests").decode()
    info = Client().post("/oauth/introspect/", {"token": tokens["access_token"]}, HTTP_AUTHORIZATION=basic).json()
    assert info["active"] is True and info["aud"] == [settings.MCP_RESOURCE_URL] and info["client_id"] == app_client
    assert Client().post("/oauth/introspect/", {"token": tokens["access_token"]}).status_code in (401, 403)  # no client auth
    with django_capture_on_commit_callbacks(execute=True):
        record = OAuthGrant.objects.get().agent_token
        record.revoked_at = timezone.now()
        record.save()
    assert Client().post("/oauth/introspect/", {"token": tokens["access_token"]}, HTTP_AUTHORIZATION=basic).json() == {"active": False}


def test_tampered_consent_for_an_unknown_client_is_a_form_error(person, app_client):
    browser = person[0]
    _, challenge = pkce()
    page = browser.get("/oauth/authorize/?" + urlencode(authorize_params(app_client, challenge)))
    form = page.context["form"]
    data = {name: form.initial.get(name) or "" for name in
            ("redirect_uri", "scope", "client_id", "state", "response_type", "code_challenge", "code_challenge_method", "resource")}
    data.update({"allow": "on", "granted_scopes": ["market:read"], "client_id": "no-such-client"})
    resp = browser.post("/oauth/authorize/", data)
    assert resp.status_code == 200 and b"Unknown client" in resp.content
    assert not OAuthGrant.objects.exists()


# --- step-up: a scope the access token lacks (MCP authorization spec 2025-11-25, "Scope Challenge Handling") ---

def _challenge_params(header: str) -> dict:
    """The auth-params of a ``Bearer`` challenge (RFC 6750 §3), quoted values unquoted."""
    import re

    assert header.startswith("Bearer ")
    return dict(re.findall(r'(\w+)="([^"]*)"', header))


def test_a_tool_call_needing_a_scope_the_oauth_token_lacks_is_a_403_step_up(person, app_client, quotes):
    """403 with ``WWW-Authenticate: Bearer error="insufficient_scope", scope=<granted + needed>,
    resource_metadata=…``; the refusal is audited as before and nothing is booked; what the token
    may do still answers 200; an unknown tool stays a tool error."""
    from risk.audit import audit_drain
    from trading.models import Order

    tokens = signed_in(person, app_client, granted=("market:read",))
    access = tokens["access_token"]
    record = OAuthGrant.objects.get().agent_token
    for tool, args, needed in (("place_order", {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.002"}, "trade"),
                               ("get_account", {}, "account:read")):
        resp = rpc(access, "tools/call", {"name": tool, "arguments": args}, id=7)
        assert resp.status_code == 403, resp.content
        challenge = _challenge_params(resp.headers["www-authenticate"])
        assert challenge["error"] == "insufficient_scope"
        assert challenge["scope"].split() == sorted({"market:read", needed})
        assert challenge["resource_metadata"] == f"{settings.PUBLIC_BASE_URL}/.well-known/oauth-protected-resource/mcp"
        body = resp.json()
        assert body["id"] == 7 and f"'{needed}' scope" in body["error"]["message"]
    assert not Order.objects.exists()
    audit_drain()
    refusals = AuditEvent.objects.filter(actor_token=record, outcome="rejected", channel="mcp")
    assert {e.action for e in refusals} == {"mcp.place_order", "mcp.get_account"}
    assert rpc(access, "tools/call", {"name": "get_ticker", "arguments": {"symbol": "BTCUSDT"}}).status_code == 200
    unknown = rpc(access, "tools/call", {"name": "no_such_tool", "arguments": {}})
    assert unknown.status_code == 200 and unknown.json()["result"]["isError"]


@pytest.mark.django_db(transaction=True)  # /mcp/ws authenticates in its worker threads: they must see the rows
def test_a_static_token_lacking_a_scope_keeps_the_tool_error_and_mcp_ws_never_answers_403(person, app_client, quotes):
    """A pasted ``tmcp_`` token cannot step up (docs/adr/0010): HTTP 200 with a tool error naming the
    scope. Over /mcp/ws an OAuth token lacking the scope gets the tool error too, and stays connected."""
    import asyncio

    from risk.services import agent_token_create
    from test_revocation import WsClient, _run

    _, user, _, _ = person
    _, static = agent_token_create(user=user, name="static-reader", scopes=["market:read"])
    resp = rpc(static, "tools/call", {"name": "place_order", "arguments": {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.002"}})
    assert resp.status_code == 200 and "www-authenticate" not in resp.headers
    result = resp.json()["result"]
    assert result["isError"] and "'trade' scope" in result["content"][0]["text"]

    access = signed_in(person, app_client, granted=("market:read",))["access_token"]

    async def scenario():
        client = WsClient(access)
        await client.start()
        await client.inbox.put({"type": "websocket.receive", "text": json.dumps({
            "jsonrpc": "2.0", "id": 3, "method": "tools/call",
            "params": {"name": "place_order", "arguments": {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.002"}}})})
        for _ in range(500):
            if any(f.get("id") == 3 for f in client.frames):
                break
            await asyncio.sleep(0.02)
        closed = client.closed
        await client.stop()
        return next(f for f in client.frames if f.get("id") == 3), closed

    frame, closed = _run(scenario())
    assert closed is None
    assert frame["result"]["isError"] and "'trade' scope" in frame["result"]["content"][0]["text"]
