"""Where sync Django code runs when called from the event loop: a bounded pool of worker threads
(``MCP_TOOL_THREADS``) and one serial thread, each call between two ``close_old_connections()``
as Django runs a request. Used by the MCP transports' sync tools and by selectors that read the
database from async code. A shared helper: it imports nothing of the product."""
from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as futures_wait

from asgiref.sync import AsyncToSync, SyncToAsync, sync_to_async
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, close_old_connections, connections

TOOL_THREADS = settings.MCP_TOOL_THREADS
_pool = ThreadPoolExecutor(max_workers=TOOL_THREADS, thread_name_prefix="mcp-tool")
_serial = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mcp-tool-serial")


def _in_caller_thread() -> bool:
    """Is this coroutine driven by sync code (``async_to_sync``) or inside a
    ``ThreadSensitiveContext``? Then sync code must run in that thread (Django's rule)."""
    return getattr(AsyncToSync.executors, "current", None) is not None or \
        SyncToAsync.thread_sensitive_context.get(None) is not None


HEALTH_CHECK_FRESH_S = 1.0
_last_clean = threading.local()  # per worker thread: when its connection last ended a call cleanly


def _hygienic_call(fn, args: tuple, kwargs: dict):
    """``fn(*args, **kwargs)`` between two ``close_old_connections()``, as Django runs a request:
    the worker thread's connection is reused only while ``CONN_MAX_AGE`` allows and it is healthy.

    Django's ``CONN_HEALTH_CHECKS`` would ping the connection (``SELECT 1``) before every call; a
    connection that ended its previous call without error less than ``HEALTH_CHECK_FRESH_S`` ago
    is used without that ping (``health_check_done``, a documented attribute of Django's database
    wrapper). If the server dropped it within that second, that one call fails with a database
    error and the connection is replaced after it, as Django does after any error."""
    close_old_connections()
    db = connections[DEFAULT_DB_ALIAS]
    if db.connection is not None and time.monotonic() - getattr(_last_clean, "at", -1e9) < HEALTH_CHECK_FRESH_S:
        db.health_check_done = True
    clean = False
    try:
        result = fn(*args, **kwargs)
        clean = True
        return result
    finally:
        close_old_connections()
        _last_clean.at = time.monotonic() if clean and db.connection is not None and not db.errors_occurred else -1e9


def with_db_hygiene(fn):
    """``fn`` wrapped to run as ``_hygienic_call`` runs it."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        return _hygienic_call(fn, args, kwargs)

    return run


def mark_connection_idle() -> None:
    """Forget that this thread's connection was used within ``HEALTH_CHECK_FRESH_S`` (tests)."""
    _last_clean.at = -1e9


async def run_sync(fn, /, *args, serial: bool = False, **kwargs):
    """Run sync ``fn(*args, **kwargs)`` (Django ORM code allowed) from the event loop: in the
    calling thread when there is one (see ``_in_caller_thread``), else in the tool pool, or on the
    serial thread when ``serial``, under a copy of the caller's context variables (the identity,
    the read-ahead values), as ``_hygienic_call``."""
    if _in_caller_thread():
        return await sync_to_async(fn)(*args, **kwargs)
    executor = _serial if serial else _pool
    context = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(executor, context.run, _hygienic_call, fn, args, kwargs)


def submit_to_pool(fn):
    """Run ``fn()`` on one of the tool pool's threads (tests); returns a ``concurrent.futures.Future``."""
    return _pool.submit(fn)


def close_tool_connections(timeout: float = 10.0) -> None:
    """Close the database connections of every tool worker thread (e.g. before dropping a test
    database, or at shutdown). Blocks until each worker has run the close or ``timeout`` (s)."""
    for executor, n in ((_pool, TOOL_THREADS), (_serial, 1)):
        barrier = threading.Barrier(n)

        def close(barrier=barrier):
            connections.close_all()
            try:  # hold this worker until every other one has a close job too: one per thread
                barrier.wait(timeout)
            except threading.BrokenBarrierError:
                pass

        futures_wait([executor.submit(close) for _ in range(n)], timeout)
