"""MCP over WebSocket at ``/mcp/ws`` (subprotocol ``mcp``), with server push, as a raw ASGI app.

Wire format: one JSON-RPC 2.0 message per text frame, both ways (what the mcp SDK's own, now
deprecated, ``mcp.client.websocket`` transport and ``tradingmcp_client.websocket`` speak). Every
request is answered by the **same** code as ``/mcp``: ``mcpapi.endpoint.MCPEndpoint.handle_request``
(``tools/list`` filtered by the token's scopes and ``tools/call`` through FastMCP's public API, the
guard of ``mcpapi.guard.mcp_tool`` with its scope checks, typed errors and audit; ``initialize``,
``ping``, resources and prompts answered by the SDK). Nothing here implements a tool.

The handshake is refused (HTTP 403) when ``Host`` is not in ``ALLOWED_HOSTS`` or ``Origin`` names
another site (``core.hostcheck``), and (HTTP 429, or close 4429 on a server without the ASGI
denial-response extension) when its client IP made more than ``MCP_UNAUTHENTICATED_PER_MINUTE``
requests or handshakes without a valid token this minute (``risk.ratelimit``, the counter
``/mcp`` uses); a handshake whose token fails, or that never authenticates, counts one. Every message to the agent (responses, pushes, errors) goes
through the trust envelope (``risk.trust``).

Authentication (same tokens, same Redis-cached identity as ``/mcp``):

- ``Authorization: Bearer tmcp_...`` on the handshake, or, when the client cannot set headers
  (browsers), a first message ``{"jsonrpc": "2.0", "id": 0, "method": "authenticate", "params":
  {"token": "tmcp_..."}}`` within ``AUTH_TIMEOUT_S``, answered ``{"authenticated": true,
  "sessionId", "user", "scopes"}``.
- A missing, bad, expired or revoked token closes the socket with code 4401 (reason says why).
  The token is re-checked on every request (one Redis read, as ``/mcp`` does), and the connection
  listens on its user's access group (``risk.signals``): revoking the token or deactivating the
  user closes it within a second, a deleted grant stops that account's pushes, and the socket
  closes when the token expires. The per-token rate limit applies per request:
  JSON-RPC error ``-32029`` with ``data.retryAfter`` (seconds).

Server push (MCP notifications, method ``notifications/resources/updated``; extra params are
allowed by the spec's schema, so ``mcp.ClientSession`` passes them to its ``message_handler``):

- after a successful ``subscribe_stream`` tool call on the connection, each update of that
  stream: ``{"uri": "binance://stream/<stream>", "stream", "data" (Binance's payload, or our
  bookTicker/kline shapes for those), "dropped" (updates of this stream dropped just before this
  one), "droppedTotal" (on this connection)}``; ``unsubscribe_stream`` stops them. Updates come
  from the ingester's Channels groups (``market.<SYMBOL>`` for bookTicker/kline_*,
  ``stream.<name>`` for the others, see ``marketdata.ingester``).
- order, balance and activity events of every account the token may read (``account.<id>``
  groups, ``core.events``): ``{"uri": "tradingmcp://account/<id>/<kind>", "account", "kind",
  "data"}``.

- ``resources/subscribe`` of a ``tradingmcp://`` URI (``mcpapi.subscriptions``: market tickers,
  books and klines, an account, its open orders, its activity), authorized when subscribed and
  again on every access change: ``{"uri", "value"}`` on each update (market updates coalesced as
  below, account ones never dropped). ``resources/subscribe`` of ``binance://stream/<stream>`` is
  the ``subscribe_stream`` tool.

MCP utilities on the connection (the same code as ``/mcp`` sessions, ``mcpapi.sessions.Peer``):
``logging/setLevel`` sets the connection's level for ``notifications/message``; a request's
``_meta.progressToken`` gets ``notifications/progress``; a client that declared ``elicitation`` in
``initialize`` may be sent ``elicitation/create`` (confirm-mode orders), whose answer it sends
back as a JSON-RPC response frame.

Backpressure: each connection has one sender task and an ``Outbox``. Responses and account
events go to a priority queue that is never dropped (a client that lets more than
``PRIORITY_LIMIT`` of them pile up is disconnected with 4408; it can reconnect and resume).
Market updates go to a bounded FIFO of ``MARKET_QUEUE`` entries; when it is full a new update
replaces the oldest queued update of the same stream (latest wins), else the oldest queued update
of any stream is dropped; the dropped counts ride on the stream's next notification.

Sessions: the accept carries ``Mcp-Session-Id``; ``initialize`` results carry it in
``_meta["tradingmcp/sessionId"]``. A client that reconnects with ``Mcp-Session-Id: <id>`` (header or
``?session_id=`` query) with the same token gets its pushed subscriptions and log level back (kept in Redis for
``SESSION_TTL_S`` after the last change); an id of another token is ignored (a new session starts).
"""
from __future__ import annotations

import asyncio
import collections
import logging
import uuid
from urllib.parse import parse_qs

import orjson
from asgiref.sync import sync_to_async
from django.conf import settings
from mcp import types
from pydantic import ValidationError

from marketdata.cache import read_ahead, read_ahead_keys
from core.events import BATCH_TYPE, layer_messages
from core.hostcheck import host_allowed, origin_allowed
from marketdata.ingester import VENUE_GROUP
from mcpapi import sessions, subscriptions
from mcpapi.endpoint import MCPEndpoint, declare_capabilities, parse_message
from risk import access, ratelimit
from risk.authentication import Identity, authenticate_bearer_async, known_credential
from risk.signals import ACCESS_CHANGED, access_group
from risk.trust import envelope, error_text
from core.errors import NotFound, TradingError

log = logging.getLogger(__name__)

SUBPROTOCOL = "mcp"
AUTH_TIMEOUT_S = settings.MCP_WS_AUTH_TIMEOUT_S
MARKET_QUEUE = settings.MCP_WS_MARKET_QUEUE
PRIORITY_LIMIT = settings.MCP_WS_PRIORITY_LIMIT
SESSION_TTL_S = settings.MCP_WS_SESSION_TTL_S
MAX_CONCURRENT_REQUESTS = settings.MCP_WS_MAX_CONCURRENT
PUSH = "notifications/resources/updated"  # the trust envelope's tool_name of a pushed notification
RATE_LIMITED = -32029
CLOSE_UNAUTHORIZED = 4401
CLOSE_TOO_SLOW = 4408
CLOSE_TOO_MANY = 4429


def stream_uri(stream: str) -> str:
    """The resource URI of a Binance stream in push notifications (``binance://stream/btcusdt@trade``)."""
    return f"binance://stream/{stream}"


def group_for_stream(stream: str) -> str:
    """The Channels group the ingester pushes ``stream`` to (``marketdata.ingester.push``):
    ``market.<SYMBOL>`` for ``<s>@bookTicker`` and ``<s>@kline_<i>``, else ``stream.<s>.<kind>``."""
    from marketdata.ingester import market_group, stream_group

    sym, _, kind = stream.partition("@")
    if kind == "bookTicker" or kind.startswith("kline_"):
        return market_group(sym.upper())
    return stream_group(stream)


def session_key(session_id: str) -> str:
    """Redis key of a session's record: ``{token_id, user_id, streams}`` (``SESSION_TTL_S``)."""
    return f"{settings.REDIS_KEY_PREFIX}mcpws:session:{session_id}"


def _response_error(request_id, code: int, message: str, data=None) -> dict:
    err = {"code": code, "message": error_text(message)}
    if data is not None:
        err["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": err}


class Outbox:
    """The send queue of one connection (see module docstring, "Backpressure").

    ``put_priority(text)``: a frame that is never dropped. ``put_market(stream, params)``: a
    market update (``params`` of its notification, without the drop counters). ``pop()`` returns
    the next frame to send (priority first) or None; ``wait()`` blocks until there is one.
    Counters: ``dropped_total``, ``market_in``.
    """

    def __init__(self, market_capacity: int = MARKET_QUEUE):
        self.capacity = max(1, market_capacity)
        self.priority: collections.deque = collections.deque()
        self.market: collections.deque = collections.deque()  # [stream, params, dropped]
        self.carry: dict[str, int] = {}
        self.dropped_total = 0
        self.market_in = 0
        self._ready = asyncio.Event()

    def put_priority(self, text: str) -> None:
        self.priority.append(text)
        self._ready.set()

    def put_market(self, stream: str, params: dict) -> None:
        self.market_in += 1
        dropped = 0
        if len(self.market) >= self.capacity:
            victim = next((e for e in self.market if e[0] == stream), None)
            if victim is not None:  # latest wins: the queued update of this stream is stale
                self.market.remove(victim)
                dropped = victim[2] + 1
            else:
                old = self.market.popleft()
                self.carry[old[0]] = self.carry.get(old[0], 0) + old[2] + 1
            self.dropped_total += 1
        dropped += self.carry.pop(stream, 0)
        self.market.append([stream, params, dropped])
        self._ready.set()

    def pop(self) -> str | None:
        if self.priority:
            return self.priority.popleft()
        if self.market:
            stream, params, dropped = self.market.popleft()
            params = {**params, "dropped": dropped, "droppedTotal": self.dropped_total}
            return orjson.dumps({"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": params}).decode()
        return None

    async def wait(self) -> None:
        while not (self.priority or self.market):
            self._ready.clear()
            await self._ready.wait()

    def __len__(self) -> int:
        return len(self.priority) + len(self.market)


class _Closed(Exception):
    """The connection is over (client went away or we closed it)."""


class Connection:
    """One ``/mcp/ws`` connection: handshake, auth, request loop, push, cleanup."""

    def __init__(self, app: "MCPWebSocketApp", scope, receive, send):
        self.app, self.scope, self._receive, self._send = app, scope, receive, send
        self.endpoint: MCPEndpoint = app.endpoint
        self.layer = app.get_layer()
        self.outbox = Outbox(app.market_queue)
        self.identity: Identity | None = None
        self.token_key = ""
        self.meta: dict = {}
        self.session_id = ""
        self.streams: set[str] = set()
        self.groups: set[str] = set()
        self.account_ids: set[int] = set()
        self.channel: str | None = None
        self.tasks: list[asyncio.Task] = []
        self.inflight: set[asyncio.Task] = set()
        self.closed = False
        self.slots = asyncio.Semaphore(MAX_CONCURRENT_REQUESTS)
        self.topics: dict[str, subscriptions.Topic] = {}  # resources/subscribe'd tradingmcp:// URIs
        self.peer = SocketPeer(self)

    # -- ASGI I/O -------------------------------------------------------------------------------
    async def receive(self) -> dict:
        message = await self._receive()
        if message["type"] == "websocket.disconnect":
            self.closed = True
            raise _Closed()
        return message

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if not self.closed:
            self.closed = True
            try:
                await self._send({"type": "websocket.close", "code": code, "reason": reason})
            except Exception:  # already gone
                pass

    # -- lifecycle --------------------------------------------------------------------------------
    async def run(self) -> None:
        try:
            await self._run()
        except _Closed:
            pass
        finally:
            await self._cleanup()

    async def _run(self) -> None:
        message = await self.receive()
        if message["type"] != "websocket.connect":
            return
        offered = self.scope.get("subprotocols") or []
        if offered and SUBPROTOCOL not in offered:
            await self._send({"type": "websocket.close", "code": 1002})  # refuses the handshake (HTTP 403)
            self.closed = True
            return
        headers = dict(self.scope.get("headers") or [])
        if not host_allowed(headers, self.scope.get("server")) or not origin_allowed(headers):
            await self._send({"type": "websocket.close", "code": 1008})  # refuses the handshake (HTTP 403)
            self.closed = True
            return
        query = parse_qs((self.scope.get("query_string") or b"").decode("latin-1"))
        wanted_session = headers.get(b"mcp-session-id", b"").decode("latin-1").strip() or (query.get("session_id") or [""])[0]
        self.session_id = uuid.uuid4().hex
        accept = {"type": "websocket.accept", "headers": []}
        if offered:
            accept["subprotocol"] = SUBPROTOCOL
        raw_auth = headers.get(b"authorization", b"")
        self.ip = (self.scope.get("client") or ("", 0))[0] or ""
        if not known_credential(raw_auth) and await ratelimit.unauthenticated_blocked(self.ip):
            await self._refuse_too_many()
            return
        if raw_auth:
            self.identity = (await authenticate_bearer_async(raw_auth)).identity
            if self.identity is not None:
                self.token_key = raw_auth.decode("latin-1").partition(" ")[2].strip()
                await self._resume(wanted_session)
        accept["headers"].append((b"mcp-session-id", self.session_id.encode()))
        await self._send(accept)
        if raw_auth and self.identity is None:
            await ratelimit.unauthenticated_count(self.ip)
            await self.close(CLOSE_UNAUTHORIZED, "Invalid, expired or revoked token.")
            return
        if self.identity is None and not await self._first_message_auth(wanted_session):
            await ratelimit.unauthenticated_count(self.ip)
            return
        await self._start()
        while True:
            message = await self.receive()
            text = message.get("text")
            if text is None and message.get("bytes") is not None:
                text = message["bytes"].decode("utf-8", "replace")
            if text is not None:
                await self.slots.acquire()
                task = asyncio.create_task(self._handle_frame(text))
                self.inflight.add(task)
                task.add_done_callback(self._request_done)

    async def _refuse_too_many(self) -> None:
        """Refuse the handshake of a client IP over ``MCP_UNAUTHENTICATED_PER_MINUTE`` (as ``/mcp``
        does its requests): HTTP 429 with ``Retry-After`` where the server supports the ASGI
        WebSocket Denial Response extension (uvicorn), else accept and close with 4429."""
        self.closed = True
        if "websocket.http.response" in (self.scope.get("extensions") or {}):
            body = b'{"detail": "Too Many Requests: too many connections without a valid token from this address; retry in 60 s."}'
            await self._send({"type": "websocket.http.response.start", "status": 429, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), (b"retry-after", b"60")]})
            await self._send({"type": "websocket.http.response.body", "body": body})
            return
        await self._send({"type": "websocket.accept"})
        await self._send({"type": "websocket.close", "code": CLOSE_TOO_MANY,
                          "reason": "Too many connections without a valid token from this address; retry in 60 s."})

    def _request_done(self, task: asyncio.Task) -> None:
        self.inflight.discard(task)
        self.slots.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("mcp ws request failed", exc_info=task.exception())

    async def _first_message_auth(self, wanted_session: str) -> bool:
        try:
            message = await asyncio.wait_for(self.receive(), AUTH_TIMEOUT_S)
        except asyncio.TimeoutError:
            await self.close(CLOSE_UNAUTHORIZED, f"No token: send Authorization: Bearer on the handshake or an 'authenticate' request within {AUTH_TIMEOUT_S:.0f} s.")
            return False
        try:
            raw = orjson.loads(message.get("text") or message.get("bytes") or b"")
        except orjson.JSONDecodeError:
            raw = {}
        rid = raw.get("id") if isinstance(raw, dict) else None
        if not isinstance(raw, dict) or raw.get("method") != "authenticate":
            await self._send_now(_response_error(rid, CLOSE_UNAUTHORIZED, "Unauthorized: authenticate first (method 'authenticate', params {token})."))
            await self.close(CLOSE_UNAUTHORIZED, "Authenticate first.")
            return False
        params = raw.get("params")
        key = params.get("token") if isinstance(params, dict) else None
        key = key.strip() if isinstance(key, str) else ""
        self.identity = (await authenticate_bearer_async(key)).identity if key and " " not in key else None
        if self.identity is None:
            await self._send_now(_response_error(rid, CLOSE_UNAUTHORIZED, "Invalid, expired or revoked token."))
            await self.close(CLOSE_UNAUTHORIZED, "Invalid, expired or revoked token.")
            return False
        self.token_key = key
        await self._resume(wanted_session)
        await self._send_now({"jsonrpc": "2.0", "id": rid, "result": self._auth_info()})
        return True

    def _auth_info(self) -> dict:
        return {"authenticated": True, "sessionId": self.session_id, "user": self.identity.user.get_username(),
                "scopes": sorted(self.identity.scopes)}

    async def _send_now(self, message: dict) -> None:
        await self._send({"type": "websocket.send", "text": orjson.dumps(message).decode()})

    async def _resume(self, wanted: str) -> None:
        """Take over session ``wanted`` when it belongs to this token: its streams come back."""
        if not wanted:
            return
        from core.redis import async_redis_shared

        try:
            raw = await async_redis_shared().get(session_key(wanted))
        except Exception as exc:
            log.warning("mcp ws: session lookup failed: %s", exc)
            return
        record = orjson.loads(raw) if raw else None
        if record and record.get("token_id") == self.identity.token_id:
            self.session_id = wanted
            self.streams = set(record.get("streams") or [])
            self.peer.level = record.get("level")
            for uri in record.get("topics") or ():
                try:
                    self.topics[uri] = subscriptions.parse(uri)
                except Exception:
                    continue

    async def _save_session(self) -> None:
        from core.redis import async_redis_shared

        record = {"token_id": self.identity.token_id, "user_id": self.identity.user.pk, "streams": sorted(self.streams),
                  "topics": sorted(self.topics), "level": self.peer.level}
        try:
            await async_redis_shared().set(session_key(self.session_id), orjson.dumps(record), ex=SESSION_TTL_S)
        except Exception as exc:
            log.warning("mcp ws: session save failed: %s", exc)

    async def _start(self) -> None:
        from mcpapi.guard import tool_allowed

        self.meta = {"REMOTE_ADDR": (self.scope.get("client") or ("", 0))[0], "MCP_TRANSPORT": "websocket"}
        # The default "specific" prefix, as Channels' own consumers use: channels_redis serves all of
        # a process's channels with one blocking pop on one key per prefix, under one lock that the
        # popper keeps until a message comes for *its* key. A second prefix ("mcpws." before) let a
        # dashboard socket's pop starve every MCP WebSocket of the process (or the reverse).
        self.channel = await self.layer.new_channel()
        if tool_allowed("get_account", self.identity):
            self.account_ids = set(await sync_to_async(_readable_account_ids)(self.identity))
        await self._join(access_group(self.identity.user.pk))
        await self._join(VENUE_GROUP)
        for account_id in sorted(self.account_ids):
            await self._join(f"account.{account_id}")
        for stream in sorted(self.streams):
            await self._join(group_for_stream(stream))
        if self.topics:
            kept = await sync_to_async(_still_allowed, thread_sensitive=False)(self.identity, set(self.topics))
            self.topics = {uri: topic for uri, topic in self.topics.items() if uri in kept}
        for topic in self.topics.values():
            await self._join(topic.group)
        await self._save_session()
        self.tasks = [asyncio.create_task(self._sender()), asyncio.create_task(self._layer_reader())]
        if self.identity.expires_at is not None:
            self.tasks.append(asyncio.create_task(self._expire_at(self.identity.expires_at)))

    async def _join(self, group: str) -> None:
        if group not in self.groups:
            await self.layer.group_add(group, self.channel)
            self.groups.add(group)

    async def _leave_unused(self) -> None:
        needed = {f"account.{a}" for a in self.account_ids} | {group_for_stream(s) for s in self.streams} | \
            {access_group(self.identity.user.pk), VENUE_GROUP} | {t.group for t in self.topics.values()}
        for group in sorted(self.groups - needed):
            await self.layer.group_discard(group, self.channel)
            self.groups.discard(group)

    async def _cleanup(self) -> None:
        for task in list(self.inflight) + self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, *self.inflight, return_exceptions=True)
        if self.channel is not None:
            for group in list(self.groups):
                try:
                    await self.layer.group_discard(group, self.channel)
                except Exception:
                    pass
            await self._save_session()

    # -- requests ---------------------------------------------------------------------------------
    async def _handle_frame(self, text: str) -> None:
        try:
            raw = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            self._reply(_response_error(None, types.PARSE_ERROR, f"Parse error: {exc}"))
            return
        try:
            message = parse_message(raw)
        except ValidationError as exc:
            rid = raw.get("id") if isinstance(raw, dict) else None
            self._reply(_response_error(rid, types.INVALID_REQUEST, f"Validation error: {exc}"))
            return
        root = message.root
        if isinstance(root, (types.JSONRPCResponse, types.JSONRPCError)):
            self.peer.answered(raw)  # the client's answer to one of our requests (elicitation)
            return
        if not isinstance(root, types.JSONRPCRequest):
            return  # notifications (initialized, cancelled): nothing to answer
        if root.method == "authenticate":
            self._reply({"jsonrpc": "2.0", "id": root.id, "result": self._auth_info()})
            return
        # The token re-check, the rate-limit count and the keys the call reads: one Redis pipeline.
        auth = await authenticate_bearer_async(self.token_key, count=True, read_ahead=read_ahead_keys(root.method, root.params))
        identity, retry_after = auth.identity, auth.retry_after
        if identity is None:
            self._reply(_response_error(root.id, CLOSE_UNAUTHORIZED, "This token was revoked or has expired."))
            await self._flush_then_close(CLOSE_UNAUTHORIZED, "Token revoked or expired.")
            return
        if retry_after:
            self._reply(_response_error(root.id, RATE_LIMITED, f"Too Many Requests: this token's rate limit is reached; retry in {retry_after} s.",
                                        {"retryAfter": retry_after}))
            return
        if root.method in ("resources/subscribe", "resources/unsubscribe", "logging/setLevel"):
            answered = await self._session_method(root, identity)
            if answered is not None:
                self._reply(answered)
                return
            root = self._resource_subscription_as_tool_call(root)
        with read_ahead(auth.values):
            response = await self.endpoint.handle_request(root, identity, self.meta, peer=self.peer)
        await self._after(root, response)
        self._reply(response)

    async def _session_method(self, root: types.JSONRPCRequest, identity: Identity) -> dict | None:
        """``logging/setLevel`` (the level of this connection) and ``resources/subscribe`` /
        ``unsubscribe`` of ``tradingmcp://`` URIs (``mcpapi.subscriptions``: authorized, then
        pushed with their value); None for a ``binance://stream/`` URI (the stream tools)."""
        params = root.params if isinstance(root.params, dict) else {}
        ok = {"jsonrpc": "2.0", "id": root.id, "result": {}}
        if root.method == "logging/setLevel":
            try:
                await sessions.set_level(None, params)
            except ValueError as exc:
                return _response_error(root.id, types.INVALID_PARAMS, str(exc))
            self.peer.level = params["level"]
            await self._save_session()
            return ok
        uri = params.get("uri")
        if not isinstance(uri, str) or not uri.startswith(subscriptions.SCHEME):
            return None
        try:
            topic = subscriptions.parse(uri)
            if root.method == "resources/subscribe":
                await sync_to_async(_authorize, thread_sensitive=False)(identity, topic)
        except NotFound as exc:
            return _response_error(root.id, -32002, str(exc))
        except TradingError as exc:
            return _response_error(root.id, types.INVALID_PARAMS, str(exc))
        if root.method == "resources/subscribe":
            self.topics[topic.uri] = topic
            await self._join(topic.group)
        else:
            self.topics.pop(topic.uri, None)
            await self._leave_unused()
        await self._save_session()
        return ok

    def _resource_subscription_as_tool_call(self, root: types.JSONRPCRequest) -> types.JSONRPCRequest:
        """``resources/subscribe {uri: "binance://stream/<stream>"}`` is the ``subscribe_stream`` tool
        (likewise unsubscribe): the same tool call, scope check and audit."""
        uri = str((root.params or {}).get("uri") or "")
        stream = uri.removeprefix("binance://stream/") if uri.startswith("binance://stream/") else uri
        tool = "subscribe_stream" if root.method == "resources/subscribe" else "unsubscribe_stream"
        return types.JSONRPCRequest(jsonrpc="2.0", id=root.id, method="tools/call",
                                    params={"name": tool, "arguments": {"stream": stream}})

    async def _after(self, root: types.JSONRPCRequest, response: dict) -> None:
        """Connection state that follows a request: pushed subscriptions, the session id."""
        result = response.get("result")
        if result is None:
            return
        if root.method == "initialize":
            meta = result.setdefault("_meta", {})
            meta["tradingmcp/sessionId"] = self.session_id
            declare_capabilities(result)
            params = root.params if isinstance(root.params, dict) else {}
            self.peer.capabilities = params.get("capabilities") or {}
            return
        if root.method != "tools/call" or result.get("isError"):
            return
        name = (root.params or {}).get("name")
        if name not in ("subscribe_stream", "unsubscribe_stream"):
            return
        payload = result.get("structuredContent") or {}
        if "result" in payload and isinstance(payload["result"], dict):
            payload = payload["result"]
        stream = payload.get("stream")
        if not stream:
            try:
                payload = orjson.loads(result["content"][0]["text"])
                stream = payload.get("stream")
            except Exception:
                return
        if name == "subscribe_stream":
            self.streams.add(stream)
            await self._join(group_for_stream(stream))
        else:
            self.streams.discard(stream)
            await self._leave_unused()
        await self._save_session()

    def _reply(self, message: dict) -> None:
        self.outbox.put_priority(orjson.dumps(message).decode())
        self._check_overflow()

    def _check_overflow(self) -> None:
        """A client that leaves more than ``PRIORITY_LIMIT`` responses/events unread is cut off
        (4408) rather than have any of them dropped: nothing more is queued for it, and the close
        frame goes out as soon as its socket takes writes again (it may resume with its session)."""
        if len(self.outbox.priority) > PRIORITY_LIMIT and not getattr(self, "_overflowed", False):
            self._overflowed = True
            log.warning("mcp ws: closing session %s: %d responses/events unread", self.session_id, len(self.outbox.priority))
            for task in self.tasks:
                task.cancel()
            self.outbox.priority.clear()
            self.outbox.market.clear()
            self.tasks.append(asyncio.create_task(self.close(
                CLOSE_TOO_SLOW, "Client too slow: responses and account events are never dropped; reconnect with the session id.")))

    async def _flush_then_close(self, code: int, reason: str) -> None:
        for _ in range(100):
            if not self.outbox.priority:
                break
            await asyncio.sleep(0.01)
        await self.close(code, reason)

    # -- access changes ---------------------------------------------------------------------------
    async def recheck_access(self) -> None:
        """The user's access changed somewhere (``risk.signals``): authenticate the token again and
        close (4401) if it no longer authenticates; else narrow the pushed accounts to those it
        may still read (leaving their groups) and keep the new identity."""
        auth = await authenticate_bearer_async(self.token_key)
        if auth.identity is None:
            await self._flush_then_close(CLOSE_UNAUTHORIZED, "Token revoked or expired, or its user deactivated.")
            return
        self.identity = auth.identity
        from mcpapi.guard import tool_allowed

        allowed = set(await sync_to_async(_readable_account_ids)(self.identity)) \
            if tool_allowed("get_account", self.identity) else set()
        self.account_ids &= allowed
        if self.topics:
            kept = await sync_to_async(_still_allowed, thread_sensitive=False)(self.identity, set(self.topics))
            self.topics = {uri: topic for uri, topic in self.topics.items() if uri in kept}
        await self._leave_unused()

    async def _expire_at(self, expires_at: float) -> None:
        """Close the connection (4401) when its token expires (``expires_at``: s since the epoch)."""
        import time

        await asyncio.sleep(max(0.0, expires_at - time.time()))
        await self._flush_then_close(CLOSE_UNAUTHORIZED, "Token expired.")

    # -- push -------------------------------------------------------------------------------------
    async def _sender(self) -> None:
        outbox = self.outbox
        while not self.closed:
            await outbox.wait()
            text = outbox.pop()
            if text is not None:
                await self._send({"type": "websocket.send", "text": text})

    async def _layer_reader(self) -> None:
        async for message in layer_messages(self.layer, self.channel, stop=lambda: self.closed, name="mcp ws"):
            self.deliver(message)

    def deliver(self, message: dict) -> None:
        """Queue one channel-layer message for the client (see module docstring, "Server push")."""
        kind = message.get("type")
        if kind == BATCH_TYPE:  # several account/user events in one message (core.events)
            for one in message.get("messages") or ():
                self.deliver(one)
            return
        if self.topics and (kind == "market.update" or kind == "account.event"):
            for topic, params in subscriptions.updates(message, self.topics):
                params = envelope(PUSH, params)
                if topic.priority:
                    self.outbox.put_priority(orjson.dumps({"jsonrpc": "2.0", "method": PUSH, "params": params}).decode())
                    self._check_overflow()
                else:
                    self.outbox.put_market(topic.uri, params)
        if kind == "market.update":
            stream = f"{str(message.get('symbol', '')).lower()}@{message.get('stream')}"
        elif kind == "stream.message":
            stream = message.get("stream")
        elif kind == "venue.event":
            if self.peer.wants("warning"):
                self._reply({"jsonrpc": "2.0", "method": "notifications/message", "params": {
                    "level": "warning", "logger": "tradingmcp.venue", "data": sessions.venue_notice(message)}})
            return
        elif kind == ACCESS_CHANGED:
            task = asyncio.create_task(self.recheck_access())
            self.inflight.add(task)
            task.add_done_callback(self.inflight.discard)
            return
        elif kind == "account.event":
            account = message.get("account")
            if account in self.account_ids and access.event_visible(self.identity, message.get("data")):
                params = envelope(PUSH, {"uri": f"tradingmcp://account/{account}/{message.get('kind')}", "account": account,
                                         "kind": message.get("kind"), "data": message.get("data")})
                self.outbox.put_priority(orjson.dumps(
                    {"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": params}).decode())
                self._check_overflow()
            return
        else:
            return
        if stream in self.streams:
            self.outbox.put_market(stream, envelope(PUSH, {"uri": stream_uri(stream), "stream": stream, "data": message.get("data")}))


class SocketPeer(sessions.Peer):
    """The client of one ``/mcp/ws`` connection as tools reach it (``mcpapi.sessions.Peer``):
    messages go to its priority queue; its answers to our requests come back as frames."""

    def __init__(self, connection: "Connection"):
        self.connection = connection
        self.capabilities = {}
        self.level = None
        self.pending: dict[str, asyncio.Future] = {}
        self.loop = asyncio.get_running_loop()

    async def notify(self, method: str, params: dict, *, market_key: str | None = None) -> None:
        self.connection._reply({"jsonrpc": "2.0", "method": method, "params": params})

    async def request(self, method: str, params: dict, timeout: float) -> dict:
        request_id = f"tmcp-{uuid.uuid4().hex[:16]}"
        future = asyncio.get_running_loop().create_future()
        self.pending[request_id] = future
        self.connection._reply({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        try:
            response = await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise sessions.PeerError(f"no answer to {method} within {timeout:.0f} s") from None
        finally:
            self.pending.pop(request_id, None)
        if isinstance(response.get("error"), dict):
            raise sessions.PeerError(f"the client answered {method} with error {response['error'].get('code')}")
        if not isinstance(response.get("result"), dict):
            raise sessions.PeerError(f"the client answered {method} without a result")
        return response["result"]

    def answered(self, message: dict) -> None:
        future = self.pending.get(message.get("id")) if isinstance(message.get("id"), str) else None
        if future is not None and not future.done():
            future.set_result(message)


def _authorize(identity: Identity, topic) -> None:
    from django.db import connection

    try:
        subscriptions.authorize(identity, topic)
    finally:
        connection.close()


def _still_allowed(identity: Identity, uris) -> set[str]:
    from django.db import connection

    try:
        return subscriptions.still_allowed(identity, uris)
    finally:
        connection.close()


def _readable_account_ids(identity: Identity) -> list[int]:
    from django.db import connection

    from trading.selectors import accounts_for_user

    try:
        return list(accounts_for_user(identity.user, need="read", token=identity.auth).values_list("id", flat=True))
    finally:
        connection.close()


class MCPWebSocketApp:
    """ASGI app for ``websocket`` scopes at ``/mcp/ws`` (see module docstring).

    Args: ``endpoint``: the ``MCPEndpoint`` whose ``handle_request`` answers requests (default: a
    new one over django-mcp-server's global server, i.e. the same registry as ``/mcp``); ``layer``:
    a Channels layer (default ``channels.layers.get_channel_layer()``); ``market_queue``: the
    bounded market-update queue length per connection.
    """

    def __init__(self, endpoint: MCPEndpoint | None = None, layer=None, market_queue: int = MARKET_QUEUE):
        self.endpoint = endpoint or MCPEndpoint()
        self._layer = layer
        self.market_queue = market_queue
        self.connections: set[Connection] = set()

    def get_layer(self):
        if self._layer is None:
            from channels.layers import get_channel_layer

            return get_channel_layer()
        return self._layer

    async def __call__(self, scope, receive, send):
        if scope["type"] != "websocket":
            return
        conn = Connection(self, scope, receive, send)
        self.connections.add(conn)
        try:
            await conn.run()
        finally:
            self.connections.discard(conn)
