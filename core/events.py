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
import collections
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable

from channels.layers import get_channel_layer
from django.db import transaction
from redis.exceptions import TimeoutError as RedisTimeout

log = logging.getLogger(__name__)


def account_group(account_id: int) -> str:
    """Channels group of one account's events (orders, fills, balances, activity)."""
    return f"account.{account_id}"


def user_group(user_id: int) -> str:
    """Channels group of one user's own account-less events (e.g. an agent's market reads)."""
    return f"user.{user_id}"


BATCH_TYPE = "events.batch"  # a channel-layer message carrying several messages to one group


class _Publisher:
    """One daemon thread with an event loop that sends ``(group, message)`` items in the order
    they were put.

    ``put`` appends to a deque and wakes the loop only when it is not already due to run, and the
    worker sends consecutive items of one group as one ``events.batch`` message (``{"type":
    "events.batch", "messages": [...]}``; consumers dispatch each): an order's order, balances and
    activity events cost one wake-up and one ``group_send`` instead of three of each.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._pid = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._items: collections.deque = collections.deque()
        self._wake: asyncio.Event | None = None
        self._wake_due = False  # a wake-up is scheduled and the worker has not taken the items yet
        self._busy = False  # the worker is sending what it took

    def _ensure(self) -> None:
        if self._pid == os.getpid() and self._loop is not None:
            return
        with self._lock:
            if self._pid == os.getpid() and self._loop is not None:
                return
            ready = threading.Event()
            self._items = collections.deque()  # after a fork: the parent's queue is not ours
            self._wake_due = self._busy = False

            def run():
                loop = asyncio.new_event_loop()
                asyncio.set_event_loop(loop)
                self._loop, self._wake = loop, asyncio.Event()
                loop.create_task(self._worker())
                ready.set()
                loop.run_forever()

            threading.Thread(target=run, name="account-events", daemon=True).start()
            ready.wait(5)
            self._pid = os.getpid()

    async def _worker(self) -> None:
        layer = get_channel_layer()
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._busy, self._wake_due = True, False
            try:
                while self._items:
                    taken = []
                    while self._items:
                        taken.append(self._items.popleft())
                    runs = _runs(taken)
                    for group, messages in runs:
                        message = messages[0] if len(messages) == 1 else {"type": BATCH_TYPE, "messages": messages}
                        try:
                            await layer.group_send(group, message)
                        except Exception as exc:
                            log.warning("push of %s to %s failed: %s: %s", [m.get("kind") for m in messages], group,
                                        type(exc).__name__, exc)
            finally:
                self._busy = False

    def put(self, group: str, message: dict) -> None:
        self.put_many([(group, message)])

    def put_many(self, items: list[tuple[str, dict]]) -> None:
        """Queue ``(group, message)`` items, in order, with one wake-up of the worker."""
        self._ensure()
        self._items.extend(items)
        if not self._wake_due:
            self._wake_due = True
            self._loop.call_soon_threadsafe(self._wake.set)

    def drain(self, timeout: float = 5.0) -> None:
        """Wait until every queued message was sent (tests, shutdown)."""
        if self._loop is None or self._pid != os.getpid():
            return

        async def wait_empty():
            while self._items or self._wake_due or self._busy:
                await asyncio.sleep(0.005)

        asyncio.run_coroutine_threadsafe(wait_empty(), self._loop).result(timeout)


def _runs(items: list[tuple[str, dict]]) -> list[tuple[str, list[dict]]]:
    """``(group, message)`` items as runs of consecutive messages to the same group, in order."""
    runs: list[tuple[str, list[dict]]] = []
    for group, message in items:
        if runs and runs[-1][0] == group:
            runs[-1][1].append(message)
        else:
            runs.append((group, [message]))
    return runs


_publisher = _Publisher()


def publish_account_event(account_id: int, kind: str, data: dict | Callable[[], dict]) -> None:
    """Send ``{"kind": kind, "account": account_id, "data": data}`` to the account's group once
    the current transaction commits (at once outside a transaction); never blocks on Redis.
    ``data`` may be a function returning it, called then (e.g. a row's id known only at commit)."""
    publish_account_events(account_id, [(kind, data)])


def publish_account_events(account_id: int, events: list[tuple[str, dict | Callable[[], dict]]]) -> None:
    """``publish_account_event`` for several ``(kind, data)`` at once: handed to the publisher
    together, so they leave as one ``events.batch`` message (one Redis ``group_send``)."""
    _send_on_commit([(account_group(account_id), {"type": "account.event", "kind": kind, "account": account_id, "data": data})
                     for kind, data in events])


def publish_user_event(user_id: int, kind: str, data: dict | Callable[[], dict]) -> None:
    """Send ``{"kind": kind, "user": user_id, "data": data}`` to the user's own group (only that
    user's dashboard sockets join it) once the current transaction commits; never blocks.
    ``data`` as in ``publish_account_event``."""
    _send_on_commit([(user_group(user_id), {"type": "user.event", "kind": kind, "user": user_id, "data": data})])


def _send_on_commit(items: list[tuple[str, dict]]) -> None:
    """Hand ``(group, message)`` items to the publisher once the current transaction commits (a
    message's ``data`` called first when it is a function); a failure is logged."""
    def send():
        try:
            for _, message in items:
                if callable(message["data"]):
                    message["data"] = message["data"]()
            _publisher.put_many(items)
        except Exception as exc:
            log.warning("push of %s failed: %s: %s", [(g, m.get("kind")) for g, m in items], type(exc).__name__, exc)

    transaction.on_commit(send)


def drain_account_events(timeout: float = 5.0) -> None:
    """Block until queued pushes were handed to the channel layer."""
    _publisher.drain(timeout)


async def layer_messages(layer, channel: str, *, stop: Callable[[], bool], name: str) -> AsyncIterator[dict]:
    """The messages of ``channel`` on the Channels ``layer``, in order, until ``stop()`` is true
    (checked before each receive). A receive that times out with nothing popped (redis-py >= 6
    raises on channels-redis's 5 s BZPOPMIN of an empty channel) is simply retried; any other
    failure is logged under ``name`` and retried after a backoff doubling from 0.1 s to 5 s."""
    backoff = 0.1
    while not stop():
        try:
            message = await layer.receive(channel)
            backoff = 0.1
        except asyncio.CancelledError:
            raise
        except RedisTimeout:
            continue
        except Exception as exc:
            log.warning("%s: channel layer receive failed: %s", name, exc)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
            continue
        yield message
