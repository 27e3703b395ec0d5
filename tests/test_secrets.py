"""Exchange secrets are encrypted at rest and keys rotate."""
import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

from risk import secrets


@pytest.fixture
def fresh_keys(settings):
    def use(value):
        settings.SECRETS_ENCRYPTION_KEY = value
        secrets._fernet.cache_clear()

    yield use
    secrets._fernet.cache_clear()


def test_round_trip_and_ciphertext_hides_the_secret(fresh_keys):
    fresh_keys(Fernet.generate_key().decode())
    token = secrets.encrypt("my-binance-secret")
    assert "my-binance-secret" not in token and secrets.decrypt(token) == "my-binance-secret"


def test_rotation_keeps_old_secrets_readable_and_wrong_key_fails(fresh_keys):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    fresh_keys(old)
    token = secrets.encrypt("s3cret")
    fresh_keys(f"{new},{old}")
    assert secrets.decrypt(token) == "s3cret"
    fresh_keys(new)
    with pytest.raises(ImproperlyConfigured):
        secrets.decrypt(token)
