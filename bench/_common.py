"""What the benchmarks share: ports, waiting for a server, the paused replay exchange with
exchangeInfo synced and quotes cached, and the bare FastMCP reference server's tool.

Import after ``django.setup()`` (``replay_with_quotes`` uses the ORM). Not a test.
"""
from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 30) -> None:
    """Return once ``url`` answers HTTP at all; ``SystemExit`` after ``timeout`` seconds."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not come up")


def replay_with_quotes():
    """Migrate, start the replay exchange in-process (free port, clock paused so quotes and books
    stay still), point the settings at it, sync exchangeInfo and cache the live quotes as the
    ingester does (``tests/conftest.cache_quotes``). Returns the ``ReplayServer`` (stop it)."""
    from django.conf import settings
    from django.core.management import call_command

    from replay.server import ReplayServer
    from marketdata.services import exchange_info_sync

    call_command("migrate", verbosity=0)
    vacuum_if_postgres()
    replay = ReplayServer(port=0, speed=1.0)
    replay.start()
    replay.clock.pause()
    settings.BINANCE_API_URL, settings.BINANCE_STREAM_URL = replay.api_url, replay.stream_url
    exchange_info_sync()
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import cache_quotes  # the ingester's snapshot path, used by the tests too

    cache_quotes()
    return replay


def vacuum_if_postgres() -> None:
    """``VACUUM ANALYZE`` the benchmark database (PostgreSQL; nothing on SQLite), so every run
    starts from the same state whatever earlier runs left.

    Every order rewrites its account's balance and position rows. With autovacuum off (as on
    this project's machines: ``SHOW autovacuum``), the dead row versions of earlier runs piled up
    and the planner had no statistics: in session 7 one account's ``place_order`` at 32
    connections fell from 372 to ~105 calls/s over a dozen runs, and came back after one
    VACUUM ANALYZE."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    connection.ensure_connection()
    with connection.cursor() as cur:  # VACUUM cannot run in a transaction: Django autocommits here
        cur.execute("VACUUM ANALYZE")


def bare_fastmcp(redis_url: str, key_prefix: str):
    """The bare reference server: a FastMCP app (stateless JSON, no auth) whose ``get_ticker`` is
    one Redis GET of the cached bookTicker, as ours reads it. Returns the ``FastMCP`` instance."""
    import orjson
    import redis.asyncio as aredis
    from mcp.server.fastmcp import FastMCP

    mcp = FastMCP("bare", stateless_http=True, json_response=True, log_level="WARNING")
    redis = aredis.Redis.from_url(redis_url)

    @mcp.tool()
    async def get_ticker(symbol: str) -> dict:
        """Latest best bid/ask of a symbol from the Redis cache."""
        raw = await redis.get(f"{key_prefix}md:book:{symbol.upper()}")
        return orjson.loads(raw) if raw else {}

    return mcp
