"""Operating it, on real processes: a private redis-server, the production web server with two
workers (one Prometheus multiprocess directory), a Celery worker, the ingester, the replay exchange.

- /metrics counts exactly the MCP calls and orders this test made, whichever worker served them.
- The JSON log line of an MCP order and the Celery task it caused (its fill notification) carry
  the same request id; a local webhook receiver gets one message per fill and none for another
  person's account.
- /readyz answers 503 while the ingester is dead or Redis is down, and 200 again once they are back.
"""
import json
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
from cryptography.fernet import Fernet
from django.conf import settings
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from conftest import ARTIFACTS, subprocess_database_url, wait_until

sys.path.insert(0, str(Path(__file__).resolve().parent / "faults"))
from faultkit import PrivateRedis, Processes, free_port, mcp_call, sqlite_pass, tool_result  # noqa: E402
from webhook import WebhookReceiver  # noqa: E402

from marketdata.services import exchange_info_sync  # noqa: E402
from risk import secrets as risk_secrets  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True), pytest.mark.timeout(300), sqlite_pass]
METRICS_TOKEN = "ops-e2e-metrics-token"
FERNET_KEY = Fernet.generate_key().decode()


@pytest.fixture(scope="module")
def ops_stack(django_db_setup, django_db_blocker, replay, tmp_path_factory):
    """(processes, redis, base_url, metrics dir): web (2 workers), Celery worker, ingester on a private Redis."""
    with django_db_blocker.unblock():
        db_url = subprocess_database_url()
    redis = PrivateRedis().start()
    metrics_dir = tmp_path_factory.mktemp("prometheus")
    procs = Processes({
        "DATABASE_URL": db_url, "BINANCE_VENUE": "replay", "BINANCE_API_URL": replay.api_url,
        "BINANCE_STREAM_URL": replay.stream_url, "REDIS_URL": redis.url, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "LOG_FORMAT": "json", "LOG_LEVEL": "INFO", "METRICS_TOKEN": METRICS_TOKEN, "SECRETS_ENCRYPTION_KEY": FERNET_KEY,
        "READYZ_REQUIRED": "database,redis,channel_layer,ingester", "READYZ_INGEST_MAX_AGE_S": "5",
        "NOTIFY_LOOKUP_TTL_S": "0", "TOKEN_RATE_LIMIT_PER_MINUTE": "0", "LEADER_LEASE_S": "2",
    })
    for name in ("ops-web", "ops-worker", "ops-ingester"):
        (ARTIFACTS / f"fault-{name}.log").unlink(missing_ok=True)
    try:
        procs.manage("ops-ingester", "ingest", "--symbols", "BTCUSDT")
        procs.spawn("ops-worker", [str(Path(sys.executable).parent / "celery"), "-A", "project", "worker", "-l", "info",
                                   "--pool", "solo", "-n", f"ops-{free_port()}@%h"])
        base = procs.web("ops-web", free_port(), workers=2)
        wait_until(lambda: httpx.get(base + "/readyz", timeout=10).status_code == 200, timeout=90, what="a ready stack")
        yield procs, redis, base, metrics_dir
    finally:
        procs.stop_all()
        redis.kill()


@pytest.fixture
def fernet_key(settings):
    settings.SECRETS_ENCRYPTION_KEY = FERNET_KEY  # the processes decrypt what this test stores
    risk_secrets._fernet.cache_clear()
    yield
    risk_secrets._fernet.cache_clear()


def scrape(base: str) -> dict:
    """/metrics as {(sample name, sorted labels): value}."""
    resp = httpx.get(base + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10)
    assert resp.status_code == 200, resp.text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(resp.text) for s in family.samples}


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def web_worker_pids(procs) -> list[int]:
    """uvicorn's worker processes (spawned by multiprocessing; not its resource tracker)."""
    return [c.pid for c in psutil.Process(procs.procs["ops-web"].pid).children(recursive=True)
            if "spawn_main" in " ".join(c.cmdline())]


def calls_served_by(metrics_dir: Path, pid: int) -> float:
    """MCP calls counted by one process (its own multiprocess file, merged alone)."""
    files = [str(p) for p in metrics_dir.glob(f"counter_{pid}.db")]
    if not files:
        return 0.0
    return sum(s.value for m in MultiProcessCollector.merge(files, accumulate=True) if m.name == "tradingmcp_mcp_calls"
               for s in m.samples if s.name == "tradingmcp_mcp_calls_total")


def json_lines(name: str) -> list[dict]:
    out = []
    for line in (ARTIFACTS / f"fault-{name}.log").read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def test_metrics_count_exactly_across_two_web_workers(ops_stack, trader):
    procs, _, base, metrics_dir = ops_stack
    exchange_info_sync()
    user, account, token = trader
    pids = web_worker_pids(procs)
    assert len(pids) == 2, pids
    before = scrape(base)
    calls = 0
    while calls < 200 and (calls < 10 or not all(calls_served_by(metrics_dir, pid) > 0 for pid in pids)):
        with httpx.Client(timeout=30) as client:  # a new connection each time: either worker may accept it
            kind, _ = tool_result(mcp_call(client, base, token, "get_ticker", {"symbol": "BTCUSDT"}))
        assert kind == "ok"
        calls += 1
    served = {pid: calls_served_by(metrics_dir, pid) for pid in pids}
    assert all(n > 0 for n in served.values()), f"one worker took every connection: {served}"
    fills = 0
    with httpx.Client(timeout=30) as client:
        for i in range(3):
            kind, order = tool_result(mcp_call(client, base, token, "place_order",
                                               {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.002"}))
            assert kind == "ok" and order["status"] == "FILLED", order
            fills += len(order["fills"])
    after = scrape(base)
    delta = lambda name, **labels: value(after, name, **labels) - value(before, name, **labels)  # noqa: E731
    assert delta("tradingmcp_mcp_calls_total", tool="get_ticker", transport="http", outcome="ok") == calls
    assert delta("tradingmcp_mcp_call_seconds_count", tool="get_ticker", transport="http") == calls
    assert delta("tradingmcp_mcp_calls_total", tool="place_order", transport="http", outcome="ok") == 3
    assert delta("tradingmcp_orders_total", venue="paper", type="MARKET", status="FILLED") == 3
    assert delta("tradingmcp_fills_total", venue="paper", side="BUY") == fills
    assert value(after, "tradingmcp_ingest_messages_total", stream="btcusdt@bookTicker") > 0  # the ingester's file
    print(f"\nget_ticker calls per web worker: {served}")


def test_mcp_order_and_its_celery_task_share_the_request_id(ops_stack, trader, make_user, fernet_key):
    from notifications.services import channel_create
    from risk.services import agent_token_create
    from trading.services import account_create

    procs, _, base, _ = ops_stack
    exchange_info_sync()
    alice, account, token = trader
    bob = make_user("bob")
    account_create(owner=bob, name="Bob paper")
    _, bob_token = agent_token_create(user=bob, name="bob-agent")
    web_seen, worker_seen = len(json_lines("ops-web")), len(json_lines("ops-worker"))
    with WebhookReceiver() as receiver:
        channel_create(user=alice, url=receiver.url("alice"), events=["fill"])
        channel_create(user=bob, url=receiver.url("bob"), events=["fill"])
        with httpx.Client(timeout=30) as client:
            kind, order = tool_result(mcp_call(client, base, token, "place_order",
                                               {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.002"}))
        assert kind == "ok" and order["status"] == "FILLED", order
        wait_until(lambda: len(receiver.messages("alice")) >= len(order["fills"]), timeout=30, what="the fill notifications")
        time.sleep(1.0)  # a duplicate would arrive now
        assert len(receiver.messages("alice")) == len(order["fills"])
        assert receiver.messages("bob") == []
        assert receiver.messages("alice")[0]["message"].startswith(f"Fill on account #{account.pk}: BUY")

    placed = [r for r in json_lines("ops-web")[web_seen:] if r.get("message") == "order.place ok" and r.get("actor") == "token:alice-agent"]
    assert len(placed) == 1, placed
    request_id = placed[0]["request_id"]
    assert len(request_id) == 16 and placed[0]["account"] == account.pk
    sent = wait_until(lambda: [r for r in json_lines("ops-worker")[worker_seen:] if r.get("logger") == "notifications.tasks"
                               and r.get("outcome") == "sent"], timeout=20, what="the worker's log line")
    assert {r["request_id"] for r in sent} == {request_id}
    assert {r["actor"] for r in sent} == {"token:alice-agent"} and {r["account"] for r in sent} == {account.pk}
    for name in ("ops-web", "ops-worker"):  # the token's name is logged, never the token
        text = (ARTIFACTS / f"fault-{name}.log").read_text(errors="replace")
        assert token not in text and bob_token not in text


def readyz(base: str) -> tuple[int, dict]:
    resp = httpx.get(base + "/readyz", timeout=15)
    return resp.status_code, resp.json()


def test_readyz_follows_the_ingester_dying_and_coming_back(ops_stack):
    procs, _, base, _ = ops_stack
    assert readyz(base)[0] == 200
    procs.kill("ops-ingester")
    status, body = wait_until(lambda: (lambda r: r if r[0] == 503 else None)(readyz(base)), timeout=30,
                              what="/readyz 503 without the ingester")
    assert body["checks"]["ingester"]["status"] == "fail" and body["checks"]["ingester"]["age_s"] > 5
    assert body["checks"]["redis"]["status"] == "ok"
    procs.manage("ops-ingester", "ingest", "--symbols", "BTCUSDT")
    wait_until(lambda: readyz(base)[0] == 200, timeout=60, what="/readyz 200 with the ingester back")


def test_readyz_follows_redis_going_down_and_up(ops_stack):
    procs, redis, base, _ = ops_stack
    wait_until(lambda: readyz(base)[0] == 200, timeout=60, what="a ready stack")
    redis.kill()
    status, body = readyz(base)
    assert status == 503
    assert body["checks"]["redis"]["status"] == "fail" and body["checks"]["database"]["status"] == "ok"
    assert httpx.get(base + "/healthz", timeout=5).status_code == 200  # alive, just not ready
    redis.start()  # same port, empty: the ingester reconnects and writes quotes again
    wait_until(lambda: readyz(base)[0] == 200, timeout=90, what="/readyz 200 with Redis back")
