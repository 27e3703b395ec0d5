"""Pushes to the dashboard over the Channels layer (Redis), sent after the transaction commits:
``account.<id>`` groups (orders, balances, activity of one account) and ``user.<id>`` groups
(a user's account-less activity).

Sending is asynchronous and ordered: ``publish_account_event`` hands the message to one
background event loop per process (started lazily, restarted after a fork) whose single worker
``group_send``s messages in the order they were committed. The caller never waits for Redis (an
``async_to_sync`` round trip per push cost several ms per order); a push that fails is logged, never
raised: the booking it reports has already happened.
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading

from channels.layers import get_channel_layer
from django.db import transaction

log = logging.getLogger(__name__)


def account_group(account_id: int) -> str:
    """Channels group of one account's events (orders, fills, balances, activity)."""
    return f"account.{account_id}"


def user_group(user_id: int) -> str:
    """Channels group of one user's own account-less events (e.g. an agent's market reads)."""
    return f"user.{user_id}"


class _Publisher:
    """One daemon thread with an event loop and an ordered queue of ``(group, message)``."""

    def __init__(self):
        self._lock = threading.Lock()
        self._pid = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue | None = None

    def _ensure(self) -> None:
        if self._pid == os.getpid() and self._loop is not None:
            return
        with self._lock:
            if self._pid == os.getpid() and self._loop is not None:
                return
            ready = threading.Event()

            def run():
                loop = asyncio.new_event_loop()
                asyncio.set_event_loop(loop)
                self._loop, self._queue = loop, asyncio.Queue()
                loop.create_task(self._worker())
                ready.set()
                loop.run_forever()

            threading.Thread(target=run, name="account-events", daemon=True).start()
            ready.wait(5)
            self._pid = os.getpid()

    async def _worker(self) -> None:
        layer = get_channel_layer()
        while True:
            group, message = await self._queue.get()
            try:
                await layer.group_send(group, message)
            except Exception as exc:
                log.warning("push of %s to %s failed: %s: %s", message.get("kind"), group, type(exc).__name__, exc)

    def put(self, group: str, message: dict) -> None:
        self._ensure()
        self._loop.call_soon_threadsafe(self._queue.put_nowait, (group, message))

    def drain(self, timeout: float = 5.0) -> None:
        """Wait until every queued message was sent (tests, shutdown)."""
        if self._loop is None or self._pid != os.getpid():
            return

        async def wait_empty():
            while not self._queue.empty():
                await asyncio.sleep(0.005)

        asyncio.run_coroutine_threadsafe(wait_empty(), self._loop).result(timeout)


_publisher = _Publisher()


def publish_account_event(account_id: int, kind: str, data: dict) -> None:
    """Send ``{"kind": kind, "account": account_id, "data": data}`` to the account's group once
    the current transaction commits (at once outside a transaction); never blocks on Redis."""
    _send_on_commit(account_group(account_id), {"type": "account.event", "kind": kind, "account": account_id, "data": data})


def publish_user_event(user_id: int, kind: str, data: dict) -> None:
    """Send ``{"kind": kind, "user": user_id, "data": data}`` to the user's own group (only that
    user's dashboard sockets join it) once the current transaction commits; never blocks."""
    _send_on_commit(user_group(user_id), {"type": "user.event", "kind": kind, "user": user_id, "data": data})


def _send_on_commit(group: str, message: dict) -> None:
    """Hand ``message`` to the publisher once the current transaction commits; a failure is logged."""
    def send():
        try:
            _publisher.put(group, message)
        except Exception as exc:
            log.warning("push of %s to %s failed: %s: %s", message.get("kind"), group, type(exc).__name__, exc)

    transaction.on_commit(send)


def drain_account_events(timeout: float = 5.0) -> None:
    """Block until queued pushes were handed to the channel layer."""
    _publisher.drain(timeout)
