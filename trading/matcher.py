"""The paper matcher: resting paper orders fill on the venue's live (or replayed) prints.

One long-running asyncio process (``manage.py paper_matcher``, started by ``runstack``) follows
the combined stream of ``<symbol>@trade`` and ``<symbol>@bookTicker`` for the watched symbols
through python-binance and hands every event to ``trading.venues.paper.paper_match`` (one DB
transaction per affected order; a trade id seen twice is skipped there). Book tickers are
coalesced to the latest one per symbol every ``PAPER_MATCH_BOOK_EVERY_S`` (default 0.1 s): a resting
limit only needs the best opposite quote, not every change of it. Reconnects with backoff.

No print is skipped across restarts, reconnects or a leader takeover (``core.leader``): the id
of the last trade matched per symbol is kept in Redis (``paper:last_trade:<SYMBOL>``); each session
first subscribes, then replays the trades printed since that id through ``GET
/api/v3/historicalTrades?fromId=`` (Binance "Old trade lookup", up to ``PAPER_MATCH_CATCHUP_MAX``
trades, default 10,000), then follows the stream. ``paper_match`` skips a trade id it has seen.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging

from asgiref.sync import sync_to_async
from django.conf import settings

from core.redis import get_redis
from marketdata.binance import make_async_client, make_socket_manager
from marketdata.streaming import reconnect_forever
from trading.models import Order, Venue
from trading.venues.paper import OPEN, paper_match

log = logging.getLogger(__name__)


class PaperMatcher:
    """Feeds ``paper_match`` from the venue's streams until ``stop()``."""

    def __init__(self, symbols: list[str], book_every_s: float | None = None):
        self.symbols = [s.upper() for s in symbols]
        self.book_every_s = book_every_s if book_every_s is not None else float(getattr(settings, "PAPER_MATCH_BOOK_EVERY_S", 0.1))
        self._stopping = asyncio.Event()
        self._books: dict[str, dict] = {}
        self.trades = 0
        self.fills = 0
        self.caught_up = 0  # trades replayed from REST after a gap
        self.sessions = 0  # stream sessions that connected and caught up
        self._last_ids: dict[str, int] = {}
        self._saved_ids: dict[str, int] = {}

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        books = asyncio.create_task(self._book_loop())
        try:
            await reconnect_forever(self._session, self._stopping, "paper matcher")
        finally:
            # Let a match in flight finish and be counted (its DB transaction commits either way).
            self._stopping.set()
            try:
                await asyncio.wait_for(books, timeout=self.book_every_s + 15)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                pass
            try:
                await self._save_last_ids()
            except Exception:
                log.exception("paper matcher: saving the last matched trade ids failed")

    async def _session(self) -> None:
        client = await make_async_client()
        try:
            streams = [f"{s.lower()}@trade" for s in self.symbols] + [f"{s.lower()}@bookTicker" for s in self.symbols]
            async with _bounded_exit(make_socket_manager(client).multiplex_socket(streams)) as socket:
                await self._catch_up(client)  # subscribed first: nothing falls between REST and stream
                self.sessions += 1  # connected and caught up
                while not self._stopping.is_set():
                    try:
                        msg = await asyncio.wait_for(socket.recv(), timeout=1.0)
                    except asyncio.TimeoutError:
                        continue
                    if not msg:
                        continue
                    if msg.get("e") == "error":
                        raise ConnectionError(f"stream error: {msg.get('m') or msg}")
                    data = msg.get("data") or {}
                    if data.get("e") == "trade":
                        self.trades += 1
                        changed = await sync_to_async(paper_match)(data["s"], trade=data)
                        self.fills += len(changed)
                        self._last_ids[data["s"]] = max(int(data["t"]), self._last_ids.get(data["s"], -1))
                    elif "b" in data and "a" in data:
                        self._books[data["s"]] = data
        finally:
            await client.close_connection()

    async def _catch_up(self, client) -> None:
        """Match the trades printed since the last one this matcher (or its predecessor) matched."""
        limit = int(getattr(settings, "PAPER_MATCH_CATCHUP_MAX", 10_000))
        for symbol in self.symbols:
            last = self._last_ids.get(symbol)
            if last is None:
                raw = await sync_to_async(_redis().get)(_last_trade_key(symbol))
                last = int(raw) if raw is not None else None
            if last is None:
                continue  # first run: nothing was resting on prints we could have missed
            done = 0
            while done < limit and not self._stopping.is_set():
                trades = await client.get_historical_trades(symbol=symbol, fromId=last + 1, limit=1000)
                if trades and await sync_to_async(_has_open_paper_orders)(symbol):
                    for t in trades:
                        self.fills += len(await sync_to_async(paper_match)(symbol, trade=t))
                if trades:
                    last = int(trades[-1]["id"])
                done += len(trades)
                self.caught_up += len(trades)
                if len(trades) < 1000:
                    break
            if done >= limit:
                log.warning("paper matcher: %s is more than %d trades behind; matching from the stream on", symbol, limit)
            self._last_ids[symbol] = last
        await self._save_last_ids()

    async def _save_last_ids(self) -> None:
        changed = {s: i for s, i in self._last_ids.items() if self._saved_ids.get(s) != i}
        if changed:
            def save():
                pipe = _redis().pipeline(transaction=False)
                for symbol, tid in changed.items():
                    pipe.set(_last_trade_key(symbol), tid)
                pipe.execute()
            await sync_to_async(save)()
            self._saved_ids.update(changed)

    async def _book_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=self.book_every_s)
            except asyncio.TimeoutError:
                pass
            try:
                await self._save_last_ids()
            except Exception:
                log.exception("paper matcher: saving the last matched trade ids failed")
            pending, self._books = self._books, {}
            for symbol, book in pending.items():
                try:
                    self.fills += len(await sync_to_async(paper_match)(symbol, book=book))
                except Exception:
                    log.exception("paper matcher: matching %s on a book ticker failed", symbol)


SOCKET_CLOSE_TIMEOUT_S = 2.0


@contextlib.asynccontextmanager
async def _bounded_exit(socket_cm):
    """``async with socket_cm`` whose exit gives up after ``SOCKET_CLOSE_TIMEOUT_S``.

    python-binance's ``ReconnectingWebsocket.__aexit__`` waits for its read loop to end, and while
    that loop is reconnecting to an exchange that has gone (its 5 attempts with backoff) it does
    not: a matcher told to stop then took ~25 s to exit (found on ``make run``'s Ctrl-C, where the
    replay exchange stops at the same moment; the process was SIGKILLed after 5 s). What is left
    running is cancelled when the event loop closes."""
    socket = await socket_cm.__aenter__()
    try:
        yield socket
    finally:
        try:
            await asyncio.wait_for(asyncio.shield(socket_cm.__aexit__(None, None, None)), SOCKET_CLOSE_TIMEOUT_S)
        except asyncio.TimeoutError:
            log.warning("paper matcher: the exchange socket did not close within %.0f s; leaving it", SOCKET_CLOSE_TIMEOUT_S)


def _has_open_paper_orders(symbol: str) -> bool:
    """Is any paper order of ``symbol`` open (else a page of missed prints needs no matching)?"""
    return Order.objects.filter(symbol=symbol, status__in=OPEN, account__venue=Venue.PAPER).exists()


def _redis():
    return get_redis()


def _last_trade_key(symbol: str) -> str:
    """Redis key of the id of the last trade of ``symbol`` the paper matcher matched."""
    return f"{settings.REDIS_KEY_PREFIX}paper:last_trade:{symbol}"
