"""Shared plumbing of the long-running stream processes (ingester, paper matcher)."""
from __future__ import annotations

import asyncio
import logging
import random
import signal
from typing import Awaitable, Callable

log = logging.getLogger(__name__)


async def reconnect_forever(session: Callable[[], Awaitable[None]], stopping: asyncio.Event, name: str,
                            *, first_s: float = 0.5, cap_s: float = 30.0, healthy_s: float = 2.0,
                            healthy: Callable[[], bool] | None = None) -> None:
    """Run ``session()`` again and again until ``stopping`` is set.

    After a failure, wait with exponential backoff and jitter (``first_s`` doubling to ``cap_s``,
    each wait × 0.5–1.5, "Exponential Backoff And Jitter", AWS Architecture Blog 2015); a session
    that ends without error, or that failed only after running ``healthy_s`` seconds (it connected
    and streamed: the venue is reachable, the connection was dropped), or for which ``healthy()``
    says it received data, resets the backoff. The wait ends early when ``stopping`` is set.
    """
    loop = asyncio.get_running_loop()
    backoff = first_s
    while not stopping.is_set():
        started = loop.time()
        try:
            await session()
            backoff = first_s
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # connection refused or reset, venue errors: retry
            if loop.time() - started >= healthy_s or (healthy is not None and healthy()):
                backoff = first_s
            log.warning("%s: stream session ended (%s: %s); reconnecting in %.1f s", name, type(exc).__name__, exc, backoff)
            try:
                await asyncio.wait_for(stopping.wait(), timeout=backoff * (0.5 + random.random()))
            except asyncio.TimeoutError:
                pass
            backoff = min(backoff * 2, cap_s)


def run_until_signal(worker) -> None:
    """Run ``worker.run()`` (an object with ``run()`` and ``stop()``) until SIGINT/SIGTERM."""

    async def main():
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, worker.stop)
        await worker.run()

    asyncio.run(main())
