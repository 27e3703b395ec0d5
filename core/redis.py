"""Redis connections shared by every app: one process-wide synchronous client (``get_redis``) and
asyncio clients (``async_redis``: a new one; ``async_redis_shared``: one per running event loop).
Keys are the callers' (each app names its own under ``settings.REDIS_KEY_PREFIX``)."""
from __future__ import annotations

import asyncio
from functools import lru_cache

import redis
import redis.asyncio as aredis
from django.conf import settings


@lru_cache(maxsize=1)
def get_redis() -> redis.Redis:
    """Process-wide synchronous Redis client (connection-pooled, thread-safe)."""
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=5, health_check_interval=30)


def async_redis() -> aredis.Redis:
    """A new asyncio Redis client (one per event loop; the caller closes it). redis-py parses
    replies with hiredis when it is installed (it is pinned). Its pool holds at most
    ``REDIS_ASYNC_MAX_CONNECTIONS`` connections; a caller beyond that waits up to
    ``REDIS_POOL_TIMEOUT_S`` for one (``BlockingConnectionPool``) instead of failing, so a burst of
    concurrent calls queues."""
    pool = aredis.BlockingConnectionPool.from_url(
        settings.REDIS_URL, max_connections=settings.REDIS_ASYNC_MAX_CONNECTIONS, timeout=settings.REDIS_POOL_TIMEOUT_S,
        socket_timeout=5, socket_connect_timeout=5, health_check_interval=30)
    return aredis.Redis(connection_pool=pool)


_shared_async: dict = {}


def async_redis_shared() -> aredis.Redis:
    """The asyncio Redis client of the running event loop, created once per loop and kept (for
    servers whose loop lives as long as the process, e.g. the MCP endpoint under daphne/uvicorn).

    Clients of loops that have closed since (short-lived loops: ``async_to_sync`` per call, tests)
    are forgotten here; their sockets close with their loop's transports.
    """
    loop = asyncio.get_running_loop()
    client = _shared_async.get(loop)
    if client is None:
        for dead in [lp for lp in _shared_async if lp.is_closed()]:
            _shared_async.pop(dead)
        client = _shared_async[loop] = async_redis()
    return client


async def async_redis_shared_close() -> None:
    """Close and forget the running loop's shared client (for short-lived loops, e.g. tests)."""
    client = _shared_async.pop(asyncio.get_running_loop(), None)
    if client is not None:
        await client.aclose()
