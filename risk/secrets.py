"""Exchange API secrets, encrypted at rest with Fernet (the ``cryptography`` package: AES-128-CBC
+ HMAC-SHA256, https://cryptography.io/en/latest/fernet/).

The key comes from ``settings.SECRETS_ENCRYPTION_KEY`` (env ``SECRETS_ENCRYPTION_KEY``, a
urlsafe-base64 32-byte Fernet key; several comma-separated keys rotate: the first encrypts, all
decrypt). Without it and with ``settings.KEEP_LOCAL_KEYS`` (DEBUG, or the local main job), a key is
generated once under the data directory. A
secret is never returned by any tool, API or page: only ``credential_secret`` (for the venue
that signs requests) decrypts it.
"""
from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


@lru_cache(maxsize=1)
def _fernet() -> MultiFernet:
    keys = [k.strip() for k in (settings.SECRETS_ENCRYPTION_KEY or "").split(",") if k.strip()]
    if not keys:
        if not settings.KEEP_LOCAL_KEYS:
            raise ImproperlyConfigured("SECRETS_ENCRYPTION_KEY must be set when DEBUG is off (outside the local main job).")
        path = settings.DATA_DIR / "secrets_key"
        if not path.exists():
            path.write_text(Fernet.generate_key().decode())
            path.chmod(0o600)
        keys = [path.read_text().strip()]
    return MultiFernet([Fernet(k.encode()) for k in keys])


def encrypt(plain: str) -> str:
    """Fernet token (text) of ``plain``."""
    return _fernet().encrypt(plain.encode()).decode()


def decrypt(token: str) -> str:
    """The plain text of a Fernet token; raises ``ImproperlyConfigured`` if no key can open it."""
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise ImproperlyConfigured("An exchange secret cannot be decrypted with SECRETS_ENCRYPTION_KEY.") from None
