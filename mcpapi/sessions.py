"""MCP sessions on streamable HTTP (MCP spec 2025-06-18, "Transports → Streamable HTTP → Session
Management" and "Resumability"), kept in Redis so that any web worker serves any request.

State of a session ``<sid>`` (a random hex id, ``Mcp-Session-Id``), all under
``REDIS_KEY_PREFIX`` and expiring ``MCP_SESSION_TTL_S`` after the last use:

- ``mcp:session:<sid>``: ``Session`` as JSON: the token id and user id it belongs to, the
  client's declared capabilities, the ``logging/setLevel`` level, the protocol version;
- ``mcp:session:<sid>:subs``: a set of subscribed ``tradingmcp://`` URIs (``mcpapi.subscriptions``);
- ``mcp:session:<sid>:events``: a Redis Stream of every server→client message of the session
  (``RedisEventStore``, the SDK's ``EventStore`` interface; at most ``MCP_SESSION_EVENTS``
  entries). An SSE event's id is ``<sid>/<entry id>``; ``Last-Event-ID`` replays after it.

Who writes what:

- request handlers on any worker append messages to the event stream (``notifications/message``,
  server requests such as ``elicitation/create``);
- the worker holding the session's ``GET /mcp`` stream runs the session's ``Pump``: it listens on
  the Channels groups of the subscriptions (``market.<SYMBOL>``, ``account.<id>``, the same groups
  ``/mcp/ws`` listens to), the user's access group (``risk.signals``) and the session's control
  group ``mcp.session.<sid>`` (subscription changes, take-over by another GET, DELETE), and appends
  ``notifications/resources/updated`` for each subscribed update. After the GET stream drops it
  keeps appending for ``MCP_SESSION_LINGER_S``, so a client resuming with ``Last-Event-ID`` (on
  any worker) gets what it missed; a new GET takes the pump over.
- the GET stream itself reads the event stream (``XREAD BLOCK``) and sends each entry as an SSE
  event. Market updates that pile up behind a slow reader are coalesced (latest per URI wins);
  account events never are.
- a client's answer to a server request (a JSON-RPC response POSTed to ``/mcp``) is pushed to
  ``mcp:session:<sid>:reply:<id>``, where the waiting handler (any worker) pops it.

A session belongs to its token: another token presenting the id is answered 404, as is an unknown
or expired id. Revoking the token, deactivating the user or losing access to an account
(``risk.signals``) ends the GET stream or drops the subscriptions it may no longer read.

``Peer`` is the client at the other end of the current request (a session, or a ``/mcp/ws``
connection), bound by the transport (``peer_bound``); tools and services reach it through
``log_message``, ``progress`` and ``elicit`` (sync variants for worker threads), which do nothing
for a stateless caller.
"""
from __future__ import annotations

import asyncio
import contextvars
import logging
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import orjson
from asgiref.sync import sync_to_async
from django.conf import settings
from mcp import types
from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeout
from sse_starlette import EventSourceResponse

from core.events import layer_messages
from core.redis import async_redis_shared
from marketdata.ingester import VENUE_GROUP
from mcpapi import subscriptions
from risk.authentication import authenticate_bearer_async
from risk.signals import ACCESS_CHANGED, access_group
from risk.trust import envelope

log = logging.getLogger(__name__)

LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")  # RFC 5424, MCP "Logging"
CONTROL = "mcp.session.control"  # channel-layer message type of a session's control group
PUSH = "notifications/resources/updated"


def session_key(sid: str) -> str:
    """Redis key of session ``sid``'s record."""
    return f"{settings.REDIS_KEY_PREFIX}mcp:session:{sid}"


def subs_key(sid: str) -> str:
    return f"{settings.REDIS_KEY_PREFIX}mcp:session:{sid}:subs"


def events_key(sid: str) -> str:
    return f"{settings.REDIS_KEY_PREFIX}mcp:session:{sid}:events"


def reply_key(sid: str, request_id) -> str:
    return f"{settings.REDIS_KEY_PREFIX}mcp:session:{sid}:reply:{request_id}"


def pump_key(sid: str) -> str:
    """Redis key naming the pump (``Pump.owner``) feeding session ``sid``, while one runs."""
    return f"{settings.REDIS_KEY_PREFIX}mcp:session:{sid}:pump"


def control_group(sid: str) -> str:
    """Channels group of session ``sid``'s pump (control messages from any worker)."""
    return f"mcp.session.{sid}"


def venue_notice(message: dict) -> dict:
    """The ``notifications/message`` data of a ``venue.event`` channel-layer message
    (``marketdata.ingester.VENUE_GROUP``): ``{event, venue, connects}``."""
    return {"event": message.get("event"), "venue": message.get("venue"), "connects": message.get("connects")}


def valid_session_id(sid: str) -> bool:
    """Our session ids: 32 lower-case hex digits."""
    return len(sid) == 32 and all(c in "0123456789abcdef" for c in sid)


# --- the session record ----------------------------------------------------------------------------

@dataclass
class Session:
    """One session: ``id``; ``token_id``/``user_id`` it belongs to; ``capabilities`` (the client's
    ``ClientCapabilities`` from ``initialize``, as JSON); ``level`` (``logging/setLevel``, None =
    none set: nothing is sent); ``protocol_version``; ``touched`` (s since the epoch of the last
    refresh of its expiry)."""

    id: str
    token_id: int
    user_id: int
    capabilities: dict = field(default_factory=dict)
    level: str | None = None
    protocol_version: str = ""
    touched: float = 0.0

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> "Session | None":
        if not raw:
            return None
        try:
            return cls(**orjson.loads(raw))
        except (TypeError, orjson.JSONDecodeError):
            return None

    def to_bytes(self) -> bytes:
        return orjson.dumps(asdict(self))

    @property
    def elicitation(self) -> bool:
        """Did the client declare the ``elicitation`` capability?"""
        return self.capabilities.get("elicitation") is not None


async def session_create(identity, init_params: dict | None) -> Session:
    """A new session for ``identity`` from an ``initialize`` request's params."""
    params = init_params or {}
    session = Session(id=uuid.uuid4().hex, token_id=identity.token_id, user_id=identity.user.pk,
                      capabilities=params.get("capabilities") or {}, protocol_version=str(params.get("protocolVersion") or ""),
                      touched=time.time())
    await async_redis_shared().set(session_key(session.id), session.to_bytes(), ex=settings.MCP_SESSION_TTL_S)
    return session


async def session_load(sid: str) -> Session | None:
    return Session.from_bytes(await async_redis_shared().get(session_key(sid)))


async def session_save(session: Session) -> None:
    session.touched = time.time()
    ttl = settings.MCP_SESSION_TTL_S
    async with async_redis_shared().pipeline(transaction=False) as pipe:
        pipe.set(session_key(session.id), session.to_bytes(), ex=ttl)
        pipe.expire(subs_key(session.id), ttl)
        pipe.expire(events_key(session.id), ttl)
        await pipe.execute()


async def session_touch(session: Session) -> None:
    """Refresh the session's expiry when a quarter of its lifetime has passed since the last
    refresh (so most requests write nothing)."""
    if time.time() - session.touched > settings.MCP_SESSION_TTL_S / 4:
        await session_save(session)


async def session_delete(session: Session) -> None:
    """End the session (``DELETE /mcp``): its keys go, its GET stream and pump stop."""
    sid = session.id
    await async_redis_shared().delete(session_key(sid), subs_key(sid), events_key(sid))
    await _control(sid, {"op": "closed"})


async def _control(sid: str, body: dict) -> None:
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    try:
        await layer.group_send(control_group(sid), {"type": CONTROL, **body})
    except Exception as exc:  # the pump re-reads its subscriptions when it starts anyway
        log.warning("mcp session %s: control message failed: %s", sid, exc)


# --- the event store -------------------------------------------------------------------------------

class RedisEventStore(EventStore):
    """The SDK's ``EventStore`` (``mcp.server.streamable_http``) on Redis Streams: one stream per
    ``stream_id`` (our session id), ``XADD`` with ``MAXLEN ~ MCP_SESSION_EVENTS`` and the session's
    expiry. Event ids are ``<stream_id>/<entry id>``. Entries hold the message's JSON (``m``) and,
    for messages a newer one of the same key may replace (market updates), a coalescing key (``k``)."""

    def __init__(self, maxlen: int | None = None):
        self.maxlen = maxlen or settings.MCP_SESSION_EVENTS

    async def store_event(self, stream_id: StreamId, message: types.JSONRPCMessage | None) -> EventId:
        data = message.model_dump(by_alias=True, mode="json", exclude_none=True) if message is not None else None
        return await self.append(stream_id, data)

    async def append(self, stream_id: str, message: dict | None, coalesce: str | None = None) -> EventId:
        """Store a JSON-RPC message given as a dict (None: an empty priming event); its event id."""
        fields = {"m": orjson.dumps(message) if message is not None else b""}
        if coalesce:
            fields["k"] = coalesce
        key = events_key(stream_id)
        async with async_redis_shared().pipeline(transaction=False) as pipe:
            pipe.xadd(key, fields, maxlen=self.maxlen, approximate=True)
            pipe.expire(key, settings.MCP_SESSION_TTL_S)
            entry, _ = await pipe.execute()
        return f"{stream_id}/{entry.decode()}"

    async def replay_events_after(self, last_event_id: EventId, send_callback: EventCallback) -> StreamId | None:
        stream_id, _, entry = str(last_event_id).partition("/")
        if not stream_id or not entry:
            return None
        for event_id, raw, _ in await self.read(stream_id, entry, block_ms=None):
            if raw:
                await send_callback(EventMessage(types.JSONRPCMessage.model_validate_json(raw), event_id))
        return stream_id

    async def read(self, stream_id: str, after: str, block_ms: int | None, count: int = 500) -> list[tuple[str, bytes, str | None]]:
        """Entries after entry id ``after`` (exclusive): ``[(event id, message JSON, coalescing
        key)]``; waits up to ``block_ms`` for the first one (None: no wait)."""
        key = events_key(stream_id)
        redis = async_redis_shared()
        if block_ms is None:
            rows = await redis.xrange(key, min=f"({after}", count=count)
        else:
            answer = await redis.xread({key: after}, count=count, block=block_ms)
            rows = answer[0][1] if answer else []
        out = []
        for entry, fields in rows:
            entry = entry.decode() if isinstance(entry, bytes) else entry
            k = fields.get(b"k")
            out.append((f"{stream_id}/{entry}", fields.get(b"m") or b"", k.decode() if k else None))
        return out

    async def last_entry(self, stream_id: str) -> str:
        """The newest entry id of the stream ("0-0" when empty)."""
        rows = await async_redis_shared().xrevrange(events_key(stream_id), count=1)
        if not rows:
            return "0-0"
        entry = rows[0][0]
        return entry.decode() if isinstance(entry, bytes) else entry


def event_store() -> RedisEventStore:
    """The process's ``RedisEventStore``."""
    return RedisEventStore()


def coalesce(batch: list[tuple[str, bytes, str | None]]) -> list[tuple[str, bytes, str | None]]:
    """Of a batch of entries read behind a slow client, keep only the newest entry of each
    coalescing key (latest market update per URI wins); entries without a key all stay, in order."""
    last = {k: i for i, (_, _, k) in enumerate(batch) if k}
    return [e for i, e in enumerate(batch) if not e[2] or last[e[2]] == i]


# --- the peer of the current request ---------------------------------------------------------------

class PeerError(Exception):
    """A server→client request got no usable answer (error, timeout, transport gone)."""


class Peer:
    """The client at the other end of a request, as tools and services reach it (see module
    docstring). Subclasses: ``SessionPeer`` here, ``mcpapi.ws.SocketPeer``."""

    capabilities: dict = {}
    level: str | None = None
    loop: asyncio.AbstractEventLoop | None = None

    def wants(self, level: str) -> bool:
        """Is ``level`` at or above the level the client set (none set: no messages)?"""
        return self.level is not None and level in LEVELS and LEVELS.index(level) >= LEVELS.index(self.level)

    @property
    def elicitation(self) -> bool:
        return (self.capabilities or {}).get("elicitation") is not None

    async def notify(self, method: str, params: dict, *, market_key: str | None = None) -> None:
        raise NotImplementedError

    async def request(self, method: str, params: dict, timeout: float) -> dict:
        """Send a JSON-RPC request to the client; its ``result``. ``PeerError`` otherwise."""
        raise NotImplementedError


class SessionPeer(Peer):
    """The peer of a request on a streamable-HTTP session: messages go to the request's own SSE
    response when it is answered as one (``related``, an ``asyncio.Queue``), else to the
    session's event stream (its GET stream)."""

    def __init__(self, session: Session, related: asyncio.Queue | None = None):
        self.session = session
        self.capabilities = session.capabilities
        self.level = session.level
        self.related = related
        self.loop = asyncio.get_running_loop()

    async def notify(self, method: str, params: dict, *, market_key: str | None = None) -> None:
        await self._send({"jsonrpc": "2.0", "method": method, "params": params})

    async def _send(self, message: dict) -> None:
        if self.related is not None:
            await self.related.put(message)
        else:
            await event_store().append(self.session.id, message)

    async def request(self, method: str, params: dict, timeout: float) -> dict:
        request_id = f"tmcp-{uuid.uuid4().hex[:16]}"
        await self._send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        key, answer = reply_key(self.session.id, request_id), None
        deadline = time.monotonic() + timeout
        while answer is None and time.monotonic() < deadline:  # short pops: the client's socket timeout is 5 s
            try:
                answer = await async_redis_shared().blpop([key], timeout=max(1, min(4, int(deadline - time.monotonic()))))
            except RedisTimeout:
                answer = None
        if answer is None:
            raise PeerError(f"no answer to {method} within {timeout:.0f} s")
        return _result_of(orjson.loads(answer[1]), method)


def _result_of(response: dict, method: str) -> dict:
    if isinstance(response.get("error"), dict):
        raise PeerError(f"the client answered {method} with error {response['error'].get('code')}: "
                        f"{response['error'].get('message')}")
    result = response.get("result")
    if not isinstance(result, dict):
        raise PeerError(f"the client answered {method} without a result")
    return result


async def deliver_reply(session: Session, message: dict) -> None:
    """A JSON-RPC response the client POSTed: hand it to the handler waiting for it (any worker)."""
    request_id = message.get("id")
    if not isinstance(request_id, str) or not request_id.startswith("tmcp-"):
        return
    key = reply_key(session.id, request_id)
    async with async_redis_shared().pipeline(transaction=False) as pipe:
        pipe.rpush(key, orjson.dumps(message))
        pipe.expire(key, 60)
        await pipe.execute()


_peer: contextvars.ContextVar = contextvars.ContextVar("mcp_peer", default=(None, None))


@contextmanager
def peer_bound(peer: Peer | None, progress_token=None):
    """Within the block, ``current_peer()`` is ``peer`` and progress goes to ``progress_token``
    (the request's ``_meta.progressToken``)."""
    reset = _peer.set((peer, progress_token))
    try:
        yield
    finally:
        _peer.reset(reset)


def current_peer() -> Peer | None:
    return _peer.get()[0]


async def log_message(level: str, data, logger: str = "tradingmcp") -> bool:
    """Send ``notifications/message`` (MCP "Utilities → Logging") to the current peer when
    ``level`` is at or above its level; True when sent."""
    peer = current_peer()
    if peer is None or not peer.wants(level):
        return False
    await peer.notify("notifications/message", {"level": level, "logger": logger, "data": envelope("notifications/message", data)})
    return True


async def progress(done: float, total: float | None = None, message: str | None = None) -> None:
    """Send ``notifications/progress`` (MCP "Utilities → Progress") for the current request when
    it carried a ``progressToken``."""
    peer, token = _peer.get()
    if peer is None or token is None:
        return
    params = {"progressToken": token, "progress": done}
    if total is not None:
        params["total"] = total
    if message:
        params["message"] = message
    await peer.notify("notifications/progress", params)


async def elicit(message: str, schema: dict, timeout: float) -> tuple[str, dict | None]:
    """Ask the current peer's user (MCP "Client Features → Elicitation", ``elicitation/create``):
    ``(action, content)`` with action ``accept`` / ``decline`` / ``cancel``, or ``timeout`` when no
    usable answer came. ``PeerError`` when there is no peer with the capability."""
    peer = current_peer()
    if peer is None or not peer.elicitation:
        raise PeerError("the client did not declare the elicitation capability")
    try:
        result = await peer.request("elicitation/create", {"message": message, "requestedSchema": schema}, timeout)
    except PeerError as exc:
        log.info("elicitation got no answer: %s", exc)
        return "timeout", None
    action = result.get("action")
    return (action if action in ("accept", "decline", "cancel") else "cancel"), result.get("content")


def _from_thread(coro_fn, *args, wait: float | None = None):
    """Run ``coro_fn(*args)`` on the current peer's loop from a worker thread, in this context;
    wait ``wait`` s for its result (None: fire and forget)."""
    peer, token = _peer.get()
    if peer is None or peer.loop is None:
        return None

    async def run():
        with peer_bound(peer, token):
            return await coro_fn(*args)

    future = asyncio.run_coroutine_threadsafe(run(), peer.loop)
    if wait is None:
        return None
    return future.result(wait)


def log_message_sync(level: str, data, logger: str = "tradingmcp") -> None:
    """``log_message`` from sync code (a tool's worker thread): queued, not awaited."""
    peer = current_peer()
    if peer is not None and peer.wants(level):
        _from_thread(log_message, level, data, logger)


def progress_sync(done: float, total: float | None = None, message: str | None = None) -> None:
    """``progress`` from sync code; queued, not awaited."""
    if _peer.get()[1] is not None:
        _from_thread(progress, done, total, message)


def elicit_sync(message: str, schema: dict, timeout: float) -> tuple[str, dict | None]:
    """``elicit`` from sync code (blocks this worker thread until the answer or ``timeout``)."""
    return _from_thread(elicit, message, schema, timeout, wait=timeout + 10)


def peer_can_elicit() -> bool:
    peer = current_peer()
    return peer is not None and peer.elicitation


# --- requests answered by the session ---------------------------------------------------------------

async def set_level(session: Session | None, params) -> dict:
    """``logging/setLevel``: store the level on the session (stateless callers: nothing to store,
    ``{}`` all the same). ``ValueError`` for a level outside RFC 5424's."""
    level = (params or {}).get("level") if isinstance(params, dict) else None
    if level not in LEVELS:
        raise ValueError(f"Invalid level {level!r}: one of {', '.join(LEVELS)}.")
    if session is not None:
        session.level = level
        await session_save(session)
        await _control(session.id, {"op": "level", "level": level})
    return {}


async def subscribe(session: Session, identity, uri: str) -> dict:
    """``resources/subscribe``: authorize (``mcpapi.subscriptions.authorize``) and add ``uri`` to
    the session; its pump (if any) starts listening. Raises ``TradingError`` subclasses."""
    topic = subscriptions.parse(uri)
    await sync_to_async(_authorize_closing, thread_sensitive=False)(identity, topic)
    redis = async_redis_shared()
    async with redis.pipeline(transaction=False) as pipe:
        pipe.sadd(subs_key(session.id), topic.uri)
        pipe.expire(subs_key(session.id), settings.MCP_SESSION_TTL_S)
        await pipe.execute()
    await _subscriptions_changed(session.id)
    return {}


async def _subscriptions_changed(sid: str) -> None:
    """Tell the session's pump (on whichever worker) to re-read its subscriptions, and wait (up to
    2 s) until it listens to them, so updates from the moment the answer is sent are delivered."""
    redis = async_redis_shared()
    if not await redis.exists(pump_key(sid)):
        return  # no GET stream: the pump reads the subscriptions when it starts
    ack = f"{settings.REDIS_KEY_PREFIX}mcp:session:{sid}:ack:{uuid.uuid4().hex}"
    await _control(sid, {"op": "subscriptions", "ack": ack})
    try:
        await redis.blpop([ack], timeout=2)
    except RedisTimeout:
        pass


async def unsubscribe(session: Session, uri: str) -> dict:
    """``resources/unsubscribe``: drop ``uri`` from the session (unknown URIs: nothing to do)."""
    try:
        topic_uri = subscriptions.parse(uri).uri
    except Exception:
        topic_uri = str(uri)
    await async_redis_shared().srem(subs_key(session.id), topic_uri)
    await _subscriptions_changed(session.id)
    return {}


def _authorize_closing(identity, topic) -> None:
    from django.db import connection

    try:
        subscriptions.authorize(identity, topic)
    finally:
        connection.close()


def _still_allowed_closing(identity, uris) -> set[str]:
    from django.db import connection

    try:
        return subscriptions.still_allowed(identity, uris)
    finally:
        connection.close()


# --- the GET stream and the pump --------------------------------------------------------------------

class Pump:
    """Feeds one session's event stream from the channel layer (see module docstring)."""

    def __init__(self, session: Session, token_key: str, identity, layer=None):
        self.session, self.token_key, self.identity = session, token_key, identity
        self.owner = uuid.uuid4().hex
        self.layer = layer
        self.channel: str | None = None
        self.groups: set[str] = set()
        self.topics: dict[str, subscriptions.Topic] = {}
        self.closed = asyncio.Event()  # the session ended (DELETE, revocation, take-over)
        self.store = event_store()
        self.task: asyncio.Task | None = None
        self.ready = asyncio.Event()  # listening to every group of the session

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def _run(self) -> None:
        from channels.layers import get_channel_layer

        self.layer = self.layer or get_channel_layer()
        self.channel = await self.layer.new_channel()
        try:
            await self._join(control_group(self.session.id))
            await self._join(access_group(self.session.user_id))
            await self.layer.group_send(control_group(self.session.id), {"type": CONTROL, "op": "takeover", "owner": self.owner})
            await self._reload()
            await async_redis_shared().set(pump_key(self.session.id), self.owner, ex=settings.MCP_SESSION_TTL_S)
            self.ready.set()
            async for message in layer_messages(self.layer, self.channel, stop=self.closed.is_set, name="mcp session pump"):
                await self.handle(message)
        finally:
            self.ready.set()
            for group in list(self.groups):
                try:
                    await self.layer.group_discard(group, self.channel)
                except Exception:
                    pass
            try:
                if await async_redis_shared().get(pump_key(self.session.id)) == self.owner.encode():
                    await async_redis_shared().delete(pump_key(self.session.id))
            except RedisError:
                pass

    async def _join(self, group: str) -> None:
        if group not in self.groups:
            await self.layer.group_add(group, self.channel)
            self.groups.add(group)

    async def _reload(self) -> None:
        """Re-read the session's subscriptions; join and leave groups to match."""
        uris = {u.decode() if isinstance(u, bytes) else u for u in await async_redis_shared().smembers(subs_key(self.session.id))}
        self.topics = {}
        for uri in uris:
            try:
                self.topics[uri] = subscriptions.parse(uri)
            except Exception:
                continue
        needed = {t.group for t in self.topics.values()} | {control_group(self.session.id), access_group(self.session.user_id),
                                                             VENUE_GROUP}
        for group in sorted(needed - self.groups):
            await self._join(group)
        for group in sorted(self.groups - needed):
            await self.layer.group_discard(group, self.channel)
            self.groups.discard(group)

    async def handle(self, message: dict) -> None:
        kind = message.get("type")
        if kind == CONTROL:
            op = message.get("op")
            if op == "subscriptions":
                await self._reload()
                if message.get("ack"):
                    async with async_redis_shared().pipeline(transaction=False) as pipe:
                        await pipe.rpush(message["ack"], b"1").expire(message["ack"], 10).execute()
            elif op == "takeover" and message.get("owner") != self.owner:
                self.closed.set()
            elif op == "closed":
                self.closed.set()
            elif op == "level":
                self.session.level = message.get("level")
            return
        if kind == "venue.event":
            if SessionPeer(self.session).wants("warning"):
                await self.store.append(self.session.id, {"jsonrpc": "2.0", "method": "notifications/message", "params": {
                    "level": "warning", "logger": "tradingmcp.venue", "data": venue_notice(message)}})
            return
        if kind == ACCESS_CHANGED:
            await self.recheck_access()
            return
        for topic, params in subscriptions.updates(message, self.topics):
            note = {"jsonrpc": "2.0", "method": PUSH, "params": envelope(PUSH, params)}
            await self.store.append(self.session.id, note, None if topic.priority else topic.uri)

    async def recheck_access(self) -> None:
        """The user's access changed (``risk.signals``): a token that no longer authenticates ends
        the session; subscriptions it may no longer read are dropped."""
        auth = await authenticate_bearer_async(self.token_key)
        if auth.identity is None:
            await async_redis_shared().delete(session_key(self.session.id), subs_key(self.session.id))
            self.closed.set()
            return
        self.identity = auth.identity
        kept = await sync_to_async(_still_allowed_closing, thread_sensitive=False)(self.identity, set(self.topics))
        dropped = set(self.topics) - kept
        if dropped:
            await async_redis_shared().srem(subs_key(self.session.id), *sorted(dropped))
            await self._reload()


_pumps: dict[str, Pump] = {}  # session id → the pump this process runs for it


async def _linger_then_stop(pump: Pump) -> None:
    try:
        await asyncio.wait_for(pump.closed.wait(), settings.MCP_SESSION_LINGER_S)
    except asyncio.TimeoutError:
        pass
    await pump.stop()
    if _pumps.get(pump.session.id) is pump:
        del _pumps[pump.session.id]


async def serve_get(scope, receive, send, *, session: Session, identity, token_key: str, last_event_id: str | None) -> None:
    """``GET /mcp`` with ``Accept: text/event-stream``: the session's server→client SSE stream
    (after ``Last-Event-ID`` when given). Runs the session's pump while open, and for
    ``MCP_SESSION_LINGER_S`` after."""
    store = event_store()
    sid = session.id
    if last_event_id:
        stream_id, _, after = last_event_id.partition("/")
        if stream_id != sid or not after:
            after = await store.last_entry(sid)
    else:
        after = await store.last_entry(sid)
    old = _pumps.pop(sid, None)
    if old is not None:
        await old.stop()
    pump = Pump(session, token_key, identity)
    _pumps[sid] = pump
    pump.start()
    try:
        await asyncio.wait_for(pump.ready.wait(), 5)
    except asyncio.TimeoutError:
        log.warning("mcp session %s: the pump was not ready within 5 s", sid)

    async def events():
        nonlocal after
        while not pump.closed.is_set():
            try:
                batch = await store.read(sid, after, block_ms=1000)
            except RedisError as exc:
                log.warning("mcp session %s: event read failed: %s", sid, exc)
                await asyncio.sleep(0.5)
                continue
            if not batch:
                continue
            after = batch[-1][0].partition("/")[2]
            for event_id, raw, _ in coalesce(batch):
                if raw:
                    yield {"event": "message", "id": event_id, "data": raw.decode()}

    headers = {"Cache-Control": "no-cache, no-transform", "mcp-session-id": sid}
    try:
        await EventSourceResponse(events(), headers=headers, ping=15)(scope, receive, send)
    finally:
        if not pump.closed.is_set():
            asyncio.ensure_future(_linger_then_stop(pump))
        else:
            await pump.stop()
            if _pumps.get(sid) is pump:
                del _pumps[sid]


async def serve_related(scope, receive, send, *, session: Session, handler, headers: dict | None = None) -> None:
    """Answer one POST as an SSE stream (MCP "Streamable HTTP → Sending Messages to the
    Server"): the messages ``handler(peer)`` sends the client while it runs (progress,
    ``elicitation/create``) and then its JSON-RPC response (``handler``'s return value)."""
    queue: asyncio.Queue = asyncio.Queue()
    peer = SessionPeer(session, related=queue)
    done = object()

    async def run():
        try:
            response = await handler(peer)
        except Exception:
            log.exception("mcp session %s: request failed", session.id)
            response = None
        await queue.put(response if response is not None else done)
        await queue.put(done)

    task = asyncio.create_task(run())

    async def events():
        while True:
            item = await queue.get()
            if item is done:
                return
            yield {"event": "message", "data": orjson.dumps(item).decode()}

    try:
        await EventSourceResponse(events(), headers={"Cache-Control": "no-cache, no-transform", **(headers or {})})(scope, receive, send)
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
