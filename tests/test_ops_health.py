"""/healthz and /readyz in-process: each check's status and age, 503 when a required one fails
(the outage tests with real processes are in tests/test_ops_e2e.py)."""
import time

import pytest
from django.conf import settings
from django.test import Client

from core.redis import get_redis
from marketdata.cache import book_key, dumps
from ops.health import beat_heartbeat_write
from core.leader import lease_key

pytestmark = pytest.mark.django_db


def _book(symbol: str, received_ms: int) -> None:
    get_redis().set(book_key(symbol), dumps({"symbol": symbol, "bidPrice": "1", "bidQty": "1", "askPrice": "2",
                                              "askQty": "1", "updateId": 1, "receivedAt": received_ms}))


@pytest.fixture
def alive(replay):
    """Everything /readyz looks for, as the running processes would leave it in Redis."""
    now_ms = int(time.time() * 1000)
    for symbol in settings.WATCHED_SYMBOLS:
        _book(symbol, now_ms)
    beat_heartbeat_write(now_ms)
    get_redis().set(lease_key(settings.READYZ_MATCHER_LEASE), "host:1:abcd", px=5000)
    yield
    get_redis().delete(lease_key(settings.READYZ_MATCHER_LEASE), f"{settings.REDIS_KEY_PREFIX}ops:beat")


def test_healthz_answers_without_io(django_assert_num_queries):
    with django_assert_num_queries(0):
        resp = Client().get("/healthz")
    assert resp.status_code == 200 and resp.json() == {"status": "ok"}


def test_readyz_reports_every_check_with_status_and_age(alive):
    resp = Client().get("/readyz")
    body = resp.json()
    assert resp.status_code == 200, body
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "redis", "channel_layer", "venue", "ingester", "beat", "matcher"}
    for name, check in body["checks"].items():
        assert check["status"] == "ok", (name, check)
        assert check["required"] is (name in settings.READYZ_REQUIRED)
    assert 0 <= body["checks"]["ingester"]["age_s"] < 5
    assert 0 <= body["checks"]["beat"]["age_s"] < 5
    assert 0 < body["checks"]["matcher"]["age_s"] <= 5


def test_readyz_fails_when_the_ingester_goes_stale_and_recovers(alive):
    stale = int(time.time() * 1000) - int((settings.READYZ_INGEST_MAX_AGE_S + 5) * 1000)
    for symbol in settings.WATCHED_SYMBOLS:
        _book(symbol, stale)
    resp = Client().get("/readyz")
    assert resp.status_code == 503
    ingester = resp.json()["checks"]["ingester"]
    assert ingester["status"] == "fail" and ingester["age_s"] > settings.READYZ_INGEST_MAX_AGE_S
    assert "last message" in ingester["detail"]
    _book(settings.WATCHED_SYMBOLS[0], int(time.time() * 1000))
    assert Client().get("/readyz").status_code == 200


def test_readyz_fails_on_a_stale_beat_heartbeat_and_a_missing_matcher(alive):
    beat_heartbeat_write(int(time.time() * 1000) - int((settings.READYZ_BEAT_MAX_AGE_S + 10) * 1000))
    resp = Client().get("/readyz")
    assert resp.status_code == 503 and resp.json()["checks"]["beat"]["status"] == "fail"
    beat_heartbeat_write()
    assert Client().get("/readyz").status_code == 200
    get_redis().delete(lease_key(settings.READYZ_MATCHER_LEASE))
    resp = Client().get("/readyz")
    assert resp.status_code == 503 and resp.json()["checks"]["matcher"]["status"] == "fail"


def test_an_optional_check_failing_does_not_make_it_unready(alive, settings):
    settings.BINANCE_API_URL = "http://127.0.0.1:9/api"  # nothing listens on the discard port
    resp = Client().get("/readyz")
    body = resp.json()
    assert body["checks"]["venue"]["status"] == "fail" and body["checks"]["venue"]["required"] is False
    assert resp.status_code == 200
    settings.READYZ_REQUIRED = [*settings.READYZ_REQUIRED, "venue"]
    assert Client().get("/readyz").status_code == 503


def test_beat_heartbeat_task_writes_the_heartbeat(alive):
    from ops.tasks import beat_heartbeat

    get_redis().delete(f"{settings.REDIS_KEY_PREFIX}ops:beat")
    assert Client().get("/readyz").json()["checks"]["beat"]["detail"] == "no heartbeat yet"
    beat_heartbeat.apply()
    assert Client().get("/readyz").json()["checks"]["beat"]["status"] == "ok"
