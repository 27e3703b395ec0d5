"""Per-token rate limits for MCP and REST: a fixed one-minute window counted in Redis.

Each call INCRs ``ratelimit:<token id>:<minute>`` (with a 61 s expiry) in one pipeline round trip;
over the limit, the caller answers HTTP 429 with ``Retry-After`` = seconds to the next window.
The limit is the token's ``rate_limit_per_minute``, else ``settings.TOKEN_RATE_LIMIT_PER_MINUTE``;
0 means unlimited. If Redis cannot be reached the call is allowed (the limit protects the
service, and refusing every call while Redis restarts would be worse) and a warning is logged.
"""
from __future__ import annotations

import logging
import time

from django.conf import settings
from core.redis import async_redis_shared, get_redis

log = logging.getLogger(__name__)


def _token_id(token) -> int:
    """The token id of an ``AgentToken`` row or a ``risk.authentication.Identity``."""
    own = getattr(token, "token_id", None)
    return own if own is not None else token.pk


def limit_for(token) -> int:
    """Calls per minute allowed to ``token`` (0 = unlimited)."""
    own = getattr(token, "rate_limit_per_minute", None)
    return settings.TOKEN_RATE_LIMIT_PER_MINUTE if own is None else own


def window_key(token_id: int, now: float) -> tuple[str, int]:
    """(Redis key of ``token_id``'s count in the minute of ``now`` (s since the epoch), seconds
    left in that minute)."""
    window = int(now // 60)
    return f"{settings.REDIS_KEY_PREFIX}ratelimit:{token_id}:{window}", 60 - int(now % 60)


async def check_async(token) -> int:
    """Count one call of ``token`` (an ``AgentToken`` or an ``Identity``); return 0 if allowed, else the seconds to wait (Retry-After)."""
    limit = limit_for(token)
    if not limit:
        return 0
    key, retry = window_key(_token_id(token), time.time())
    try:
        async with async_redis_shared().pipeline(transaction=False) as pipe:
            count, _ = await pipe.incr(key).expire(key, 61).execute()
    except Exception as exc:
        log.warning("rate limit not enforced (Redis: %s)", exc)
        return 0
    return 0 if count <= limit else max(1, retry)


def check(token) -> int:
    """Synchronous ``check_async`` (for DRF views)."""
    limit = limit_for(token)
    if not limit:
        return 0
    key, retry = window_key(_token_id(token), time.time())
    try:
        pipe = get_redis().pipeline(transaction=False)
        count, _ = pipe.incr(key).expire(key, 61).execute()
    except Exception as exc:
        log.warning("rate limit not enforced (Redis: %s)", exc)
        return 0
    return 0 if count <= limit else max(1, retry)


# --- per client IP, before authentication ------------------------------------------------------------

def unauthenticated_key(ip: str, now: float) -> str:
    """Redis key counting one client IP's requests (``/mcp``) and WebSocket handshakes
    (``/mcp/ws``) without a valid token in the minute of ``now``."""
    return f"{settings.REDIS_KEY_PREFIX}mcp:unauth:{ip}:{int(now // 60)}"


async def unauthenticated_blocked(ip: str) -> bool:
    """Has ``ip`` sent more than ``MCP_UNAUTHENTICATED_PER_MINUTE`` requests or handshakes without a
    valid token this minute? (0 = no limit.) Redis errors allow the request (logged)."""
    limit = settings.MCP_UNAUTHENTICATED_PER_MINUTE
    if not limit:
        return False
    from marketdata.cache import async_redis_shared

    try:
        count = await async_redis_shared().get(unauthenticated_key(ip, time.time()))
    except Exception as exc:
        log.warning("per-IP limit not enforced (Redis: %s)", exc)
        return False
    return count is not None and int(count) > limit


async def unauthenticated_count(ip: str) -> None:
    """Count one request or handshake of ``ip`` that carried no valid token (or failed to authenticate)."""
    from marketdata.cache import async_redis_shared

    key = unauthenticated_key(ip, time.time())
    try:
        async with async_redis_shared().pipeline(transaction=False) as pipe:
            await pipe.incr(key).expire(key, 61).execute()
    except Exception as exc:
        log.warning("per-IP unauthenticated count failed: %s", exc)
