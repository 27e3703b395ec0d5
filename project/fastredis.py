"""A lean, pipelined asyncio Redis connection for the MCP hot path: one per event loop.

Why: every MCP call makes one Redis round trip before it runs (token, rate-limit count and the
keys it will read: ``project.mcp_endpoint.authenticate_count_and_read``) and one audit append
after it (``risk.audit.audit_enqueue_async``). Through redis-py's asyncio client those cost
~125 and ~95 µs of CPU each on this 2-core box (connection pool, timeouts, per-command
response callbacks), more than the rest of a ``get_ticker`` call; the same commands written by
hand to one connection cost ~43 µs per round trip, and an append whose reply is not waited for
~7 µs (``bench/bench_mcp_ws.py`` prints CPU per call).

So the hot path talks to Redis through a ``Lane``: one TCP (or unix) connection per event loop,
an ``asyncio.Protocol`` that writes commands the moment they are issued (``hiredis.pack_command``)
and parses replies with ``hiredis.Reader``, both from the hiredis package redis-py uses. Redis
answers the commands of one connection in the order it received them (Redis docs, "Pipelining"),
so every caller's replies are matched by order: concurrent calls on the loop share the
connection and their commands pipeline naturally.

- ``execute(*commands)``: send now, await the replies (a list, one per command). A Redis error
  reply raises ``redis.exceptions.ResponseError``; a lost connection or a reply overdue by more
  than ``REPLY_TIMEOUT_S`` raises ``redis.exceptions.ConnectionError`` for every command still
  waiting (the connection is dropped; the next call reconnects).
- ``send(command, on_reply)``: write now and return at once; ``on_reply(reply_or_exception)`` runs
  on the loop when Redis answers (or the connection fails). For the audit append: the entry is in
  the kernel's socket buffer towards Redis before the MCP answer goes out, and a refused or lost
  append is written to the database instead (see ``risk.audit``).

Only what the hot path needs: no pub/sub, no blocking commands, no transactions. Everything else
uses redis-py (``marketdata.cache``).
"""
from __future__ import annotations

import asyncio
import collections
import logging
import socket
import time
from collections.abc import Callable, Sequence
from urllib.parse import urlparse

import hiredis
from redis.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

log = logging.getLogger(__name__)

REPLY_TIMEOUT_S = 5.0  # as marketdata.cache's socket_timeout
CONNECT_TIMEOUT_S = 5.0

Command = Sequence  # ("GET", key) ...: str/bytes/int/float arguments


class Lane(asyncio.Protocol):
    """One pipelined Redis connection (see the module docstring). Use ``lane()`` to get the running
    loop's; construct directly only in tests."""

    def __init__(self):
        self._transport: asyncio.Transport | None = None
        self._reader = hiredis.Reader()
        # Waiting callers, in the order their commands were written: [replies still expected,
        # collected replies, future or callback, time sent (monotonic s)].
        self._waiting: collections.deque[list] = collections.deque()
        self._watchdog: asyncio.TimerHandle | None = None
        self.closed = asyncio.get_running_loop().create_future()

    # -- asyncio.Protocol --------------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        waiting = self._waiting
        while True:
            reply = reader.gets()
            if reply is False:
                return
            if not waiting:  # a reply nobody asked for: the stream is out of step, start over
                log.error("fastredis: unexpected reply %r; dropping the connection", reply)
                self._abort(RedisConnectionError("unexpected reply from Redis"))
                return
            entry = waiting[0]
            entry[1].append(reply)
            entry[0] -= 1
            if entry[0] == 0:
                waiting.popleft()
                _deliver(entry[2], entry[1])

    def connection_lost(self, exc) -> None:
        self._transport = None
        self._fail_all(RedisConnectionError(f"connection to Redis lost: {exc or 'closed'}"))
        if self._watchdog is not None:
            self._watchdog.cancel()
        if not self.closed.done():
            self.closed.set_result(None)

    # -- API ---------------------------------------------------------------------------------------
    @property
    def usable(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    def execute(self, *commands: Command) -> asyncio.Future:
        """Send ``commands`` now; await the result for their replies (a list, in order). Raises
        ``ResponseError`` (Redis refused one of them: none of their replies is returned) or
        ``redis.exceptions.ConnectionError`` (not connected, connection lost, reply overdue)."""
        future = asyncio.get_running_loop().create_future()
        self._write(commands, future)
        return future

    def send(self, command: Command, on_reply: Callable[[object], None]) -> None:
        """Send ``command`` now and return; ``on_reply`` gets its reply (bytes, int, list...) or an
        exception (``ResponseError`` for an error reply, ``ConnectionError`` when the connection
        failed first). Raises ``redis.exceptions.ConnectionError`` at once when not connected."""
        self._write((command,), on_reply)

    def close(self) -> None:
        """Close the connection; commands still waiting fail with ``ConnectionError``."""
        if self._transport is not None:
            self._transport.close()

    async def drain(self, timeout: float = REPLY_TIMEOUT_S) -> None:
        """Wait until every command sent so far has its reply (or ``timeout`` s)."""
        if self._waiting and self.usable:
            try:
                await asyncio.wait_for(self.execute(("PING",)), timeout)
            except Exception:
                pass

    # -- internals ---------------------------------------------------------------------------------
    def _write(self, commands, target) -> None:
        if not self.usable:
            raise RedisConnectionError("not connected to Redis")
        data = b"".join([hiredis.pack_command(tuple(c)) for c in commands])
        self._waiting.append([len(commands), [], target, time.monotonic()])
        self._transport.write(data)
        if self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().call_later(REPLY_TIMEOUT_S, self._check_overdue)

    def _check_overdue(self) -> None:
        self._watchdog = None
        if not self._waiting:
            return
        age = time.monotonic() - self._waiting[0][3]
        if age >= REPLY_TIMEOUT_S:
            log.warning("fastredis: no reply from Redis for %.1f s; dropping the connection", age)
            self._abort(RedisConnectionError(f"Redis did not answer within {REPLY_TIMEOUT_S:g} s"))
            return
        self._watchdog = asyncio.get_running_loop().call_later(REPLY_TIMEOUT_S - age, self._check_overdue)

    def _abort(self, exc: Exception) -> None:
        self._fail_all(exc)
        if self._transport is not None:
            self._transport.abort()

    def _fail_all(self, exc: Exception) -> None:
        waiting, self._waiting = self._waiting, collections.deque()
        for entry in waiting:
            _deliver(entry[2], exc)


def _deliver(target, replies) -> None:
    """Hand ``replies`` (a list, or an exception for all of them) to a future or callback."""
    if isinstance(target, asyncio.Future):
        if target.done():
            return
        if isinstance(replies, Exception):
            target.set_exception(replies)
            return
        for reply in replies:
            if isinstance(reply, hiredis.ReplyError):
                target.set_exception(ResponseError(str(reply)))
                return
        target.set_result(replies)
        return
    if not isinstance(replies, Exception):
        replies = replies[0]
        if isinstance(replies, hiredis.ReplyError):
            replies = ResponseError(str(replies))
    try:
        target(replies)
    except Exception:
        log.exception("fastredis: reply callback failed")


async def connect(url: str) -> Lane:
    """A new ``Lane`` connected to ``url`` (``redis://[[user]:password@]host[:port][/db]``,
    ``rediss://`` for TLS, ``unix:///path?db=N``), authenticated and on its database. Raises
    ``redis.exceptions.ConnectionError`` when Redis cannot be reached or refuses the AUTH/SELECT."""
    loop = asyncio.get_running_loop()
    options = parse_url(url)
    lane = Lane()
    try:
        if "path" in options:
            coro = loop.create_unix_connection(lambda: lane, options["path"])
        else:
            ssl = True if urlparse(url).scheme == "rediss" else None
            coro = loop.create_connection(lambda: lane, options.get("host") or "localhost", options.get("port") or 6379, ssl=ssl)
        await asyncio.wait_for(coro, CONNECT_TIMEOUT_S)
        setup = []
        if options.get("password"):
            setup.append(("AUTH", options["username"], options["password"]) if options.get("username")
                         else ("AUTH", options["password"]))
        if options.get("db"):
            setup.append(("SELECT", int(options["db"])))
        if setup:
            await asyncio.wait_for(lane.execute(*setup), CONNECT_TIMEOUT_S)
    except (OSError, asyncio.TimeoutError, ResponseError) as exc:
        lane.close()
        raise RedisConnectionError(f"cannot connect to Redis at {url}: {exc}") from exc
    return lane


_lanes: dict = {}  # event loop → its Lane (or the future of one being connected)


async def lane() -> Lane:
    """The running event loop's connected ``Lane`` to ``settings.REDIS_URL``: created on first use,
    reconnected after a failure. Raises ``redis.exceptions.ConnectionError`` when Redis is down."""
    loop = asyncio.get_running_loop()
    current = _lanes.get(loop)
    if isinstance(current, Lane) and current.usable:
        return current
    if isinstance(current, asyncio.Future):  # another task is connecting: share its outcome
        return await asyncio.shield(current)
    from django.conf import settings

    for dead in [lp for lp in _lanes if lp.is_closed()]:
        _release(_lanes.pop(dead))
    pending = _lanes[loop] = loop.create_future()
    try:
        new = await connect(settings.REDIS_URL)
    except BaseException as exc:
        _lanes.pop(loop, None)
        pending.set_exception(exc if isinstance(exc, Exception) else RedisConnectionError(str(exc)))
        pending.exception()  # retrieved: no "never retrieved" warning when nobody else waited
        raise
    _lanes[loop] = new
    pending.set_result(new)
    return new


def _release(old) -> None:
    """Shut down the socket of a lane whose event loop has closed (it can no longer be awaited), so
    Redis frees the connection at once."""
    shutdown_transport(getattr(old, "_transport", None))


def shutdown_transport(transport) -> None:
    """Shut down the socket under an asyncio ``transport`` (None: nothing) whose event loop has
    closed: the transport can no longer be closed through its loop, but the server sees the
    connection end at once."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except (OSError, TypeError):  # uvloop sockets refuse shutdown() from another loop
            pass


async def close_lane(timeout: float = REPLY_TIMEOUT_S) -> None:
    """Wait for the running loop's outstanding replies (up to ``timeout`` s), then close its
    ``Lane`` (for short-lived loops, e.g. ``async_to_sync`` in tests and commands)."""
    current = _lanes.pop(asyncio.get_running_loop(), None)
    if isinstance(current, Lane):
        await current.drain(timeout)
        current.close()
        try:
            await asyncio.wait_for(asyncio.shield(current.closed), 1.0)
        except asyncio.TimeoutError:
            pass
