"""``project.fastredis``: the pipelined Redis lane of the MCP hot path, against the machine's real
Redis (and, for connection failures, a local TCP server that misbehaves on purpose), and the
audit write-ahead routes that rest on it (``risk.audit.audit_enqueue_async``)."""
import asyncio
import uuid

import pytest
from django.conf import settings
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from project import fastredis
from risk.models import AuditEvent


def run(coro):
    return asyncio.run(coro)


def key(name: str) -> str:
    return f"{settings.REDIS_KEY_PREFIX}md:fastredis-test:{uuid.uuid4().hex[:8]}:{name}"


def test_concurrent_callers_each_get_their_own_replies_in_order():
    """Many tasks share one connection; every reply reaches the task that asked (Redis answers
    a connection's commands in order)."""
    async def main():
        lane = await fastredis.connect(settings.REDIS_URL)
        keys = [key(str(i)) for i in range(300)]

        async def one(i):
            k = keys[i]
            out = await lane.execute(("SET", k, f"v{i}"), ("INCRBY", k + ":n", i), ("GET", k), ("MGET", k, k + ":none"))
            return out

        try:
            results = await asyncio.gather(*[one(i) for i in range(300)])
            await lane.execute(("DEL", *keys, *[k + ":n" for k in keys]))
        finally:
            lane.close()
        return results

    results = run(main())
    for i, out in enumerate(results):
        assert out == [b"OK", i, f"v{i}".encode(), [f"v{i}".encode(), None]]


def test_an_error_reply_raises_and_the_lane_stays_usable():
    async def main():
        lane = await fastredis.connect(settings.REDIS_URL)
        k = key("s")
        try:
            await lane.execute(("SET", k, "text"))
            with pytest.raises(ResponseError, match="not an integer"):
                await lane.execute(("GET", k), ("INCR", k))
            replies = []
            lane.send(("INCR", k), replies.append)
            lane.send(("GET", k), replies.append)
            assert await lane.execute(("DEL", k)) == [1]
            return replies
        finally:
            lane.close()

    refused, value = run(main())
    assert isinstance(refused, ResponseError) and "not an integer" in str(refused)
    assert value == b"text"


async def _server(handler):
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, f"redis://127.0.0.1:{server.sockets[0].getsockname()[1]}/0"


def test_a_lost_connection_fails_every_waiting_command_and_the_next_call_reconnects():
    """A server that reads one command and hangs up: the waiting future and the waiting callback
    both get ConnectionError; ``lane()`` then connects again (here, to the real Redis)."""
    async def hang_up(reader, writer):
        await reader.read(100)
        writer.close()

    async def main():
        server, url = await _server(hang_up)
        lane = await fastredis.connect(url)
        got = []
        lane.send(("XADD", "s", "*", "e", "1"), got.append)
        with pytest.raises(RedisConnectionError):
            await lane.execute(("GET", "k"))
        server.close()
        assert not lane.usable
        with pytest.raises(RedisConnectionError):
            lane.send(("GET", "k"), got.append)  # not connected: refused at once
        return got

    got = run(main())
    assert len(got) == 1 and isinstance(got[0], RedisConnectionError)

    async def reconnects():
        dead = await fastredis.connect(settings.REDIS_URL)
        dead.close()
        await dead.closed
        fastredis._lanes[asyncio.get_running_loop()] = dead
        fresh = await fastredis.lane()
        try:
            return fresh is not dead, await fresh.execute(("PING",))
        finally:
            await fastredis.close_lane()

    assert run(reconnects()) == (True, [b"PONG"])


def test_a_reply_overdue_drops_the_connection(monkeypatch):
    """A server that never answers: after REPLY_TIMEOUT_S the waiting command fails."""
    monkeypatch.setattr(fastredis, "REPLY_TIMEOUT_S", 0.3)

    async def silent(reader, writer):
        await reader.read(100)
        await asyncio.sleep(5)

    async def main():
        server, url = await _server(silent)
        lane = await fastredis.connect(url)
        try:
            with pytest.raises(RedisConnectionError, match="did not answer"):
                await asyncio.wait_for(lane.execute(("GET", "k")), 3)
        finally:
            server.close()
        return lane.usable

    assert run(main()) is False


def test_unreachable_redis_is_a_connection_error():
    async def main():
        with pytest.raises(RedisConnectionError, match="cannot connect"):
            await fastredis.connect("redis://127.0.0.1:1/0")

    run(main())


# --- the audit append over the lane ---------------------------------------------------------------

def _enqueue(**event):
    from marketdata.cache import async_redis_shared_close
    from risk.audit import audit_enqueue_async

    async def main():
        try:
            await audit_enqueue_async(**event)
        finally:
            await async_redis_shared_close()  # waits for Redis's reply (and its fallback, if any)
            from risk import audit

            while audit._fallbacks:
                await asyncio.gather(*audit._fallbacks, return_exceptions=True)

    run(main())


@pytest.mark.django_db(transaction=True)
def test_the_async_append_reaches_the_stream_and_the_drain_writes_it_once(trader):
    from risk.audit import audit_drain

    user, account, _ = trader
    _enqueue(channel="mcp", action="mcp.get_ticker", outcome="ok", actor_user=user, account=account, params={"n": 1})
    assert not AuditEvent.objects.filter(action="mcp.get_ticker").exists()  # in the stream, not yet a row
    assert audit_drain() == 1
    row = AuditEvent.objects.get(action="mcp.get_ticker")
    assert row.params == {"n": 1} and row.account_id == account.pk and len(row.wal_id) == 32


@pytest.mark.django_db(transaction=True)
def test_an_append_redis_refuses_is_written_to_the_database(trader, monkeypatch):
    """XADD onto a key of the wrong type is refused by Redis after the call has answered: the
    event is written to the database instead, and nothing is left for the drain."""
    from marketdata.cache import get_redis
    from risk import audit

    user, account, _ = trader
    wrong = key("not-a-stream")
    get_redis().set(wrong, "x")
    monkeypatch.setattr(audit, "audit_stream_key", lambda: wrong)
    try:
        _enqueue(channel="mcp", action="mcp.get_ticker", outcome="ok", actor_user=user, account=account, params={"n": 2})
    finally:
        get_redis().delete(wrong)
    row = AuditEvent.objects.get(action="mcp.get_ticker")
    assert row.params == {"n": 2} and row.wal_id


@pytest.mark.django_db(transaction=True)
def test_with_redis_unreachable_the_append_is_a_row_before_the_call_returns(trader, settings):
    user, account, _ = trader
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    _enqueue(channel="mcp", action="mcp.get_ticker", outcome="ok", actor_user=user, account=account, params={"n": 3})
    assert AuditEvent.objects.get(action="mcp.get_ticker").params == {"n": 3}


@pytest.mark.django_db(transaction=True)
def test_an_entry_written_by_both_routes_gets_one_row(trader):
    """Redis stored the entry but its reply was lost, so the enqueuer wrote the row itself: the
    drain finds the row by the entry's uid and writes no second one."""
    from marketdata.cache import get_redis
    from risk import audit

    user, account, _ = trader
    payload = audit._wal_payload(dict(channel="mcp", action="mcp.get_ticker", outcome="ok", actor_user=user,
                                      account=account, params={"n": 4}))
    get_redis().xadd(audit.audit_stream_key(), {"e": payload})
    audit._write_fallback([payload])
    assert audit.audit_drain() == 0
    assert AuditEvent.objects.filter(action="mcp.get_ticker").count() == 1
    assert get_redis().xlen(audit.audit_stream_key()) == 0  # acknowledged and deleted all the same
