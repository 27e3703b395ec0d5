"""The latest-market-data cache in Redis, shared by the ingester (writer) and every reader.

Keys (all under ``settings.REDIS_KEY_PREFIX``):
- ``md:book:<SYMBOL>``: the latest bookTicker as JSON: ``symbol, bidPrice, bidQty, askPrice,
  askQty, updateId`` (Binance's names, numbers as strings) plus ``receivedAt`` (wall ms UTC).
- ``md:kline:<SYMBOL>:<interval>``: the latest kline event's ``k`` object (the forming candle).
- ``md:last:<stream>``: the latest message (Binance's event payload) of any ingested stream.
- ``md:buf:<stream>``: the stream's recent messages, newest first, at most
  ``settings.MARKET_STREAM_BUFFER`` (LPUSH + LTRIM, pipelined by the ingester).
- ``md:ticker24h:<SYMBOL>``: the symbol's latest ``GET /api/v3/ticker/24hr`` entry (beat, each minute).
- ``md:streams:wanted`` (set) and ``md:streams:version`` (int): the streams users subscribed to;
  the ingester re-reads the set whenever the version changes.
"""
from __future__ import annotations

import socket
from functools import lru_cache

import orjson
import redis
import redis.asyncio as aredis
from django.conf import settings


@lru_cache(maxsize=1)
def get_redis() -> redis.Redis:
    """Process-wide synchronous Redis client (connection-pooled, thread-safe)."""
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=5, health_check_interval=30)


def async_redis() -> aredis.Redis:
    """A new asyncio Redis client (one per event loop; the caller closes it)."""
    return aredis.Redis.from_url(settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=5, health_check_interval=30)


_shared_async: dict = {}


def _release_dead_loop_client(client: aredis.Redis) -> None:
    """Let Redis drop the connections of a client whose event loop has closed (they can no longer
    be awaited): shut the sockets down so the server frees them at once."""
    pool = client.connection_pool
    for conn in list(getattr(pool, "_available_connections", ())) + list(getattr(pool, "_in_use_connections", ())):
        writer = getattr(conn, "_writer", None)
        sock = writer.transport.get_extra_info("socket") if writer is not None else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except (OSError, TypeError):  # uvloop sockets refuse shutdown() from another loop
                pass


def async_redis_shared() -> aredis.Redis:
    """The asyncio Redis client of the running event loop, created once per loop and kept (for
    servers whose loop lives as long as the process, e.g. the MCP endpoint under daphne/uvicorn).

    Clients of loops that have closed since (short-lived loops: ``async_to_sync`` per call, tests)
    are released here, so their connections do not pile up on the Redis server.
    """
    import asyncio

    loop = asyncio.get_running_loop()
    client = _shared_async.get(loop)
    if client is None:
        for dead in [lp for lp in _shared_async if lp.is_closed()]:
            _release_dead_loop_client(_shared_async.pop(dead))
        client = _shared_async[loop] = async_redis()
    return client


async def async_redis_shared_close() -> None:
    """Close and forget the running loop's shared client (for short-lived loops, e.g. tests)."""
    import asyncio

    client = _shared_async.pop(asyncio.get_running_loop(), None)
    if client is not None:
        await client.aclose()


def book_key(symbol: str) -> str:
    return f"{settings.REDIS_KEY_PREFIX}md:book:{symbol}"


def kline_key(symbol: str, interval: str) -> str:
    return f"{settings.REDIS_KEY_PREFIX}md:kline:{symbol}:{interval}"


def dumps(value) -> bytes:
    return orjson.dumps(value)


def loads(raw: bytes | None):
    return None if raw is None else orjson.loads(raw)


def last_key(stream: str) -> str:
    return f"{settings.REDIS_KEY_PREFIX}md:last:{stream}"


def buffer_key(stream: str) -> str:
    return f"{settings.REDIS_KEY_PREFIX}md:buf:{stream}"


def ticker_24h_key(symbol: str) -> str:
    return f"{settings.REDIS_KEY_PREFIX}md:ticker24h:{symbol}"


def streams_wanted_key() -> str:
    return f"{settings.REDIS_KEY_PREFIX}md:streams:wanted"


def streams_version_key() -> str:
    return f"{settings.REDIS_KEY_PREFIX}md:streams:version"
