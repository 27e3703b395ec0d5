"""``manage.py userstream``: follow the Binance user data stream of every testnet/live account.

One task per account (``trading.venues.binance.follow_account``): a WebSocket API subscription
(``userDataStream.subscribe.signature``, python-binance's ``user_socket()``) at the account's
endpoint, a reconciliation on every (re)subscription, then each ``executionReport`` /
``outboundAccountPosition`` / ``listStatus`` booked as it arrives. New accounts are picked up every ``--rescan`` seconds. SIGINT/SIGTERM stop it.
Safe to run next to the Celery beat reconciliation (every booker takes the account row lock and a
fill is booked once) and safe to kill at any moment (the next reconciliation books what it missed).
Several copies may run: one is elected by a Redis lease (``core.leader``, lease ``userstream``),
the others wait and take over within seconds when it dies; ``--no-leader`` runs it without the lease.
"""
from __future__ import annotations

import asyncio

from asgiref.sync import sync_to_async
from django.core.management.base import BaseCommand

from core.leader import run_as_leader_until_signal
from trading.venues.binance import exchange_account_ids, follow_account


async def run_followers(*, account_ids: list[int] | None = None, stop: asyncio.Event, rescan_s: float = 30.0) -> None:
    """Follow ``account_ids`` (default: every testnet/live account, rescanned) until ``stop``."""
    tasks: dict[int, asyncio.Task] = {}
    try:
        while not stop.is_set():
            ids = account_ids if account_ids is not None else await sync_to_async(exchange_account_ids)()
            for pk in ids:
                if pk not in tasks or tasks[pk].done():
                    tasks[pk] = asyncio.create_task(follow_account(pk, stop=stop))
            try:
                await asyncio.wait_for(stop.wait(), rescan_s)
            except asyncio.TimeoutError:
                pass
    finally:
        stop.set()
        await asyncio.gather(*tasks.values(), return_exceptions=True)


class Followers:
    """``run_followers`` as a worker (``run()`` / ``stop()``) for ``core.leader``."""

    def __init__(self, account_ids: list[int] | None, rescan_s: float):
        self.account_ids = account_ids
        self.rescan_s = rescan_s
        self._stop: asyncio.Event | None = None

    async def run(self) -> None:
        self._stop = self._stop or asyncio.Event()
        await run_followers(account_ids=self.account_ids, stop=self._stop, rescan_s=self.rescan_s)

    def stop(self) -> None:
        self._stop = self._stop or asyncio.Event()
        self._stop.set()


class Command(BaseCommand):
    help = "Follow the user data stream of every testnet/live account (order state, fills, balances)."

    def add_arguments(self, parser):
        parser.add_argument("--account", type=int, action="append", dest="accounts",
                            help="follow only this account id (repeatable)")
        parser.add_argument("--rescan", type=float, default=30.0, help="seconds between scans for new accounts")
        parser.add_argument("--lease", default="userstream", help="name of the Redis lease electing one follower")
        parser.add_argument("--no-leader", action="store_true", help="run at once, without the lease")

    def handle(self, *args, **opts):
        self.stdout.write("user data stream follower started")
        run_as_leader_until_signal(opts["lease"], lambda: Followers(opts["accounts"], opts["rescan"]),
                                   enabled=not opts["no_leader"])
