"""Leader election for the singleton processes (ingester, paper matcher, user-stream follower).

Run as many copies as you like (two machines, a restart overlapping the old process): exactly one
holds the lease ``<REDIS_KEY_PREFIX>leader:<name>`` in Redis and runs the worker; the others wait
and take over within ``ttl_s`` (+ one poll) after the leader dies, even by SIGKILL.

The lease is Redis's single-instance lock pattern ("Distributed Locks with Redis", redis.io:
``SET key token NX PX ttl``; renew and release only while the value is still our token, checked
and applied atomically in a Lua script). The leader renews it every ``ttl_s / 3``; when it cannot
renew (lease taken, or Redis unreachable for longer than the lease) it stops its worker *before*
the lease can have expired elsewhere, then campaigns again. With Redis restarted (lease lost with
the data) the first process to reach it wins; a worker stopped that way is restarted by the next
term, so the stack recovers by itself.

A single Redis is assumed (no Redlock); the workers are also safe to overlap briefly: the stored
klines are unique per (symbol, interval, open_time) and a fill is booked once per trade id, so the
lease is about not doing the work twice, never about correctness.
"""
from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket
import time
from typing import Callable, Protocol

from django.conf import settings
from django.core.management.base import BaseCommand
from core.redis import async_redis, get_redis

log = logging.getLogger(__name__)

_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"


class Worker(Protocol):
    async def run(self) -> None: ...

    def stop(self) -> None: ...


def lease_key(name: str) -> str:
    """The Redis key of the lease named ``name`` (e.g. ``"ingester"``)."""
    return f"{settings.REDIS_KEY_PREFIX}leader:{name}"


def lease_holder(name: str) -> str | None:
    """Who holds lease ``name`` now (``"<host>:<pid>:<random>"``), or None. For monitoring and tests."""
    value = get_redis().get(lease_key(name))
    return value.decode() if value is not None else None


class LeaderElection:
    """Runs ``make_worker()``'s worker only while this process holds lease ``name``.

    Args:
        name: lease name; one leader per name and ``REDIS_KEY_PREFIX``.
        make_worker: builds a fresh worker (``run()`` coroutine, ``stop()``) for each term.
        ttl_s: lease length in seconds (default ``settings.LEADER_LEASE_S``, 5); a dead leader is replaced after at most ``ttl_s`` + ``poll_s``.
        poll_s: how often a follower tries to take the lease (default ``ttl_s / 5``).
        redis: an asyncio Redis client (default a new one from ``REDIS_URL``; closed at the end).

    Counters for tests and monitoring: ``terms`` (times this process became leader), ``is_leader``.
    ``identity`` is the value stored in the lease.
    """

    def __init__(self, name: str, make_worker: Callable[[], Worker], *, ttl_s: float | None = None,
                 poll_s: float | None = None, redis=None):
        self.name = name
        self.make_worker = make_worker
        default_ttl = settings.LEADER_LEASE_S
        self.ttl_s = float(ttl_s if ttl_s is not None else default_ttl)
        self.poll_s = poll_s if poll_s is not None else max(0.1, self.ttl_s / 5)
        self.key = lease_key(name)
        self.identity = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._redis = redis
        self._stopping = asyncio.Event()
        self._worker: Worker | None = None
        self.terms = 0
        self.is_leader = False

    def stop(self) -> None:
        """Stop the worker (if leading), release the lease and return from ``run()``."""
        self._stopping.set()
        if self._worker is not None:
            self._worker.stop()

    async def run(self) -> None:
        """Campaign, lead, and campaign again until ``stop()``."""
        redis = self._redis or async_redis()
        try:
            while not self._stopping.is_set():
                if await self._acquire(redis):
                    await self._lead(redis)
                else:
                    await self._sleep(self.poll_s)
        finally:
            if self._redis is None:
                await redis.aclose()

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            pass

    async def _acquire(self, redis) -> bool:
        try:
            return bool(await redis.set(self.key, self.identity, nx=True, px=int(self.ttl_s * 1000)))
        except Exception as exc:  # Redis down or restarting: keep campaigning
            log.warning("leader %s: cannot reach Redis to take the lease (%s: %s)", self.name, type(exc).__name__, exc)
            return False

    async def _lead(self, redis) -> None:
        self.terms += 1
        self.is_leader = True
        log.warning("leader %s: %s took the lease (term %d)", self.name, self.identity, self.terms)
        worker = self._worker = self.make_worker()
        task = asyncio.create_task(worker.run())
        renewed_at = time.monotonic()
        reason = "stopped"
        try:
            while not task.done():
                done, _ = await asyncio.wait({task}, timeout=self.ttl_s / 3)
                if done or self._stopping.is_set():
                    break
                try:
                    if await redis.eval(_RENEW, 1, self.key, self.identity, int(self.ttl_s * 1000)):
                        renewed_at = time.monotonic()
                        continue
                    reason = "the lease was taken"
                except Exception as exc:
                    # Not renewed: keep leading while the lease surely has not expired yet.
                    if time.monotonic() - renewed_at < self.ttl_s * 2 / 3:
                        log.warning("leader %s: renewing failed (%s: %s), retrying", self.name, type(exc).__name__, exc)
                        continue
                    reason = f"Redis unreachable ({type(exc).__name__})"
                break
        finally:
            self.is_leader = False
            if not task.done():
                log.warning("leader %s: %s steps down: %s", self.name, self.identity, reason)
                worker.stop()
                try:
                    await asyncio.wait_for(asyncio.shield(task), timeout=20)
                except (asyncio.TimeoutError, Exception):
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
            elif task.exception() is not None:
                log.error("leader %s: worker failed: %r", self.name, task.exception())
            self._worker = None
            try:
                await redis.eval(_RELEASE, 1, self.key, self.identity)
            except Exception:  # the lease expires by itself
                pass
        if task.done() and not task.cancelled() and task.exception() is not None and not self._stopping.is_set():
            await self._sleep(self.poll_s)  # a crashing worker: do not spin


def run_as_leader_until_signal(name: str, make_worker: Callable[[], Worker], *, enabled: bool = True) -> None:
    """Run ``make_worker()`` under lease ``name`` (or directly when ``enabled`` is False) until
    SIGINT/SIGTERM. The entry point of the singleton management commands."""

    async def main():
        runner = LeaderElection(name, make_worker) if enabled else make_worker()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, runner.stop)
        await runner.run()

    asyncio.run(main())


class LeaderCommand(BaseCommand):
    """A management command running one singleton worker over some symbols under a Redis lease
    (``run_as_leader_until_signal``): ``--symbols`` (comma-separated; default: the subclass's),
    ``--lease`` (default ``lease_name``), ``--no-leader``. Subclasses set ``lease_name`` and
    ``help`` and implement ``worker(symbols)`` (``symbols``: the names given, or None)."""

    lease_name = ""

    def add_arguments(self, parser):
        parser.add_argument("--symbols", help="comma-separated symbols (default: settings.WATCHED_SYMBOLS)")
        parser.add_argument("--lease", default=self.lease_name, help="name of the Redis lease electing one process")
        parser.add_argument("--no-leader", action="store_true", help="run at once, without the lease")

    def handle(self, *args, **options):
        symbols = options["symbols"].split(",") if options["symbols"] else None
        run_as_leader_until_signal(options["lease"], lambda: self.worker(symbols), enabled=not options["no_leader"])

    def worker(self, symbols: list[str] | None) -> Worker:
        """A new worker (called each time this process wins the lease)."""
        raise NotImplementedError
