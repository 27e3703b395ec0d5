"""Readiness checks behind ``/readyz``: each answers ``Check(name, ok, age_s, detail)``.

- ``database``: ``SELECT 1`` on the default connection.
- ``redis``: ``PING`` (1 s timeouts, its own client: a hung Redis must not hang the probe).
- ``channel_layer``: one message sent to a fresh channel of the Channels layer and received back.
- ``venue``: ``GET <BINANCE_API_URL>/v3/ping`` (Binance Spot API "Test connectivity").
- ``ingester``: age of the newest ``receivedAt`` of the watched symbols' cached bookTicker
  (``marketdata.cache``, written by the ingester on every batch); fails above ``READYZ_INGEST_MAX_AGE_S``.
- ``beat``: age of the heartbeat ``ops.tasks.beat_heartbeat`` writes (scheduled by Celery beat,
  run by a worker); fails above ``READYZ_BEAT_MAX_AGE_S``.
- ``matcher``: a process holds the paper matcher's lease (``core.leader``); age = seconds
  until the lease would expire.

Which checks make ``/readyz`` answer 503 is ``settings.READYZ_REQUIRED``; the rest are reported only.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass
from functools import lru_cache

import httpx
import redis
from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import connection

from core.leader import lease_key
from marketdata.selectors import ingester_age_s

BEAT_KEY = "ops:beat"  # under REDIS_KEY_PREFIX: wall ms UTC of the last beat heartbeat


@dataclass
class Check:
    """One check's answer: ``ok``, ``age_s`` (seconds since the thing checked last proved alive,
    when that applies), ``detail`` (what failed or what was found) and ``ms`` (the check's own time)."""

    name: str
    ok: bool
    age_s: float | None = None
    detail: str = ""
    ms: float = 0.0

    def as_dict(self, required: bool) -> dict:
        data = asdict(self)
        data.pop("name")
        data["required"] = required
        data["status"] = "ok" if self.ok else "fail"
        return data


@lru_cache(maxsize=1)
def probe_redis() -> redis.Redis:
    """A Redis client with 1 s timeouts for the probes (connection-pooled, reconnects by itself)."""
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1)


def beat_key() -> str:
    return f"{settings.REDIS_KEY_PREFIX}{BEAT_KEY}"


def beat_heartbeat_write(now_ms: int | None = None) -> None:
    """Record that beat (and a worker) are alive: ``SET <prefix>ops:beat <wall ms UTC>``."""
    probe_redis().set(beat_key(), str(now_ms if now_ms is not None else int(time.time() * 1000)))


def _error(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


def check_database() -> Check:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        return Check("database", True, detail=connection.vendor)
    except Exception as exc:
        return Check("database", False, detail=_error(exc))


def check_redis() -> Check:
    try:
        probe_redis().ping()
        return Check("redis", True)
    except Exception as exc:
        return Check("redis", False, detail=_error(exc))


def check_channel_layer() -> Check:
    from channels.layers import get_channel_layer

    async def roundtrip():
        layer = get_channel_layer()
        channel = await layer.new_channel("readyz.")
        await layer.send(channel, {"type": "readyz.ping"})
        return await layer.receive(channel)

    try:
        message = async_to_sync(asyncio.wait_for)(roundtrip(), 2.0)
        return Check("channel_layer", message.get("type") == "readyz.ping")
    except Exception as exc:
        return Check("channel_layer", False, detail=_error(exc) or "timed out")


def check_venue() -> Check:
    url = settings.BINANCE_API_URL.rstrip("/") + "/v3/ping"
    try:
        response = httpx.get(url, timeout=2.0)
        return Check("venue", response.status_code == 200, detail=f"HTTP {response.status_code}")
    except Exception as exc:
        return Check("venue", False, detail=_error(exc))


def check_ingester() -> Check:
    try:
        age = ingester_age_s(client=probe_redis())
    except Exception as exc:
        return Check("ingester", False, detail=_error(exc))
    if age is None:
        return Check("ingester", False, detail="no market data received yet")
    limit = settings.READYZ_INGEST_MAX_AGE_S
    return Check("ingester", age <= limit, round(age, 3), "" if age <= limit else f"last message {age:.1f} s ago (limit {limit:g} s)")


def check_beat() -> Check:
    try:
        raw = probe_redis().get(beat_key())
    except Exception as exc:
        return Check("beat", False, detail=_error(exc))
    if raw is None:
        return Check("beat", False, detail="no heartbeat yet")
    age = max(0.0, (time.time() * 1000 - int(raw)) / 1000.0)
    limit = settings.READYZ_BEAT_MAX_AGE_S
    return Check("beat", age <= limit, round(age, 3), "" if age <= limit else f"last heartbeat {age:.1f} s ago (limit {limit:g} s)")


def check_matcher() -> Check:
    key = lease_key(settings.READYZ_MATCHER_LEASE)
    try:
        pipe = probe_redis().pipeline(transaction=False)
        pipe.get(key)
        pipe.pttl(key)
        holder, ttl_ms = pipe.execute()
    except Exception as exc:
        return Check("matcher", False, detail=_error(exc))
    if holder is None:
        return Check("matcher", False, detail=f"no process holds the lease {settings.READYZ_MATCHER_LEASE!r}")
    return Check("matcher", True, round(max(ttl_ms, 0) / 1000.0, 3), "leader present")


CHECKS = {
    "database": check_database,
    "redis": check_redis,
    "channel_layer": check_channel_layer,
    "venue": check_venue,
    "ingester": check_ingester,
    "beat": check_beat,
    "matcher": check_matcher,
}


def readiness() -> tuple[bool, dict]:
    """Run every check; return (ready, JSON body). Ready when every required check passed."""
    required = set(settings.READYZ_REQUIRED)
    results = {}
    ready = True
    for name, run in CHECKS.items():
        t0 = time.perf_counter()
        check = run()
        check.ms = round((time.perf_counter() - t0) * 1000, 2)
        results[name] = check.as_dict(name in required)
        if name in required and not check.ok:
            ready = False
    return ready, {"status": "ok" if ready else "fail", "checks": results}
