"""The market-data ingester: one long-running asyncio process per deployment.

It subscribes to the venue's combined stream (``/stream?streams=``, Binance "WebSocket Streams")
through python-binance's ``BinanceSocketManager``: ``<symbol>@bookTicker`` and ``<symbol>@kline_1m``
of the watched symbols plus every stream a user subscribed to (``StreamSubscription``, published
in Redis by ``services.streams_wanted_refresh``; new ones are added with a ``SUBSCRIBE`` request on
the open connection within about a second).

Per message (``ingest``, synchronous and cheap) it only appends to in-memory batches. Every
``settings.MARKET_CACHE_FLUSH_S`` (``flush``) one pipelined Redis round trip writes, per stream,
the latest message (``md:last:<stream>``, plus the quote/kline caches ``md:book:``/``md:kline:``
readers use) and the recent-message buffer (LPUSH + LTRIM to ``MARKET_STREAM_BUFFER``); the
Channels groups ``market.<SYMBOL>`` (bookTicker, klines) and ``stream.<stream>`` (others) get at
most one push per stream every ``MARKET_PUSH_MIN_INTERVAL_S`` (coalesced).

Closed klines (``x: true`` events) are stored in the database by a single writer task, through
``services.klines_store_closed_events``, which backfills over REST first when the new candle does
not follow the last stored one. On every (re)connect the writer also backfills the missed closed
1m klines (``services.klines_sync``), so the stored series has no gaps; the unique constraint
keeps it free of duplicates. Each closed 1m candle also gets its ``IndicatorSnapshot``.

Connections: pings are answered by the websockets library python-binance uses; a session ends on
any stream error and is retried with exponential backoff and jitter (0.5 s doubling to 30 s); a
connection older than ``MARKET_STREAM_MAX_AGE_S`` (23 h; Binance closes them at 24 h) is rolled
over (closed and reopened, the gap backfilled). On every (re)connect the book tickers are first
snapshotted over REST, so the quote cache is right before the first stream message.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time

import orjson
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from core.metrics import ingest_observed
from core.redis import async_redis
from marketdata import cache, services
from marketdata.binance import make_async_client, make_socket_manager
from marketdata.streaming import reconnect_forever

log = logging.getLogger(__name__)


def market_group(symbol: str) -> str:
    """Channels group of one symbol's market updates (bookTicker and klines)."""
    return f"market.{symbol}"


VENUE_GROUP = "venue.events"  # Channels group told when the ingester reconnects to the venue


def stream_group(stream: str) -> str:
    """Channels group of any other stream's messages (``btcusdt@trade`` → ``stream.btcusdt.trade``)."""
    return "stream." + stream.replace("@", ".")


def book_from_event(data: dict, received_at_ms: int) -> dict:
    """Cache/push shape of a bookTicker stream event (``{u, s, b, B, a, A}``, Binance Spot
    "Individual Symbol Book Ticker Streams") or a REST ``/api/v3/ticker/bookTicker`` answer."""
    if "s" in data:
        return {
            "symbol": data["s"], "bidPrice": data["b"], "bidQty": data["B"], "askPrice": data["a"],
            "askQty": data["A"], "updateId": data["u"], "receivedAt": received_at_ms,
        }
    return {
        "symbol": data["symbol"], "bidPrice": data["bidPrice"], "bidQty": data["bidQty"],
        "askPrice": data["askPrice"], "askQty": data["askQty"], "updateId": data.get("updateId", 0),
        "receivedAt": received_at_ms,
    }


async def snapshot_book_tickers(client, redis, symbols: list[str]) -> list[dict]:
    """Read each symbol's ``GET /api/v3/ticker/bookTicker`` through python-binance and cache it;
    return the cached books. Used on every (re)connect, before the stream takes over."""
    now = int(time.time() * 1000)
    books = []
    for symbol in symbols:
        book = book_from_event(await client.get_orderbook_ticker(symbol=symbol), now)
        await redis.set(cache.book_key(symbol), cache.dumps(book))
        books.append(book)
    return books


def _backfill_1m(symbols: list[str]) -> dict:
    """Store the closed 1m klines missed while disconnected (REST), then their snapshots."""
    from django.db import connection

    try:
        out = {}
        for symbol in symbols:
            out[symbol] = services.klines_sync(symbol=symbol, interval="1m")
            services.indicator_snapshots_update(symbol=symbol, interval="1m")
        return out
    finally:
        connection.close()  # worker threads come and go: never leave a connection behind


def _store_closed(events: list[dict], snapshots: bool) -> dict:
    from django.db import connection

    try:
        out = services.klines_store_closed_events(events=events)
        if snapshots:
            for key in out:
                symbol, interval = key.split(":")
                services.indicator_snapshots_update(symbol=symbol, interval=interval, lookback=300, max_new=50)
        return out
    finally:
        connection.close()


class Ingester:
    """Streams ``symbols`` (and users' subscriptions) into the cache, the channel layer and the
    stored klines until ``stop()``.

    Args: ``symbols`` to stream bookTicker/kline_1m of; ``store_klines`` (default True): store
    closed klines and backfill gaps in the database; ``snapshots``: write indicator snapshots at
    each closed candle; ``subscriptions``: follow users' stream subscriptions.
    Counters for tests and monitoring: ``messages``, ``connects``, ``backfills``, ``closed_stored``.
    """

    def __init__(self, symbols: list[str], *, store_klines: bool = True, snapshots: bool = True, subscriptions: bool = True,
                 redis=None, layer=None):
        self.symbols = [s.upper() for s in symbols]
        self.redis = redis or async_redis()
        self.layer = layer or get_channel_layer()
        self.store_klines = store_klines
        self.snapshots = snapshots
        self.subscriptions = subscriptions
        self.buffer_size = settings.MARKET_STREAM_BUFFER
        self._batch: dict[str, list] = {}
        self._closed: list[dict] = []
        self._pending: dict[str, dict] = {}
        self._last_push = 0.0
        self._stopping = asyncio.Event()
        self._writes: asyncio.Queue | None = None
        self._streams: set[str] = set()
        self._streams_version = None
        self.messages = 0
        self.connects = 0
        self._session_messages = 0  # messages received on the current connection
        self.backfills = 0
        self.closed_stored = 0
        self.max_age_s = settings.MARKET_STREAM_MAX_AGE_S

    def stop(self) -> None:
        self._stopping.set()

    def default_streams(self) -> list[str]:
        return [f"{s.lower()}@bookTicker" for s in self.symbols] + [f"{s.lower()}@kline_1m" for s in self.symbols]

    async def wanted_streams(self) -> set[str]:
        """The default streams plus every user's subscription (``md:streams:wanted``)."""
        streams = set(self.default_streams())
        if self.subscriptions:
            self._streams_version = await self.redis.get(cache.streams_version_key())
            streams |= {s.decode() for s in await self.redis.smembers(cache.streams_wanted_key())}
        return streams

    # -- lifecycle ---------------------------------------------------------------------------------
    async def run(self) -> None:
        """Connect, stream, and reconnect with backoff until stopped."""
        self._writes = asyncio.Queue()
        flusher = asyncio.create_task(self._flush_loop())
        writer = asyncio.create_task(self._writer_loop())
        try:
            # A session that streamed messages before it was dropped proves the venue reachable:
            # the next connect is not delayed further (the REST refill covers the gap).
            await reconnect_forever(self._session_until_stopped, self._stopping, "ingester",
                                    healthy=lambda: self._session_messages > 0)
        finally:
            flusher.cancel()
            await asyncio.gather(flusher, return_exceptions=True)
            await self.flush()
            await self._writes.put(None)
            try:
                await asyncio.wait_for(writer, 15)
            except asyncio.TimeoutError:
                writer.cancel()
            await self.redis.aclose()

    async def _session_until_stopped(self) -> None:
        """Run one stream session; on ``stop()`` cancel it rather than wait for python-binance's
        own reconnect loop to give up."""
        session = asyncio.create_task(self._session())
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait({session, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not session.done():
                session.cancel()
                await asyncio.wait({session}, timeout=5)
        if session.done() and not session.cancelled() and session.exception() is not None:
            raise session.exception()

    async def _session(self) -> None:
        self._session_messages = 0
        client = await make_async_client()
        try:
            await self._snapshot(client)
            bsm = make_socket_manager(client)
            self._streams = await self.wanted_streams()
            streams = sorted(self._streams)
            socket = bsm.multiplex_socket(streams)
            # We reconnect ourselves (with the REST backfill); python-binance's own reconnect would
            # race our teardown and keep reading into a queue nobody drains.
            socket.MAX_RECONNECTS = 0
            async with socket:
                self.connects += 1
                if self.connects > 1:
                    await self._venue_event("reconnected")
                started = time.monotonic()
                if self.store_klines:
                    # After the socket is up: candles closing from now on arrive on the stream,
                    # the ones before come over REST.
                    self._writes.put_nowait(("backfill", list(self.symbols)))
                log.info("ingester: streaming %d streams from %s (connect #%d)", len(streams), settings.BINANCE_STREAM_URL, self.connects)
                next_check = time.monotonic() + 1.0
                while not self._stopping.is_set():
                    try:
                        msg = await asyncio.wait_for(socket.recv(), timeout=1.0)
                    except asyncio.TimeoutError:
                        msg = None
                    if msg:
                        if msg.get("e") == "error":
                            raise ConnectionError(f"stream error: {msg.get('m') or msg}")
                        self._session_messages += 1
                        self.ingest(msg)
                    now = time.monotonic()
                    if now >= next_check:
                        next_check = now + 1.0
                        if now - started > self.max_age_s:
                            log.info("ingester: rolling the connection over after %.0f s", now - started)
                            return
                        if self.subscriptions:
                            await self._follow_subscriptions(socket)
        finally:
            await client.close_connection()

    async def _venue_event(self, event: str) -> None:
        """Tell ``VENUE_GROUP`` (MCP sessions and sockets, ``mcpapi.notices``) about a venue
        connection event: ``{"type": "venue.event", "event", "venue", "connects"}``."""
        try:
            await self.layer.group_send(VENUE_GROUP, {"type": "venue.event", "event": event,
                                                      "venue": settings.BINANCE_VENUE, "connects": self.connects})
        except Exception as exc:
            log.warning("ingester: venue event push failed: %s", exc)

    async def _follow_subscriptions(self, socket) -> None:
        version = await self.redis.get(cache.streams_version_key())
        if version == self._streams_version:
            return
        wanted = await self.wanted_streams()
        add, remove = sorted(wanted - self._streams), sorted(self._streams - wanted)
        ws = getattr(socket, "ws", None)
        if ws is None:
            raise ConnectionError("socket not open while changing subscriptions")
        if add:
            await ws.send(orjson.dumps({"method": "SUBSCRIBE", "params": add, "id": int(time.time() * 1000) % 2**31}).decode())
        if remove:
            await ws.send(orjson.dumps({"method": "UNSUBSCRIBE", "params": remove, "id": int(time.time() * 1000) % 2**31 + 1}).decode())
        self._streams = wanted
        if add or remove:
            log.info("ingester: subscribed %s, unsubscribed %s", add, remove)

    async def _snapshot(self, client) -> None:
        for book in await snapshot_book_tickers(client, self.redis, self.symbols):
            self._pending[f"{book['symbol']}@bookTicker"] = {"stream": "bookTicker", "data": book}

    # -- the hot path --------------------------------------------------------------------------------
    def ingest(self, msg: dict) -> None:
        """Take one combined-stream message ``{"stream": ..., "data": ...}`` into the current batch
        (no I/O). Replies to SUBSCRIBE requests and other non-stream messages are ignored."""
        stream = msg.get("stream")
        data = msg.get("data")
        if stream is None or data is None:
            return
        self.messages += 1
        batch = self._batch.get(stream)
        if batch is None:
            self._batch[stream] = [data]
        else:
            batch.append(data)
        if data.get("e") == "kline" and data["k"]["x"]:
            self._closed.append(data["k"])

    async def handle(self, msg: dict) -> None:
        """Ingest one message and flush at once (for callers outside the stream loop)."""
        self.ingest(msg)
        await self.flush()

    async def flush(self) -> None:
        """Write the batch to Redis in one pipelined round trip, hand closed klines to the writer,
        and push coalesced updates to the channel layer when due."""
        if self._batch:
            batch, self._batch = self._batch, {}
            now_ms = int(time.time() * 1000)
            cap = self.buffer_size
            dumps = orjson.dumps
            pipe = self.redis.pipeline(transaction=False)
            for stream, items in batch.items():
                encoded = [dumps(x) for x in items[-cap:]]
                bkey = cache.buffer_key(stream)
                pipe.set(cache.last_key(stream), encoded[-1])
                pipe.lpush(bkey, *encoded)
                pipe.ltrim(bkey, 0, cap - 1)
                latest = items[-1]
                if stream.endswith("@bookTicker"):
                    book = book_from_event(latest, now_ms)
                    pipe.set(cache.book_key(book["symbol"]), dumps(book))
                    self._pending[f"{book['symbol']}@bookTicker"] = {"stream": "bookTicker", "data": book}
                elif latest.get("e") == "kline":
                    k = latest["k"]
                    pipe.set(cache.kline_key(k["s"], k["i"]), dumps(k))
                    self._pending[f"{k['s']}@kline_{k['i']}"] = {"stream": f"kline_{k['i']}", "data": k}
                else:
                    self._pending[stream] = {"stream": stream, "data": latest, "group": stream_group(stream)}
            await pipe.execute()
            ingest_observed(batch, now_ms)  # core.metrics: messages and lag per stream
        if self._closed:
            closed, self._closed = self._closed, []
            if self.store_klines and self._writes is not None:
                self._writes.put_nowait(("closed", closed))
        if self._pending and time.monotonic() - self._last_push >= settings.MARKET_PUSH_MIN_INTERVAL_S:
            await self.push()

    async def push(self) -> None:
        """Send each pending stream's latest update to its Channels group (one message each)."""
        pending, self._pending = self._pending, {}
        self._last_push = time.monotonic()
        for key, payload in pending.items():
            group = payload.pop("group", None)
            if group is None:
                symbol = key.split("@", 1)[0]
                group, message = market_group(symbol), {"type": "market.update", "symbol": symbol, **payload}
            else:
                message = {"type": "stream.message", **payload}
            try:
                await self.layer.group_send(group, message)
            except Exception as exc:  # a channel-layer hiccup must not stop ingestion
                log.warning("ingester: push to %s failed: %s", group, exc)

    async def _flush_loop(self) -> None:
        interval = settings.MARKET_CACHE_FLUSH_S
        while True:
            await asyncio.sleep(interval)
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis hiccup: keep going, the next flush retries new data
                log.warning("ingester: flush failed: %s", exc)

    async def _writer_loop(self) -> None:
        """The single database writer: backfills and closed klines, in arrival order."""
        pending: collections.deque = collections.deque()  # jobs taken from the queue, not yet run
        while True:
            job = pending.popleft() if pending else await self._writes.get()
            if job is None:
                return
            kind, arg = job
            try:
                if kind == "backfill":
                    await sync_to_async(_backfill_1m, thread_sensitive=False)(arg)
                    self.backfills += 1
                else:
                    while not self._writes.empty():  # consecutive closed-kline jobs: one write
                        pending.append(self._writes.get_nowait())
                    while pending and pending[0] is not None and pending[0][0] == "closed":
                        arg = arg + pending.popleft()[1]
                    await sync_to_async(_store_closed, thread_sensitive=False)(arg, self.snapshots)
                    self.closed_stored += len(arg)
            except Exception as exc:  # venue or database error: the next reconnect/candle retries
                log.warning("ingester: %s failed (%s: %s)", kind, type(exc).__name__, exc)
                if kind == "closed":
                    await asyncio.sleep(1.0)
