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

import contextvars
from collections.abc import Callable
from contextlib import contextmanager

import orjson
from django.conf import settings

from core.redis import async_redis_shared, get_redis


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


# --- read-ahead: cache keys a request will read, fetched with its token check ---------------------
#
# A read tool registers which cache keys a call will read (``read_ahead_register``). The MCP
# endpoints (``mcpapi.endpoint``, ``mcpapi.ws``) fetch those keys in the same pipelined
# Redis round trip as the token check and rate-limit count, and run the call inside
# ``read_ahead(values)``; ``mget_async`` then answers from those values instead of a second round
# trip. The values are the same reads, made microseconds earlier, within the same request; nothing
# outlives the request (the context is reset when it ends). A key that was not read ahead (or a
# call outside any read-ahead) goes to Redis as before.

_READ_AHEAD_TOOLS: dict[str, Callable[[dict], list[str]]] = {}
_read_ahead_values: contextvars.ContextVar[dict | None] = contextvars.ContextVar("md_read_ahead", default=None)


def read_ahead_register(tool: str, keys: Callable[[dict], list[str]]) -> None:
    """Declare that MCP tool ``tool`` reads ``keys(arguments)`` (full Redis key names). ``keys`` must
    not raise for any argument shape: it returns [] when it cannot tell."""
    _READ_AHEAD_TOOLS[tool] = keys


def read_ahead_keys(method: str, params) -> list[str]:
    """The cache keys a JSON-RPC request (``method``, ``params``) will read, [] if unknown."""
    if method != "tools/call" or not isinstance(params, dict):
        return []
    keys_fn = _READ_AHEAD_TOOLS.get(params.get("name"))
    args = params.get("arguments")
    if keys_fn is None or not isinstance(args, dict):
        return []
    try:
        return list(keys_fn(args))
    except Exception:  # noqa: BLE001 - a bad argument is the tool's to report, not the read-ahead's
        return []


@contextmanager
def read_ahead(values: dict[str, bytes | None] | None):
    """Within the block, ``mget_async`` answers keys in ``values`` (key -> raw value or None)."""
    token = _read_ahead_values.set(values or None)
    try:
        yield
    finally:
        _read_ahead_values.reset(token)


async def mget_async(*keys: str) -> list[bytes | None]:
    """MGET ``keys`` on the shared asyncio client, or from the current request's read-ahead when
    it holds every one of them. Raises ``redis.RedisError`` as MGET does."""
    ahead = _read_ahead_values.get()
    if ahead is not None and all(k in ahead for k in keys):
        return [ahead[k] for k in keys]
    return await async_redis_shared().mget(*keys)


def mget(*keys: str) -> list[bytes | None]:
    """``mget_async`` for sync code (a tool running in the tool pool sees its request's read-ahead:
    the context travels with ``sync_to_async``). Raises ``redis.RedisError`` as MGET does."""
    ahead = _read_ahead_values.get()
    if ahead is not None and all(k in ahead for k in keys):
        return [ahead[k] for k in keys]
    return get_redis().mget(*keys)
