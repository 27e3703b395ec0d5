"""The MCP hot path's dispatch (``mcpapi.guard.mcp_tool``): async tools awaited on the
event loop, sync tools in a bounded worker pool instead of django-mcp-server's one shared thread,
and the pool threads' database connections reused or closed as Django's settings say.

These tests drive ``mcpapi.endpoint.MCPEndpoint`` in-process from ``asyncio.run`` (as an ASGI
server does: no ``async_to_sync`` caller thread), so the pool is what runs the sync tools; the
database is transactional so the worker threads see the test's rows.
"""
import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as futures_wait

import pytest
from asgiref.sync import async_to_sync
from django.db import connection, connections

from marketdata import selectors
from mcpapi import guard as mcp_guard
from core import workers
from risk.audit import audit_drain
from risk.models import AuditEvent, Outcome
from risk.services import agent_token_create

pytestmark = [pytest.mark.django_db(transaction=True)]


async def _post(endpoint, token, name, arguments):
    """One ``tools/call`` through the endpoint's ASGI interface → (is_error, payload)."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": {"name": name, "arguments": arguments}}).encode()
    scope = {"type": "http", "method": "POST", "path": "/mcp", "client": ("127.0.0.1", 1), "headers": [(b"host", b"localhost"),
        (b"authorization", f"Bearer {token}".encode()), (b"content-type", b"application/json"),
        (b"accept", b"application/json, text/event-stream"), (b"mcp-protocol-version", b"2025-06-18")]}
    out = {"body": b""}
    sent = []

    async def receive():
        if sent:
            await asyncio.sleep(3600)
        sent.append(1)
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
        else:
            out["body"] += message.get("body", b"")

    await endpoint(scope, receive, send)
    assert out["status"] == 200, out
    result = json.loads(out["body"])["result"]
    text = result["content"][0]["text"]
    return result["isError"], (text if result["isError"] else json.loads(text))


def run_on_loop(coro_fn, timeout=60):
    """Run ``coro_fn()`` on a fresh event loop in this thread (no ``async_to_sync`` caller), then
    close the loop's shared Redis client."""
    from core.redis import async_redis_shared_close

    async def main():
        try:
            return await asyncio.wait_for(coro_fn(), timeout)
        finally:
            await async_redis_shared_close()

    return asyncio.run(main())


@pytest.fixture
def endpoint():
    from mcpapi.endpoint import MCPEndpoint

    yield MCPEndpoint()
    workers.close_tool_connections()


@pytest.fixture
def reader(trader):
    """A market:read token of the trader (user, plain token)."""
    user, _, _ = trader
    _, key = agent_token_create(user=user, name="reader", scopes=["market:read"])
    return user, key


def test_tools_are_guarded_where_declared_and_listed_through_fastmcp():
    """Every tool of the one server is declared with ``mcp_tool`` (a guarded coroutine function
    FastMCP awaits) and listed through FastMCP's public ``list_tools()``; the hot reads are
    ``async def`` at their declaration, the rest are sync and run in the pool."""
    import inspect

    from mcpapi.tools import marketdata as md_tools
    from mcpapi.tools import trading as trading_tools

    listed = {t.name for t in async_to_sync(mcp_guard.SERVER.list_tools)()}
    assert listed == set(mcp_guard.TOOL_SCOPES)
    assert inspect.iscoroutinefunction(md_tools.get_ticker.__wrapped__)
    assert inspect.iscoroutinefunction(md_tools.get_market_data.__wrapped__)
    assert not inspect.iscoroutinefunction(md_tools.get_klines.__wrapped__)
    assert not inspect.iscoroutinefunction(trading_tools.place_order.__wrapped__)


def test_async_tool_answers_while_every_pool_thread_is_busy(endpoint, quotes, reader, monkeypatch):
    """get_ticker does not wait for a thread: with all pool workers held inside list_markets, it
    still answers (with the old one-thread dispatch it would wait behind them); then the held calls
    finish too."""
    _, token = reader
    release = threading.Event()
    inside = threading.Semaphore(0)
    real = selectors.markets_list

    def held(**kwargs):
        inside.release()
        assert release.wait(20), "never released"
        return real(**kwargs)

    monkeypatch.setattr(selectors, "markets_list", held)

    async def scenario():
        # Warm up: the token identity and the Symbol row are cached as in a running server (a cold
        # Symbol cache would send its one DB lookup to the pool too).
        assert not (await _post(endpoint, token, "get_ticker", {"symbol": "BTCUSDT"}))[0]
        held_calls = [asyncio.create_task(_post(endpoint, token, "list_markets", {"page_size": 2}))
                      for _ in range(workers.TOOL_THREADS)]
        for _ in range(workers.TOOL_THREADS):  # every worker is inside list_markets
            while not inside.acquire(blocking=False):
                await asyncio.sleep(0.01)
        ticker = await _post(endpoint, token, "get_ticker", {"symbol": "btcusdt"})
        release.set()
        return ticker, await asyncio.gather(*held_calls)

    try:
        (is_error, ticker), listed = run_on_loop(scenario)
    finally:
        release.set()
    assert not is_error, ticker
    assert ticker["bidPrice"] == quotes["BTCUSDT"]["bidPrice"] and ticker["askPrice"] == quotes["BTCUSDT"]["askPrice"]
    assert all(not err and len(payload["markets"]) == 2 for err, payload in listed)


def test_sync_tools_overlap_in_the_pool(endpoint, symbols, reader, monkeypatch):
    """N sync calls are inside the tool at the same time (a barrier of N that would time out if the
    calls ran one after another, as on django-mcp-server's single thread)."""
    _, token = reader
    n = min(3, workers.TOOL_THREADS)
    barrier = threading.Barrier(n, timeout=20)
    threads = set()
    real = selectors.markets_list

    def meet(**kwargs):
        threads.add(threading.current_thread().name)
        barrier.wait()
        return real(**kwargs)

    monkeypatch.setattr(selectors, "markets_list", meet)

    async def scenario():
        return await asyncio.gather(*[_post(endpoint, token, "list_markets", {"page_size": 1}) for _ in range(n)])

    results = run_on_loop(scenario)
    assert all(not err and payload["total"] > 1 for err, payload in results), results
    assert len(threads) == n and all(t.startswith("mcp-tool") for t in threads)


def test_async_path_keeps_scopes_symbol_limits_errors_and_audit(endpoint, quotes, trader):
    user, _, _ = trader
    token_obj, token = agent_token_create(user=user, name="eth-only", scopes=["market:read"])
    token_obj.symbols = ["ETHUSDT"]
    token_obj.save()
    _, no_market = agent_token_create(user=user, name="account-only", scopes=["account:read"])

    async def scenario():
        return (await _post(endpoint, token, "get_ticker", {"symbol": "ETHUSDT"}),
                await _post(endpoint, token, "get_ticker", {"symbol": "BTCUSDT"}),
                await _post(endpoint, token, "get_market_data", {"symbols": ["ETHUSDT", "NOPEUSDT"]}),
                await _post(endpoint, no_market, "get_ticker", {"symbol": "ETHUSDT"}))

    ok, other_symbol, unknown, no_scope = run_on_loop(scenario)
    assert not ok[0] and ok[1]["symbol"] == "ETHUSDT"
    assert other_symbol[0] and "only ETHUSDT" in other_symbol[1]
    assert unknown[0] and "NOPEUSDT" in unknown[1]
    assert no_scope[0] and "market:read" in no_scope[1]
    audit_drain()
    events = list(AuditEvent.objects.filter(action__in=["mcp.get_ticker", "mcp.get_market_data"]).order_by("id"))
    assert [(e.action, e.outcome, e.actor_token_id) for e in events if e.actor_token_id == token_obj.pk] == [
        ("mcp.get_ticker", Outcome.OK, token_obj.pk), ("mcp.get_ticker", Outcome.REJECTED, token_obj.pk),
        ("mcp.get_market_data", Outcome.REJECTED, token_obj.pk)]
    assert all(e.actor_user_id == user.pk and e.request_id and e.latency_ms is not None for e in events)
    assert sum(1 for e in events if e.actor_token_id not in (token_obj.pk,) and e.outcome == Outcome.REJECTED) == 1


def test_async_and_sync_selectors_agree(quotes):
    assert async_to_sync(selectors.quote_get_async)("BTCUSDT") == selectors.quote_get("BTCUSDT")
    assert async_to_sync(selectors.market_data_async)(["BTCUSDT", "ETHUSDT"]) == selectors.market_data(["BTCUSDT", "ETHUSDT"])
    assert [s.symbol for s in async_to_sync(selectors.symbols_check_async)("ethusdt, btcusdt,ETHUSDT")] == ["ETHUSDT", "BTCUSDT"]
    for bad in ("BTCUSDX", "", "BTC-USDT"):
        with pytest.raises(Exception) as sync_err:
            selectors.symbol_get(bad)
        with pytest.raises(Exception) as async_err:
            async_to_sync(selectors.symbol_get_async)(bad)
        assert type(async_err.value) is type(sync_err.value) and str(async_err.value) == str(sync_err.value)


def test_a_tool_called_without_a_bound_identity_is_refused(quotes):
    """``FastMCP.call_tool()`` outside any transport (no identity bound) is a permission error,
    not a call as nobody."""
    result = async_to_sync(mcp_guard.call_tool)("get_ticker", {"symbol": "ETHUSDT"})
    assert result.isError and "No credential" in result.content[0].text


def test_a_tool_called_through_fastmcp_with_an_identity_answers(quotes, reader):
    """The same tool, called through the public ``call_tool`` with an identity from the shared
    authenticator bound, answers."""
    from risk.authentication import authenticate_bearer

    identity = authenticate_bearer(f"Bearer {reader[1]}")

    async def call():
        with mcp_guard.identity_bound(identity):
            return await mcp_guard.call_tool("get_ticker", {"symbol": "ETHUSDT"})

    result = async_to_sync(call)()
    assert not result.isError
    out = json.loads(result.content[0].text)
    assert out["symbol"] == "ETHUSDT" and out["askPrice"] == quotes["ETHUSDT"]["askPrice"]


def _worker_connections_open() -> list[bool]:
    """Whether each tool worker thread holds an open DB connection (one probe per thread)."""
    n = workers.TOOL_THREADS
    barrier = threading.Barrier(n, timeout=10)

    def probe():
        is_open = connections["default"].connection is not None
        barrier.wait()
        return is_open

    futures = [workers.submit_to_pool(probe) for _ in range(n)]
    futures_wait(futures, 15)
    return [f.result() for f in futures]


def _server_connections() -> int | None:
    """This process's open connections to the database server (PostgreSQL), else None.

    Counted on our side (established TCP sockets to the server's port, ``psutil``), not in
    ``pg_stat_activity``: with ``CONN_MAX_AGE=0`` every call closes its connection and opens a
    new one, and a backend whose client has gone stays listed there a moment while it exits, so
    the server's count could exceed the bound with no connection leaked (this test's old flake)."""
    if connection.vendor != "postgresql":
        return None
    import psutil

    port = int(connection.settings_dict.get("PORT") or 5432)
    return sum(1 for c in psutil.Process().net_connections(kind="tcp")
               if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED)


def _count_and_close():
    try:
        return _server_connections()
    finally:
        connections.close_all()


@pytest.mark.parametrize("max_age", [0, 60])
def test_pool_threads_do_not_leak_database_connections(endpoint, symbols, reader, monkeypatch, max_age):
    """40 concurrent DB-reading calls use at most one connection per worker thread; with
    CONN_MAX_AGE=0 each is closed after its call, with 60 they stay for reuse until
    ``close_tool_connections``. On PostgreSQL the process's own sockets to the server are counted too."""
    _, token = reader
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", max_age)
    workers.close_tool_connections()
    baseline = _server_connections()
    peak = []
    probe = ThreadPoolExecutor(max_workers=1)  # one thread: the probe adds at most one connection

    async def scenario():
        async def one():
            out = await _post(endpoint, token, "list_markets", {"page_size": 2})
            peak.append(await asyncio.get_running_loop().run_in_executor(probe, _count_and_close))
            return out

        return await asyncio.gather(*[one() for _ in range(40)])

    try:
        results = run_on_loop(scenario)
    finally:
        probe.shutdown()
    assert all(not err and len(payload["markets"]) == 2 for err, payload in results), results[:3]
    still_open = _worker_connections_open()
    if max_age == 0:
        assert not any(still_open)
    else:
        assert any(still_open)
    if baseline is not None:  # the probe's own thread adds one connection
        assert max(peak) <= baseline + workers.TOOL_THREADS + 1, (baseline, peak)
    workers.close_tool_connections()
    assert not any(_worker_connections_open())
    if baseline is not None:
        assert _server_connections() <= baseline


@pytest.mark.django_db(transaction=True)
def test_a_connection_fresh_from_a_clean_call_skips_the_health_check_ping(monkeypatch):
    """A pool thread's connection that ended a call cleanly under a second ago is not pinged
    (``SELECT 1``) before the next call; one idle for longer is, as Django's CONN_HEALTH_CHECKS
    would before every call."""
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 60)  # connections kept between calls
    pings = []
    cls = type(connections["default"])
    real = cls.is_usable
    monkeypatch.setattr(cls, "is_usable", lambda self: pings.append(1) or real(self))

    def query():
        with connections["default"].cursor() as cur:
            cur.execute("SELECT 1")
            return cur.fetchone()[0]

    call = workers.with_db_hygiene(query)

    def in_a_worker_thread():
        try:
            assert call() == 1 and call() == 1 and call() == 1  # opened, then reused at once
            fresh = len(pings)
            workers.mark_connection_idle()  # as if idle for a second
            assert call() == 1
            return fresh, len(pings)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=1) as pool:
        assert pool.submit(in_a_worker_thread).result() == (0, 1)


def test_concurrent_async_calls_are_each_audited_once(endpoint, quotes, reader):
    """The async audit path appends the entries of concurrent calls in shared batches (group
    commit): every call still gets exactly one write-ahead entry, hence one AuditEvent."""
    user, token = reader
    n = 25

    async def scenario():
        return await asyncio.gather(*[_post(endpoint, token, "get_ticker", {"symbol": s})
                                      for s in ["BTCUSDT", "ETHUSDT", "NOPE"] * (n // 3) + ["BTCUSDT"]])

    results = run_on_loop(scenario)
    assert len(results) == n and sum(1 for err, _ in results if err) == n // 3
    audit_drain()
    events = list(AuditEvent.objects.filter(action="mcp.get_ticker", actor_user=user))
    assert len(events) == n and len({e.request_id for e in events}) == n
    assert sorted(e.outcome for e in events).count(Outcome.REJECTED) == n // 3
    assert {e.params["symbol"] for e in events if e.outcome == Outcome.OK} == {"BTCUSDT", "ETHUSDT"}


def test_entries_redis_refuses_are_written_to_the_database_before_the_answer(endpoint, quotes, reader):
    """When Redis refuses the appends (here: the stream key holds a string, so XADD answers
    WRONGTYPE), every call's event is in ``AuditEvent`` by the time the call answered, once each,
    without the drainer."""
    from core.redis import get_redis
    from risk.audit import audit_stream_key

    user, token = reader
    get_redis().set(audit_stream_key(), "not a stream")
    try:
        async def scenario():
            return await asyncio.gather(*[_post(endpoint, token, "get_ticker", {"symbol": "BTCUSDT"}) for _ in range(6)])

        results = run_on_loop(scenario)
        events = list(AuditEvent.objects.filter(action="mcp.get_ticker", actor_user=user))
    finally:
        get_redis().delete(audit_stream_key())
    assert all(not err for err, _ in results)
    assert len(events) == 6 and len({e.request_id for e in events}) == 6


def test_get_ticker_reads_its_quote_with_the_token_check_and_never_a_stale_one(endpoint, quotes, reader, monkeypatch):
    """Once the token is known to the process, get_ticker's quote keys ride in the token-check
    pipeline (``cache.read_ahead``): the tool makes no MGET of its own. Each call reads afresh: a
    quote rewritten between two calls is what the second call answers, and a call outside an
    endpoint request (no read-ahead) still reads Redis."""
    from marketdata import cache

    _, token = reader
    mgets = []
    real_shared = cache.async_redis_shared

    class Counting:
        def __init__(self, client):
            self._client = client

        def __getattr__(self, name):
            return getattr(self._client, name)

        async def mget(self, *keys):
            mgets.append(keys)
            return await self._client.mget(*keys)

    monkeypatch.setattr(cache, "async_redis_shared", lambda: Counting(real_shared()))
    book_key = cache.book_key("BTCUSDT")

    async def scenario():
        first = await _post(endpoint, token, "get_ticker", {"symbol": "BTCUSDT"})  # token not yet memoized
        before = len(mgets)
        second = await _post(endpoint, token, "get_ticker", {"symbol": "btcusdt"})
        after_second = len(mgets)
        book = cache.loads(cache.get_redis().get(book_key))
        cache.get_redis().set(book_key, cache.dumps({**book, "bidPrice": "1234.50000000"}))
        third = await _post(endpoint, token, "get_ticker", {"symbol": "BTCUSDT"})
        direct = await selectors.quote_get_async("BTCUSDT")  # outside any request: a real MGET
        return first, second, third, before, after_second, direct

    first, second, third, before, after_second, direct = run_on_loop(scenario)
    assert not first[0] and not second[0] and not third[0]
    assert before == 1 and after_second == before, mgets  # the second call made no MGET of its own
    assert second[1]["bidPrice"] == first[1]["bidPrice"] == quotes["BTCUSDT"]["bidPrice"]
    assert third[1]["bidPrice"] == "1234.50000000"  # read in this request, not reused from the last
    assert len(mgets) == 2 and str(direct.bid_price) == "1234.50000000"


def test_place_order_reads_its_quote_with_the_token_check(endpoint, quotes, trader, monkeypatch):
    """place_order (a pool tool) takes its quote from the token-check pipeline too: once the token
    is known to the process, the order makes no MGET of its own (the values are read afresh in
    each request: see the get_ticker test above)."""
    from marketdata import cache

    user, account, token = trader
    mgets = []
    real_get_redis = cache.get_redis

    class Counting:
        def __init__(self, client):
            self._client = client

        def __getattr__(self, name):
            return getattr(self._client, name)

        def mget(self, *keys):
            mgets.append(keys)
            return self._client.mget(*keys)

    monkeypatch.setattr(cache, "get_redis", lambda: Counting(real_get_redis()))

    async def scenario():
        out = [await _post(endpoint, token, "place_order", {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.002"})]
        counted = len(mgets)  # the first call of a token reads the quote itself
        out.append(await _post(endpoint, token, "place_order", {"symbol": "btcusdt", "side": "BUY", "quantity": "0.002"}))
        return out, counted, len(mgets)

    (first, second), counted, after = run_on_loop(scenario)
    assert not first[0] and not second[0], (first, second)
    assert quote_keys_read(mgets, "BTCUSDT") == counted == 1 and after == counted, mgets
    assert first[1]["status"] == second[1]["status"] == "FILLED"


def quote_keys_read(mgets, symbol):
    from marketdata.selectors import quote_keys

    return sum(1 for keys in mgets if tuple(keys) == tuple(quote_keys(symbol)))


def test_calls_queued_on_one_account_leave_the_pool_to_other_accounts(endpoint, quotes, trader, monkeypatch):
    """Trading calls on one account queue in the process (``mcp_guard._account_queue``) before
    taking a worker thread: while one order on account A is held inside its transaction and more
    orders for A wait, an order on account B still gets a thread and fills."""
    from trading import services
    from trading.models import Balance
    from trading.services import account_create

    user, account_a, token = trader
    account_b = account_create(owner=user, name="Second")
    Balance.objects.filter(account=account_b, asset="USDT").update(free=10_000)
    release = threading.Event()
    held = threading.Event()
    real_place = services.order_place

    def slow_on_a(*, account, **kw):
        if account.pk == account_a.pk and not release.is_set():
            held.set()
            release.wait(30)  # an order of A holds its thread (as a long transaction would)
        return real_place(account=account, **kw)

    monkeypatch.setattr(services, "order_place", slow_on_a)
    args = {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.002"}

    async def scenario():
        on_a = [asyncio.ensure_future(_post(endpoint, token, "place_order", {**args, "account_id": account_a.pk}))
                for _ in range(workers.TOOL_THREADS + 2)]
        await asyncio.get_running_loop().run_in_executor(None, held.wait, 10)
        try:
            on_b = await asyncio.wait_for(_post(endpoint, token, "place_order", {**args, "account_id": account_b.pk}), 10)
        finally:
            release.set()
        return on_b, await asyncio.gather(*on_a)

    on_b, on_a = run_on_loop(scenario)
    assert not on_b[0] and on_b[1]["status"] == "FILLED" and on_b[1]["accountId"] == account_b.pk, on_b
    assert all(not err and payload["status"] == "FILLED" for err, payload in on_a), on_a


def test_a_burst_of_concurrent_calls_queues_for_redis_rather_than_failing(endpoint, quotes, reader, settings):
    """200 concurrent calls on a worker whose Redis pool holds 10 connections: every call waits
    for a connection (``BlockingConnectionPool``) and answers; none gets 503."""
    settings.REDIS_ASYNC_MAX_CONNECTIONS = 10
    _, token = reader

    async def burst():
        return await asyncio.gather(*[_post(endpoint, token, "get_ticker", {"symbol": "BTCUSDT"}) for _ in range(200)])

    results = run_on_loop(burst, timeout=60)
    assert all(not is_error and payload["symbol"] == "BTCUSDT" for is_error, payload in results)
