"""Per-account exchange credentials (risk.models.ExchangeCredential): the secret is stored Fernet-
encrypted, decrypted only when the venue builds its python-binance client, signs real requests on
the replay exchange's signed endpoints, and is never shown by the admin; env keys stay the fallback.
Exchange error texts reach agents fenced as untrusted data."""
from __future__ import annotations

import secrets as pysecrets
import string
import time

import pytest
from conftest import cache_quotes

from replay.server import ReplayServer
from risk import secrets as risk_secrets
from risk.models import AuditEvent, ExchangeCredential
from risk.services import agent_token_create
from trading.credentials import exchange_credential_set
from risk.trust import ERROR_NOTE
from test_mcp import call
from trading import services
from trading.models import Order
from trading.venues import binance as bv


def rand(n=64) -> str:
    return "".join(pysecrets.choice(string.ascii_letters + string.digits) for _ in range(n))


@pytest.fixture(scope="module")
def ex():
    srv = ReplayServer(port=0, paused=True, start_wall_ms=int(time.time() // 60) * 60_000)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def _clean(settings):
    """A fresh Fernet key per test (tests run with DEBUG off, where the key must be configured)."""
    from cryptography.fernet import Fernet

    settings.SECRETS_ENCRYPTION_KEY = Fernet.generate_key().decode()
    risk_secrets._fernet.cache_clear()
    yield
    risk_secrets._fernet.cache_clear()
    from django.conf import settings

    from core.redis import get_redis

    bv.clients_forget()
    r = get_redis()
    keys = list(r.scan_iter(match=f"{settings.REDIS_KEY_PREFIX}venue:intent:*", count=500))
    if keys:
        r.delete(*keys)


@pytest.fixture
def venue(ex, db, settings, django_user_model):
    """A testnet account whose key pair exists only in its encrypted credential: the env keys are
    another pair the exchange does not know."""
    from marketdata.services import exchange_info_sync
    from trading.services import account_create

    settings.BINANCE_API_URL, settings.BINANCE_STREAM_URL = ex.api_url, ex.stream_url
    settings.BINANCE_WS_API_URL = ex.ws_api_url
    settings.BINANCE_API_KEY, settings.BINANCE_API_SECRET = rand(), rand()
    key, secret = rand(), rand()
    ex.add_key(key, secret, {"USDT": "100000", "BTC": "1"})
    exchange_info_sync()
    cache_quotes()  # the exchange's bookTickers into the cache, as the ingester does
    user = django_user_model.objects.create_user(username=f"u{rand(8)}", password="pw-for-tests-1")
    account = account_create(owner=user, name="Testnet", venue="testnet")
    exchange_credential_set(account=account, api_key=key, secret=secret, actor_user=user, channel="admin")
    return user, account, key, secret


def place(user, account, **kw):
    args = {"account": account, "actor_user": user, "channel": "api", "symbol": "BTCUSDT", "side": "BUY",
            "quantity": "0.002"}
    args.update(kw)
    return services.order_place(**args).order


def test_stored_credential_signs_orders_and_is_decrypted_only_to_build_the_client(venue, monkeypatch):
    user, account, key, secret = venue
    row = ExchangeCredential.objects.get(account=account)
    assert secret not in row.secret_encrypted and row.secret() == secret
    calls = []
    real = risk_secrets.decrypt
    monkeypatch.setattr(risk_secrets, "decrypt", lambda token: calls.append(1) or real(token))
    bv.clients_forget()
    first = place(user, account, client_order_id="cred-1")
    second = place(user, account, client_order_id="cred-2")
    assert first["status"] == second["status"] == "FILLED"
    assert Order.objects.get(client_order_id="cred-1").exchange_order_id is not None
    assert len(calls) == 1, "decrypted once, for the client; the cached client is reused"
    event = AuditEvent.objects.get(action="exchange_credential.set")
    assert secret not in str(event.params) + str(event.result) + event.message and event.params["secret_changed"] is True


def test_env_keys_stay_the_fallback(venue, settings):
    user, account, key, secret = venue
    ExchangeCredential.objects.filter(account=account).delete()
    bv.clients_forget()
    with pytest.raises(bv.VenueAuthError):  # the env pair is unknown to the exchange
        place(user, account, client_order_id="env-1")
    settings.BINANCE_API_KEY, settings.BINANCE_API_SECRET = key, secret
    bv.clients_forget()
    assert place(user, account, client_order_id="env-2")["status"] == "FILLED"


def test_replacing_the_secret_takes_effect_and_exchange_errors_reach_agents_fenced(venue):
    user, account, key, secret = venue
    exchange_credential_set(account=account, api_key=key, secret=rand(), actor_user=user, channel="admin")
    with pytest.raises(bv.VenueAuthError) as err:
        place(user, account, client_order_id="bad-1")
    assert err.value.code == -1022
    assert '<untrusted source="exchange">Signature for this request is not valid.</untrusted>' in err.value.msg
    _, token = agent_token_create(user=user, name="agent")
    is_error, text = call(token, "place_order", symbol="BTCUSDT", side="BUY", quantity="0.002", account_id=account.pk)
    assert is_error and '<untrusted source="exchange">' in text and text.endswith(ERROR_NOTE)
    exchange_credential_set(account=account, api_key=key, secret=secret, actor_user=user, channel="admin")
    assert place(user, account, client_order_id="good-1")["status"] == "FILLED"


def test_exchange_refusals_are_fenced_in_the_order(venue):
    from marketdata.selectors import quote_get
    from core.errors import OrderRejected

    user, account, _, _ = venue
    ask = quote_get("BTCUSDT").ask_price
    with pytest.raises(OrderRejected):
        place(user, account, order_type="LIMIT_MAKER", price=f"{ask:f}", client_order_id="taker-1")
    order = Order.objects.get(client_order_id="taker-1")
    assert order.status == "REJECTED"
    assert '<untrusted source="exchange">Order would immediately match and take.</untrusted>' in order.reject_reason


def test_admin_never_shows_the_secret(venue, client, django_user_model):
    user, account, key, secret = venue
    row = ExchangeCredential.objects.get(account=account)
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw-for-tests-1")
    client.force_login(admin)
    for url in ("/admin/risk/exchangecredential/", f"/admin/risk/exchangecredential/{row.pk}/change/",
                "/admin/risk/exchangecredential/add/"):
        html = client.get(url).content.decode()
        assert secret not in html and row.secret_encrypted not in html, url
    # Saving without a secret keeps the stored one; with one, replaces it (still encrypted).
    resp = client.post(f"/admin/risk/exchangecredential/{row.pk}/change/", {"api_key": key, "api_secret": ""})
    assert resp.status_code == 302
    assert ExchangeCredential.objects.get(pk=row.pk).secret() == secret
    new_secret = rand()
    resp = client.post(f"/admin/risk/exchangecredential/{row.pk}/change/", {"api_key": key, "api_secret": new_secret})
    assert resp.status_code == 302
    stored = ExchangeCredential.objects.get(pk=row.pk)
    assert stored.secret() == new_secret and new_secret not in stored.secret_encrypted
    html = client.get(f"/admin/risk/exchangecredential/{row.pk}/change/").content.decode()
    assert new_secret not in html and stored.secret_encrypted not in html
    # A new pair needs its secret.
    other = type(account).objects.create(owner=user, name="Other", venue="testnet")
    resp = client.post("/admin/risk/exchangecredential/add/", {"account": other.pk, "api_key": "abc", "api_secret": ""})
    assert resp.status_code == 200 and not ExchangeCredential.objects.filter(account=other).exists()


def test_ed25519_key_pair_is_stored_encrypted_signs_orders_and_bad_input_changes_nothing(venue, ex, client,
                                                                                         django_user_model):
    """An Ed25519 private key (PEM) is stored like an HMAC secret (Fernet), signs the account's
    orders (the exchange holds only the public key), never shows in the admin; a PEM that is not an
    Ed25519 private key, a key-type switch without a new key and a bad URL are refused typed and
    change nothing."""
    from replay.testing import ed25519_pair
    from core.errors import InvalidInput

    user, account, _key, _secret = venue
    private, public = ed25519_pair()
    ed_key = rand()
    ex.add_key(ed_key, public, {"USDT": "100000", "BTC": "1"})
    exchange_credential_set(account=account, api_key=ed_key, secret=private, key_type="ED25519",
                            actor_user=user, channel="admin")
    row = ExchangeCredential.objects.get(account=account)
    assert row.key_type == "ED25519" and "PRIVATE KEY" not in row.secret_encrypted and row.secret().strip() == private.strip()
    assert place(user, account, client_order_id="ed-1")["status"] == "FILLED"
    assert [o.client_order_id for o in ex.accounts.account(ed_key).orders.values()] == ["ed-1"]
    event = AuditEvent.objects.filter(action="exchange_credential.set").order_by("-id").first()
    assert event.params["key_type"] == "ED25519" and "PRIVATE" not in str(event.params) + str(event.result)

    before = (row.api_key, row.key_type, row.secret_encrypted, row.api_url)
    for kwargs in ({"secret": public, "key_type": "ED25519"},  # a public key is not a signing key
                   {"secret": rand(), "key_type": "ED25519"},
                   {"secret": None, "key_type": "HMAC_SHA256"},  # switching type needs the new secret
                   {"secret": None, "key_type": "ED25519", "api_url": "ftp://example.com"},
                   {"secret": None, "key_type": "RSA"}):
        with pytest.raises(InvalidInput):
            exchange_credential_set(account=account, api_key=ed_key, actor_user=user, channel="admin", **kwargs)
        row.refresh_from_db()
        assert (row.api_key, row.key_type, row.secret_encrypted, row.api_url) == before

    admin = django_user_model.objects.create_superuser("root2", "root2@example.com", "pw-for-tests-1")
    client.force_login(admin)
    html = client.get(f"/admin/risk/exchangecredential/{row.pk}/change/").content.decode()
    assert "PRIVATE KEY" not in html and row.secret_encrypted not in html
    resp = client.post(f"/admin/risk/exchangecredential/{row.pk}/change/",
                       {"api_key": ed_key, "key_type": "ED25519", "api_secret": "not a pem"})
    assert resp.status_code == 200 and "Ed25519" in resp.content.decode()  # the form says why; nothing saved
    row.refresh_from_db()
    assert row.secret_encrypted == before[2]
