"""An account's Binance API key pair (``risk.models.ExchangeCredential``, encrypted at rest): set
through the admin, used by ``trading.venues.binance`` to sign the account's requests."""
from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from django.db import transaction

from core.errors import InvalidInput
from risk.audit import audit_record
from risk.models import ExchangeCredential, KeyType, Outcome
from trading.venues import binance


def ed25519_private_pem_check(pem: str) -> None:
    """``InvalidInput`` unless ``pem`` is an unencrypted Ed25519 private key in PEM (what
    python-binance's ``private_key`` takes)."""
    try:
        key = load_pem_private_key(pem.encode(), None)
    except (ValueError, TypeError):
        raise InvalidInput("The Ed25519 private key must be an unencrypted PEM (-----BEGIN PRIVATE KEY-----).") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidInput("The private key is not an Ed25519 key.")


def exchange_credential_set(*, account, api_key: str, secret: str | None, actor_user, channel: str,
                            key_type: str = "HMAC_SHA256", api_url: str = "", ws_api_url: str = ""):
    """Store ``account``'s Binance API key and (when ``secret`` is given) its secret, encrypted with
    Fernet (``risk.secrets``, the ``risk.models.ExchangeCredential`` row). Returns the ``ExchangeCredential``.

    ``key_type``: ``HMAC_SHA256`` (``secret`` = the secret key) or ``ED25519`` (``secret`` = the
    private key PEM; Binance keeps only the public half). ``api_url`` / ``ws_api_url``: the
    account's own venue endpoints (``http(s)://.../api``, ``ws(s)://.../ws-api/v3``), blank for
    the deployment's. Raises ``InvalidInput`` for an empty key, an empty secret when none is
    stored yet or the key type changes, a PEM that is not an Ed25519 private key, or a malformed
    URL. Audited as ``exchange_credential.set`` with the key's first 6 characters, the key type,
    the endpoints and whether the secret changed, never the secret."""
    api_key = (api_key or "").strip()
    if not api_key or len(api_key) > 128:
        raise InvalidInput("api_key must be 1-128 characters.")
    if key_type not in KeyType.values:
        raise InvalidInput(f"key_type must be one of {', '.join(KeyType.values)}.")
    api_url, ws_api_url = (api_url or "").strip(), (ws_api_url or "").strip()
    if api_url and not api_url.startswith(("http://", "https://")) or len(api_url) > 200:
        raise InvalidInput("api_url must be an http(s) URL such as https://api.binance.com/api.")
    if ws_api_url and not ws_api_url.startswith(("ws://", "wss://")) or len(ws_api_url) > 200:
        raise InvalidInput("ws_api_url must be a ws(s) URL such as wss://ws-api.binance.com:443/ws-api/v3.")
    if secret and key_type == KeyType.ED25519:
        ed25519_private_pem_check(secret.strip())
        secret = secret.strip() + "\n"
    with transaction.atomic():
        cred = ExchangeCredential.objects.select_for_update().filter(account=account).first()
        if not secret and (cred is None or cred.key_type != key_type):
            raise InvalidInput("The API secret (or Ed25519 private key) is required for a new key pair or key type.")
        before = cred.api_key[:6] + "…" if cred else None
        cred = cred or ExchangeCredential(account=account)
        cred.api_key, cred.key_type, cred.api_url, cred.ws_api_url = api_key, key_type, api_url, ws_api_url
        if secret:
            cred.set_secret(secret)
        cred.save()
        audit_record(channel=channel, action="exchange_credential.set", outcome=Outcome.OK, actor_user=actor_user,
                     account=account, params={"api_key_prefix": api_key[:6] + "…", "key_type": key_type,
                                              "api_url": api_url, "ws_api_url": ws_api_url,
                                              "secret_changed": bool(secret)},
                     result={"before": {"api_key_prefix": before}, "after": {"api_key_prefix": api_key[:6] + "…"}})
    binance.clients_forget()  # no client keeps a replaced secret
    return cred
