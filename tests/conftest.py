"""Shared fixtures: the real replay exchange, real Redis, and the stack as real processes.

Nothing here mocks a service: market data comes from the replay exchange (recorded real Binance
data) through python-binance, quotes go through Redis, and the end-to-end fixture runs the web server
and the ingester as subprocesses on free ports against the test database.
"""
from __future__ import annotations

import asyncio
import importlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from django.conf import settings

from replay.server import ReplayServer

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"

ON_POSTGRES = "postgresql" in settings.DATABASES["default"]["ENGINE"]

# A fast password hasher for the users the tests create, here and in the servers they start (which
# inherit the environment; project/settings.py reads it): PBKDF2 was most of many tests' set-up.
os.environ["PASSWORD_HASHERS_FAST"] = "1"
settings.PASSWORD_HASHERS = settings.TEST_PASSWORD_HASHERS
# For slow tests whose subject never touches the database (Redis, the channel layer, WebSocket
# sessions): run once, in the SQLite pass, to keep `make test` inside CI's 20 minutes.
sqlite_pass_only = pytest.mark.skipif(ON_POSTGRES, reason="database-independent: runs in the SQLite pass")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float = 20.0, interval: float = 0.1, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # not ready yet
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last error: {last_exc!r})")


@pytest.fixture(scope="session")
def replay():
    """The replay exchange on a free port, 1x speed, clock starting now; settings point at it."""
    server = ReplayServer(port=0, speed=1.0)
    server.start()
    old = (settings.BINANCE_API_URL, settings.BINANCE_STREAM_URL, settings.BINANCE_WS_API_URL)
    settings.BINANCE_API_URL, settings.BINANCE_STREAM_URL = server.api_url, server.stream_url
    settings.BINANCE_WS_API_URL = server.ws_api_url
    yield server
    settings.BINANCE_API_URL, settings.BINANCE_STREAM_URL, settings.BINANCE_WS_API_URL = old
    server.stop()


@pytest.fixture(autouse=True)
def _clean_redis():
    """Each test starts with none of this run's cached market data (Redis and in-process order
    books), cached tokens, pending audit entries or paper-matcher cursors (the database rolls back
    between tests; the caches must follow)."""
    yield
    from core.redis import get_redis
    from marketdata.selectors import symbol_cache_clear
    from trading.market import depth_forget

    symbol_cache_clear()
    depth_forget()  # the paper engine's in-process order books belong to this test's replay exchange
    r = get_redis()
    for pattern in ("md:*", "auth:*", "audit:*", "ratelimit:*", "paper:*", "mcp:unauth:*"):
        keys = list(r.scan_iter(match=f"{settings.REDIS_KEY_PREFIX}{pattern}", count=500))
        if keys:
            r.delete(*keys)


def _transactional(request) -> bool:
    marker = request.node.get_closest_marker("django_db")
    return bool(marker and marker.kwargs.get("transaction")) or bool(
        {"transactional_db", "live_server", "django_db_reset_sequences"} & set(request.fixturenames))


@pytest.fixture(autouse=True)
def _fresh_channel_layer():
    """Each test gets its own channel-layer object (channels' public ``ChannelLayerManager.set``,
    documented for swapping the backend in tests). channels-redis lets one event loop at a time
    ``receive()`` on a layer object: a receive a previous test's event loop left pending (a socket
    or session pump of a loop that was closed, not cancelled) would otherwise make every later
    in-process socket fail with "bound to a different event loop"."""
    from channels.layers import DEFAULT_CHANNEL_LAYER, channel_layers

    channel_layers.set(DEFAULT_CHANNEL_LAYER, channel_layers.make_backend(DEFAULT_CHANNEL_LAYER))
    yield


@pytest.fixture(autouse=True)
def _sqlite_audit_flush(request):
    """A transactional test's database is emptied by Django's flush, which on SQLite is a
    ``DELETE FROM`` per table (PostgreSQL's TRUNCATE fires no row trigger): the audit log's
    append-only triggers (risk migration 0010) would refuse it. For such a test on SQLite, empty
    the audit table first with the triggers lifted, then put them back, in one transaction."""
    if not _transactional(request):
        yield
        return
    request.getfixturevalue("transactional_db")  # torn down (flushed) after this fixture
    yield
    from django.db import connection, transaction

    if connection.vendor != "sqlite":
        return
    migration = importlib.import_module("risk.migrations.0010_auditevent_sqlite_append_only_triggers")
    with transaction.atomic(), connection.cursor() as cur:
        for sql in migration.SQLITE_DROP:
            cur.execute(sql)
        cur.execute("DELETE FROM risk_auditevent")
        for sql in migration.SQLITE_CREATE:
            cur.execute(sql)


@pytest.fixture
def symbols(db, replay):
    """exchangeInfo of the replay exchange, stored through the real sync service."""
    from marketdata.services import exchange_info_sync

    exchange_info_sync()
    return replay


def cache_quotes(symbol_names=("BTCUSDT", "ETHUSDT")) -> list[dict]:
    """Snapshot bookTickers from the venue into the Redis cache, as the ingester does on connect."""
    from marketdata.binance import make_async_client
    from core.redis import async_redis
    from marketdata.ingester import snapshot_book_tickers

    async def run():
        client = await make_async_client()
        redis = async_redis()
        try:
            return await snapshot_book_tickers(client, redis, list(symbol_names))
        finally:
            await client.close_connection()
            await redis.aclose()

    return asyncio.run(run())


@pytest.fixture
def quotes(symbols):
    """Symbols stored and live quotes cached (the replay clock paused so they stay current)."""
    symbols.clock.pause()
    try:
        yield {b["symbol"]: b for b in cache_quotes()}
    finally:
        symbols.clock.resume()


@pytest.fixture
def make_user(django_user_model):
    def make(username: str, password: str = "pw-for-tests-1"):
        return django_user_model.objects.create_user(username=username, password=password)

    return make


@pytest.fixture
def trader(make_user):
    """A user with a 10,000 USDT paper account and an agent token: (user, account, plain_token)."""
    from risk.services import agent_token_create
    from trading.services import account_create

    user = make_user("alice")
    account = account_create(owner=user, name="Paper")
    _, key = agent_token_create(user=user, name="alice-agent")
    return user, account, key


class Stack:
    """The production web server (as ``runstack`` starts it) and the ingester as subprocesses, against
    the test database, the replay exchange and real Redis."""

    def __init__(self, replay_server, db_url: str):
        self.replay = replay_server
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "DATABASE_URL": db_url,
            "BINANCE_VENUE": "replay",
            "BINANCE_API_URL": replay_server.api_url,
            "BINANCE_STREAM_URL": replay_server.stream_url,
            "BINANCE_WS_API_URL": replay_server.ws_api_url,
            "REDIS_KEY_PREFIX": settings.REDIS_KEY_PREFIX,
            "REDIS_URL": settings.REDIS_URL,
            "PYTHONUNBUFFERED": "1",
            "DEBUG": "1",
            "PUBLIC_BASE_URL": self.base_url,  # the OAuth issuer and MCP resource URL (oauth app)
        }
        self.procs: dict[str, subprocess.Popen] = {}
        ARTIFACTS.mkdir(exist_ok=True)

    def _spawn(self, name, args):
        log = open(ARTIFACTS / f"{name}.log", "w")
        self.procs[name] = subprocess.Popen(args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def start(self):
        from trading.management.commands.runstack import web_server_command

        bindir = Path(sys.executable).parent
        self._spawn("web", web_server_command(bindir, "127.0.0.1", self.port).split())
        self._spawn("ingester", [sys.executable, "manage.py", "ingest"])
        wait_until(lambda: httpx.get(self.base_url + "/login/", timeout=2).status_code == 200, timeout=30, what="the web server")
        return self

    def stop(self):
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:  # the web server's graceful shutdown waits for open sockets: 3 s, then it is killed
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def subprocess_database_url() -> str:
    """A DATABASE_URL for subprocesses that names the test database pytest-django created."""
    from django.db import connection

    s = connection.settings_dict
    if s["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{s['NAME']}"
    user = s.get("USER") or ""
    password = f":{s['PASSWORD']}" if s.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    return f"postgres://{auth}{s.get('HOST') or '127.0.0.1'}:{s.get('PORT') or 5432}/{s['NAME']}"


@pytest.fixture(scope="session")
def stack(django_db_setup, django_db_blocker, replay):
    """The running stack (session-wide). Tests that use it need ``transactional_db``."""
    with django_db_blocker.unblock():
        db_url = subprocess_database_url()
    s = Stack(replay, db_url).start()
    yield s
    s.stop()


@pytest.fixture
def paused_stack(stack, transactional_db):
    """The running stack with exchangeInfo stored and the ingester's first BTCUSDT quote cached;
    the replay clock is paused during the test, so quotes, candles and the book stay what they are
    between two reads (a prompt or resource and the tool it mirrors read the same values)."""
    from marketdata.cache import book_key, get_redis
    from marketdata.services import exchange_info_sync

    exchange_info_sync()
    wait_until(lambda: get_redis().get(book_key("BTCUSDT")), timeout=30, what="the ingester's first BTCUSDT quote")
    stack.replay.clock.pause()
    try:
        yield stack
    finally:
        stack.replay.clock.resume()


@pytest.fixture
def live_stack(stack, symbols):
    """The running stack with exchangeInfo stored and live BTCUSDT and ETHUSDT quotes cached by its
    ingester (for tests that place orders through it). Needs ``transactional_db``."""
    from marketdata.cache import book_key, get_redis

    for name in ("BTCUSDT", "ETHUSDT"):
        wait_until(lambda: get_redis().get(book_key(name)), timeout=30, what=f"a {name} quote on the stack")
    return stack
