"""The MCP endpoint (streamable HTTP, stateless, JSON responses) as a lean ASGI app at ``/mcp``.

Tools, and everything else the server offers, are declared on one ``FastMCP`` object
(``mcpapi.guard.SERVER``, django-mcp-server's global server) with the guard applied where each
tool is declared (``mcpapi.guard.mcp_tool``). This module is the transport only, on public API:

- the hot methods are answered here: ``tools/call`` through ``FastMCP.call_tool()`` and
  ``tools/list`` through ``FastMCP.list_tools()`` filtered by the token's scopes
  (``mcpapi.guard.call_tool`` / ``list_tools_for``);
- ``resources/list``, ``resources/templates/list`` and ``prompts/list`` are answered per caller by
  the functions ``mcpapi.resources`` / ``mcpapi.prompts`` register in ``mcpapi.guard.CALLER_LISTS``
  (what the token's scopes, accounts and symbols allow);
- every other method (``initialize``, ``ping``, ``resources/*``, ``prompts/*``,
  ``completion/complete``, ``logging/setLevel`` ...) is answered by the SDK itself: the request
  goes to a stateless JSON ``StreamableHTTPSessionManager`` over the same server
  (django-mcp-server's ``DjangoMCP.session_manager``), so the ``initialize`` result, capabilities
  and error shapes are the SDK's. An unknown prompt or resource, which the SDK answers with error
  code 0, is given a standard code (``-32602`` invalid params; ``-32002`` resource not found, MCP
  spec 2025-06-18 "Resources → Error Handling").

One request is: Host and Origin checks (``core.hostcheck``: ``ALLOWED_HOSTS``; a foreign
``Origin`` gets 403) → body read (bounded in size and time) → parse (orjson) → the token through
``risk.authentication.authenticate_bearer_async`` (one pipelined Redis round trip: identity, the
rate-limit count and the cache keys the call will read, ``marketdata.cache.read_ahead``) → headers
checked as the SDK's ``StreamableHTTPServerTransport`` does → the call, with the identity bound
(``mcpapi.guard.identity_bound``) → one JSON response.

Behaviour follows the MCP spec (2025-06-18, "Transports → Streamable HTTP") and matches the SDK's
JSON mode: ``Accept`` must include ``application/json`` (406), ``Content-Type`` must be
``application/json`` (415), a bad ``MCP-Protocol-Version`` header answers 400, notifications answer
202 with no body, a request answers 200 with its JSON-RPC response; a missing or bad token answers
401 with ``WWW-Authenticate: Bearer``; a ``tools/call`` an OAuth access token lacks the scope of
answers 403 ``insufficient_scope`` naming the scopes to ask for (step-up; static tokens get the
tool error, docs/adr/0010-step-up-for-oauth-tokens-only.md); a token over its rate limit answers 429 with
``Retry-After``; a client IP sending more than ``MCP_UNAUTHENTICATED_PER_MINUTE`` requests without
a valid token answers 429; a body not received within ``MCP_BODY_TIMEOUT_S`` answers 408. Batches
are not supported (as in the SDK). Other methods than GET, POST and DELETE answer 405.

Sessions (``mcpapi.sessions``, state in Redis, any worker serves any request): a successful
``initialize`` answers with ``Mcp-Session-Id`` (and declares ``logging`` and
``resources.subscribe``). A request carrying the header is served within that session: its record
is read in the token check's pipelined round trip; an unknown or expired id, or one of another
token, answers 404. ``GET /mcp`` (``Accept: text/event-stream``) opens the session's SSE stream
(``Last-Event-ID`` resumes), ``DELETE /mcp`` ends the session; both answer 400 without the header.
``resources/subscribe`` / ``unsubscribe`` need a session (400 without); ``logging/setLevel``
without one answers ``{}``. A session's ``tools/call`` that may message the client first (a
``_meta.progressToken``; a confirm-mode token whose client declared ``elicitation``) is answered
as an SSE stream when the client accepts one; every other request is answered as without a
session. Clients that never send the header are served statelessly, exactly as before.
"""
from __future__ import annotations

import asyncio
import logging

import orjson
from django.conf import settings
from mcp import types
from mcp.shared.version import SUPPORTED_PROTOCOL_VERSIONS
from pydantic import ValidationError
from redis.exceptions import RedisError

from marketdata.cache import read_ahead, read_ahead_keys
from oauth.selectors import same_oauth_client, www_authenticate
from core.hostcheck import host_allowed, origin_allowed
from core.workers import run_sync
from risk.authentication import Identity, authenticate_bearer_async, credential, known_credential
from risk.ratelimit import unauthenticated_blocked, unauthenticated_count
from core.errors import NotFound, TradingError
from mcpapi import notices, sessions
from mcpapi.guard import CALLER_LISTS, SERVER, call_tool, identity_bound, list_tools_for, scope_missing

log = logging.getLogger(__name__)

DEFAULT_NEGOTIATED_VERSION = "2025-03-26"  # the SDK's default when the header is absent
MAX_BODY_BYTES = 1_000_000
RESOURCE_NOT_FOUND = -32002

__all__ = ["MCPEndpoint", "Identity", "parse_message", "parse_client_request"]


# --- ASGI plumbing -------------------------------------------------------------------------------

def parse_message(raw) -> types.JSONRPCMessage:
    """``types.JSONRPCMessage.model_validate(raw)``, with the common case first: a dict with both
    ``id`` and ``method`` can only be a request, so it is validated as ``JSONRPCRequest`` alone
    instead of trying the four-way union (pydantic validation was ~8 % of a WebSocket call's CPU).
    Anything else, or a request that does not validate, goes through the union, so results and
    ``ValidationError`` messages are the SDK's."""
    if isinstance(raw, dict) and "id" in raw and "method" in raw:
        try:
            return types.JSONRPCMessage(types.JSONRPCRequest.model_validate(raw))
        except ValidationError:
            pass
    return types.JSONRPCMessage.model_validate(raw)


def _request_types() -> dict[str, type]:
    """method name → its request model, from the members of the SDK's ``ClientRequest`` union."""
    import typing

    union = types.ClientRequest.model_fields["root"].annotation
    return {typing.get_args(member.model_fields["method"].annotation)[0]: member for member in typing.get_args(union)}


_REQUEST_TYPES = _request_types()


def parse_client_request(method: str, params) -> types.ClientRequest:
    """``types.ClientRequest.model_validate({"method": method, "params": params})``, validated as
    the one request model whose ``method`` it names instead of trying the 17-way union in turn
    (~2.6x less CPU for a ``tools/call``; py-spy put the union at ~5 % of a ``place_order`` call's
    CPU at 32 connections). An unknown method or a request that does not validate goes through
    the union, so results and ``ValidationError`` messages are the SDK's."""
    raw = {"method": method, "params": params}
    model = _REQUEST_TYPES.get(method)
    if model is not None:
        try:
            return types.ClientRequest(model.model_validate(raw))
        except ValidationError:
            pass
    return types.ClientRequest.model_validate(raw)


def _parse_body(body: bytes):
    """``(raw JSON, parse error)`` of a request body: one of them is None (both for a body over
    the size limit). Parsed once, before authentication, so the read-ahead keys come from it; its
    errors are still answered after authentication, as before."""
    if body == b"\x00too-large":
        return None, None
    try:
        return orjson.loads(body), None
    except orjson.JSONDecodeError as exc:
        return None, exc


async def _read_body(receive) -> bytes | None:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return b"\x00too-large"
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def _send(send, status: int, body: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None) -> None:
    base = [(b"content-type", b"application/json")] if body else []
    base.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": base + (headers or [])})
    await send({"type": "http.response.body", "body": body})


def _error(message: str, code: int = types.INVALID_REQUEST, request_id="server-error") -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}})


def _media_types(value: bytes) -> list[str]:
    return [part.strip() for part in value.decode("latin-1").split(",")]



class _BodyTimeout(Exception):
    pass


async def _read_body_within(receive, timeout: float) -> bytes | None:
    try:
        return await asyncio.wait_for(_read_body(receive), timeout)
    except asyncio.TimeoutError:
        raise _BodyTimeout() from None


def _step_up(root: types.JSONRPCRequest, identity: Identity) -> bytes | None:
    """The ``WWW-Authenticate`` value of a 403 ``insufficient_scope`` for a ``tools/call`` an OAuth
    access token lacks the scope of (MCP authorization spec 2025-11-25, "Scope Challenge
    Handling"; RFC 6750 §3.1): the scopes it has plus the one needed. None otherwise: a static
    bearer token keeps the tool error, docs/adr/0010-step-up-for-oauth-tokens-only.md."""
    if root.method != "tools/call" or identity.kind != "oauth" or not isinstance(root.params, dict):
        return None
    needed = scope_missing(str(root.params.get("name")), identity)
    if needed is None:
        return None
    return www_authenticate(" ".join(sorted({*identity.scopes, needed})), error="insufficient_scope").encode()


def _step_up_error(request_id, response: dict) -> dict:
    """The JSON-RPC body of a step-up 403: the guard's refusal text as the error message."""
    try:
        message = response["result"]["content"][0]["text"]
    except (KeyError, IndexError, TypeError):
        message = "This token lacks the scope this tool needs."
    return _rpc_error(request_id, types.INVALID_REQUEST, f"Forbidden (insufficient_scope): {message}")


def _result(request_id, result) -> dict:
    return {"jsonrpc": "2.0", "id": request_id, "result": result.model_dump(by_alias=True, mode="json", exclude_none=True)}


def _rpc_error(request_id, code: int, message: str) -> dict:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


SESSION_METHODS = ("resources/subscribe", "resources/unsubscribe")  # need a session (or a socket)


def _progress_token(params):
    meta = params.get("_meta") if isinstance(params, dict) else None
    return meta.get("progressToken") if isinstance(meta, dict) else None


def _streams_related(root: types.JSONRPCRequest, session, identity: Identity, headers: dict) -> bool:
    """Is this request of a session answered as an SSE stream (MCP "Streamable HTTP → Sending
    Messages to the Server"), because it may send the client messages first: a ``tools/call``
    with a ``progressToken``, or one a confirm-mode token makes of a client that can elicit?"""
    if root.method != "tools/call" or not any(m.startswith("text/event-stream") for m in _media_types(headers.get(b"accept", b""))):
        return False
    if _progress_token(root.params) is not None:
        return True
    return bool(identity.confirm_orders and session.elicitation)


def declare_capabilities(result: dict) -> None:
    """The ``initialize`` result as the SDK built it, plus what the transports add: ``logging``
    (``logging/setLevel``) and ``resources.subscribe``."""
    capabilities = result.setdefault("capabilities", {})
    capabilities.setdefault("logging", {})
    resources = capabilities.get("resources")
    capabilities["resources"] = {**(resources or {}), "subscribe": True}


class MCPEndpoint:
    """ASGI app answering MCP over streamable HTTP (see module docstring). ``server``: the
    ``FastMCP`` whose tools and handlers answer (default ``mcpapi.guard.SERVER``)."""

    def __init__(self, server=SERVER):
        self.server = server

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        headers = dict(scope["headers"])
        if not host_allowed(headers, scope.get("server")):
            await _send(send, 400, _error("Bad Request: this Host is not served here (ALLOWED_HOSTS)."))
            return
        if not origin_allowed(headers):
            await _send(send, 403, _error("Forbidden: requests from this Origin are not allowed."))
            return
        method = scope["method"]
        if method not in ("POST", "GET", "DELETE"):
            await _send(send, 405, _error("Method Not Allowed"), [(b"allow", b"GET, POST, DELETE")])
            return
        ip = (scope.get("client") or ("", 0))[0] or ""
        raw_auth = headers.get(b"authorization")
        if not known_credential(raw_auth) and await unauthenticated_blocked(ip):
            await _send(send, 429, _error("Too Many Requests: too many requests without a valid token from this "
                                          "address; retry in 60 s."), [(b"retry-after", b"60")])
            return
        if method == "POST":
            try:
                body = await _read_body_within(receive, settings.MCP_BODY_TIMEOUT_S)
            except _BodyTimeout:
                await _send(send, 408, _error("Request Timeout: the request body did not arrive in time."))
                return
            if body is None:
                return
            raw, parse_error = _parse_body(body)
        else:
            body, raw, parse_error = b"", None, None
        keys = read_ahead_keys(raw.get("method"), raw.get("params")) if isinstance(raw, dict) else []
        sid = headers.get(b"mcp-session-id", b"").decode("latin-1").strip()
        if sid and sessions.valid_session_id(sid):
            keys = [*keys, sessions.session_key(sid)]  # the session record rides on the token check
        try:
            auth = await authenticate_bearer_async(raw_auth, count=True, read_ahead=keys) if credential(raw_auth) else None
        except RedisError as exc:  # Redis down or restarting: a clear, retryable answer, nothing changed
            log.warning("MCP: token cache unreachable (%s: %s)", type(exc).__name__, exc)
            await _send(send, 503, _error("Service Unavailable: the token cache (Redis) is unreachable; nothing was "
                                          "changed, retry in 1 s."), [(b"retry-after", b"1")])
            return
        if auth is None or auth.identity is None:
            await unauthenticated_count(ip)
            await _send(send, 401, orjson.dumps({"detail": "Invalid, expired or revoked token, or none was sent."}),
                        [(b"www-authenticate", www_authenticate().encode())])
            return
        if auth.retry_after:
            await _send(send, 429, _error(f"Too Many Requests: this token's rate limit is reached; retry in {auth.retry_after} s."),
                        [(b"retry-after", str(auth.retry_after).encode())])
            return
        if method != "POST":
            await self.session_request(scope, receive, send, headers, sid, auth)
            return
        if not any(m.startswith("application/json") for m in _media_types(headers.get(b"accept", b""))):
            await _send(send, 406, _error("Not Acceptable: Client must accept application/json"))
            return
        content_type = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip()
        if content_type != "application/json":
            await _send(send, 415, _error("Unsupported Media Type: Content-Type must be application/json"))
            return
        if body == b"\x00too-large":
            await _send(send, 413, _error(f"Payload Too Large: at most {MAX_BODY_BYTES} bytes"))
            return
        if parse_error is not None:
            await _send(send, 400, _error(f"Parse error: {parse_error}", types.PARSE_ERROR))
            return
        try:
            message = parse_message(raw)
        except ValidationError as exc:
            await _send(send, 400, _error(f"Validation error: {exc}", types.INVALID_PARAMS))
            return
        root = message.root
        version = headers.get(b"mcp-protocol-version", DEFAULT_NEGOTIATED_VERSION.encode()).decode("latin-1")
        initialize = isinstance(root, types.JSONRPCRequest) and root.method == "initialize"
        if not initialize:
            if version not in SUPPORTED_PROTOCOL_VERSIONS:
                await _send(send, 400, _error(
                    f"Bad Request: Unsupported protocol version: {version}. "
                    f"Supported versions: {', '.join(SUPPORTED_PROTOCOL_VERSIONS)}"))
                return
        session = None
        if sid and not initialize:
            session = await self.session_of(sid, auth)
            if session is None:
                await _send(send, 404, _error("Not Found: unknown or expired session; initialize a new one."))
                return
        if not isinstance(root, types.JSONRPCRequest):
            if session is not None and isinstance(root, (types.JSONRPCResponse, types.JSONRPCError)):
                await sessions.deliver_reply(session, raw)  # the answer to one of our requests (elicitation)
            await _send(send, 202)  # notifications and responses: accepted, nothing to answer
            return
        if session is None and root.method in SESSION_METHODS:
            await _send(send, 400, _error(f"Bad Request: {root.method} needs a session: send the Mcp-Session-Id "
                                          "header the initialize response carried."))
            return
        meta = {"REMOTE_ADDR": ip, "MCP_TRANSPORT": "streamable-http"}
        if session is not None:
            await sessions.session_touch(session)
            if _streams_related(root, session, auth.identity, headers):
                async def answer(peer):
                    with read_ahead(auth.values):
                        return await self.handle_request(root, auth.identity, meta, session=session, peer=peer)

                await sessions.serve_related(scope, receive, send, session=session, handler=answer,
                                             headers={"mcp-session-id": session.id})
                return
        with read_ahead(auth.values):
            response = await self.handle_request(root, auth.identity, meta, session=session)
        challenge = _step_up(root, auth.identity)
        if challenge is not None:  # refused (and audited) by the guard; the OAuth client may step up
            await _send(send, 403, orjson.dumps(_step_up_error(root.id, response)), [(b"www-authenticate", challenge)])
            return
        extra = []
        if initialize and "result" in response:
            session = await sessions.session_create(auth.identity, root.params)
            declare_capabilities(response["result"])
            extra.append((b"mcp-session-id", session.id.encode()))
        await _send(send, 200, orjson.dumps(response), extra)

    async def session_of(self, sid: str, auth) -> "sessions.Session | None":
        """The session ``sid`` names when it belongs to the caller's token (read with the token
        check when it could be), else None. An OAuth client that stepped up to a new grant
        (``oauth.selectors.same_oauth_client``) keeps its session, which then belongs to the new
        grant; any other token, even of the same user, gets None (404)."""
        if not sessions.valid_session_id(sid):
            return None
        key = sessions.session_key(sid)
        session = sessions.Session.from_bytes(auth.values[key]) if key in auth.values else await sessions.session_load(sid)
        if session is None or session.user_id != auth.identity.user.pk:
            return None
        if session.token_id != auth.identity.token_id:
            # Another credential of the same user: only the same OAuth client after a step-up
            # (its new access token stands for a new grant) continues the session, now as that grant.
            if auth.identity.kind != "oauth" or not await run_sync(
                    same_oauth_client, user_id=session.user_id, token_ids=(session.token_id, auth.identity.token_id)):
                return None
            session.token_id = auth.identity.token_id
            await sessions.session_save(session)
        return session

    async def session_request(self, scope, receive, send, headers: dict, sid: str, auth) -> None:
        """``GET /mcp`` (the session's SSE stream) and ``DELETE /mcp`` (end the session), MCP spec
        "Streamable HTTP → Listening for Messages from the Server" and "Session Management"."""
        if not sid:
            await _send(send, 400, _error("Bad Request: Missing Mcp-Session-Id header (initialize first)."))
            return
        session = await self.session_of(sid, auth)
        if session is None:
            await _send(send, 404, _error("Not Found: unknown or expired session; initialize a new one."))
            return
        if scope["method"] == "DELETE":
            await sessions.session_delete(session)
            await _send(send, 200)
            return
        if not any(m.startswith("text/event-stream") for m in _media_types(headers.get(b"accept", b""))):
            await _send(send, 406, _error("Not Acceptable: Client must accept text/event-stream"))
            return
        await sessions.session_touch(session)
        last = headers.get(b"last-event-id", b"").decode("latin-1").strip() or None
        await sessions.serve_get(scope, receive, send, session=session, identity=auth.identity,
                                 token_key=credential(headers.get(b"authorization")), last_event_id=last)

    async def handle_request(self, root: types.JSONRPCRequest, identity: Identity, meta: dict | None = None, *,
                             session=None, peer=None) -> dict:
        """Answer one JSON-RPC request of ``identity`` (see module docstring); the JSON-RPC
        response as a dict. Used by ``/mcp`` and ``/mcp/ws`` alike. ``session``: the caller's
        ``mcpapi.sessions.Session`` (None: stateless); ``peer``: where messages to the client go
        while it runs (default: the session's stream)."""
        if peer is None and session is not None:
            peer = sessions.SessionPeer(session)
        token = _progress_token(root.params)
        with identity_bound(identity, meta), sessions.peer_bound(peer, token):
            if root.method == "tools/call" or root.method == "tools/list":
                try:
                    request = parse_client_request(root.method, root.params).root
                except ValidationError as exc:
                    return _rpc_error(root.id, types.INVALID_PARAMS, f"Invalid request parameters: {exc}")
                if isinstance(request, types.ListToolsRequest):
                    return _result(root.id, types.ListToolsResult(tools=await list_tools_for(identity)))
                result = await call_tool(request.params.name, request.params.arguments or {})
                await notices.after_call(request.params.name, request.params.arguments or {}, result, identity)
                return _result(root.id, result)
            if root.method in SESSION_METHODS or root.method == "logging/setLevel":
                return await self.session_answer(root, identity, session)
            listing = CALLER_LISTS.get(root.method)  # resources, templates, prompts: what this caller may use
            if listing is not None:
                return _result(root.id, await listing(identity))
            return await self.sdk_answer(root)

    async def session_answer(self, root: types.JSONRPCRequest, identity: Identity, session) -> dict:
        """``logging/setLevel``, ``resources/subscribe`` and ``resources/unsubscribe``, answered
        from the session (``mcpapi.sessions``); ``logging/setLevel`` without one answers ``{}``."""
        params = root.params if isinstance(root.params, dict) else {}
        try:
            if root.method == "logging/setLevel":
                return {"jsonrpc": "2.0", "id": root.id, "result": await sessions.set_level(session, params)}
            uri = params.get("uri")
            if not isinstance(uri, str):
                return _rpc_error(root.id, types.INVALID_PARAMS, "Invalid request parameters: 'uri' (a string) is required.")
            if root.method == "resources/subscribe":
                result = await sessions.subscribe(session, identity, uri)
            else:
                result = await sessions.unsubscribe(session, uri)
        except ValueError as exc:
            return _rpc_error(root.id, types.INVALID_PARAMS, str(exc))
        except NotFound as exc:
            return _rpc_error(root.id, RESOURCE_NOT_FOUND, str(exc))
        except TradingError as exc:
            return _rpc_error(root.id, types.INVALID_PARAMS, str(exc))
        return {"jsonrpc": "2.0", "id": root.id, "result": result}

    async def sdk_answer(self, root: types.JSONRPCRequest) -> dict:
        """Have the SDK answer ``root``: one request to a stateless JSON
        ``StreamableHTTPSessionManager`` over the server (its public ASGI entry point,
        ``handle_request``), in process. Error code 0 (the SDK's answer to a handler that raised)
        becomes a standard code."""
        body = orjson.dumps(root.model_dump(by_alias=True, mode="json", exclude_none=True))
        scope = {
            "type": "http", "http_version": "1.1", "method": "POST", "scheme": "http", "path": "/mcp",
            "raw_path": b"/mcp", "query_string": b"", "root_path": "", "client": ("127.0.0.1", 0),
            "server": ("localhost", 80),
            "headers": [(b"host", b"localhost"), (b"accept", b"application/json, text/event-stream"),
                        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
        sent = False

        async def receive():
            nonlocal sent
            if sent:
                await asyncio.Event().wait()  # the request is complete: wait for cancellation
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        status, chunks = 500, []

        async def send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        manager = self.server.session_manager  # django-mcp-server: a new stateless JSON manager
        async with manager.run():
            await manager.handle_request(scope, receive, send)
        try:
            response = orjson.loads(b"".join(chunks))
        except orjson.JSONDecodeError:
            log.error("MCP: the SDK answered %s with HTTP %s and no JSON", root.method, status)
            return _rpc_error(root.id, types.INTERNAL_ERROR, "Internal error")
        error = response.get("error") if isinstance(response, dict) else None
        if isinstance(error, dict) and error.get("code") == 0:
            error["code"] = RESOURCE_NOT_FOUND if root.method == "resources/read" else types.INVALID_PARAMS
        return response
