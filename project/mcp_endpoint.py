"""The MCP endpoint (streamable HTTP, stateless, JSON responses) as a lean ASGI app at ``/mcp``.

django-mcp-server keeps the tool registry: tools are ``MCPToolset`` methods in ``<app>/mcp.py``,
registered on its global ``FastMCP`` instance, whose low-level server builds ``tools/list`` and runs
``tools/call`` (input JSON-schema validation, argument validation, result conversion). What this
module replaces is only the per-request transport that cost ~10 ms a call (PERFORMANCE-NOTES.md):
an ``async_to_sync`` hop, a new SDK session manager per request, DRF dispatch and a DB query for
the token. Here one request is: parse (orjson) → check headers as the SDK's
``StreamableHTTPServerTransport`` does → token from the Redis cache, with the per-token rate-limit
count (and the cache keys the call will read, ``marketdata.cache.read_ahead``) in the same pipelined
round trip → the low-level server's own request handler (tools run as
``risk.mcp_guard.install_dispatch`` says: async tools on this event loop, sync ones in a worker
pool) → one JSON response.

Behaviour follows the MCP spec (2025-06-18, "Transports → Streamable HTTP") and matches the SDK's
stateless JSON mode: POST only (GET/DELETE answer 405), ``Accept`` must include
``application/json`` (406), ``Content-Type`` must be ``application/json`` (415), a bad
``MCP-Protocol-Version`` header answers 400, notifications answer 202 with no body, a request
answers 200 with its JSON-RPC response; a missing or bad token answers 401 with
``WWW-Authenticate: Bearer``; a token over its rate limit answers 429 with ``Retry-After``. Batches are not supported (as in the SDK).
"""
from __future__ import annotations

import hashlib
import logging
import time
from types import SimpleNamespace

import orjson
from django.conf import settings
from mcp import types
from mcp.shared.version import SUPPORTED_PROTOCOL_VERSIONS
from mcp.types import LATEST_PROTOCOL_VERSION
from mcp_server.djangomcp import django_request_ctx, global_mcp_server
from pydantic import ValidationError
from redis.exceptions import RedisError

from marketdata.cache import read_ahead, read_ahead_keys
from project import fastredis

log = logging.getLogger(__name__)

DEFAULT_NEGOTIATED_VERSION = "2025-03-26"  # the SDK's default when the header is absent
TOKEN_CACHE_TTL_S = 300
MAX_BODY_BYTES = 1_000_000


# --- token authentication, cached in Redis --------------------------------------------------------

def token_cache_key(key_hash: str) -> str:
    return f"{settings.REDIS_KEY_PREFIX}auth:token:{key_hash}"


def _load_identity(key: str) -> dict | None:
    """DB lookup of a plain token (``risk.services.agent_token_authenticate``) → cacheable identity."""
    from risk.services import agent_token_authenticate

    token = agent_token_authenticate(key=key)
    if token is None:
        return None
    return {
        "token_id": token.pk,
        "token_name": token.name,
        "user_id": token.user_id,
        "username": token.user.get_username(),
        "expires_at": token.expires_at.timestamp() if token.expires_at else None,
        "scopes": list(token.scopes or []),
        "rate_limit_per_minute": token.rate_limit_per_minute,
        "symbols": list(token.symbols or []),
        "confirm_orders": bool(token.confirm_orders),
    }


class Identity(SimpleNamespace):
    """What a tool sees as ``self.request``: ``user`` and ``auth`` (the ``AgentToken``), ``META``."""


def _bearer_key(headers: dict[bytes, bytes]) -> str | None:
    raw = headers.get(b"authorization", b"").decode("latin-1").strip()
    scheme, _, key = raw.partition(" ")
    if scheme.lower() not in {"bearer", "token"} or not key.strip():
        return None
    return key.strip()


# key hash → (the cached identity bytes, user, token, expires_at): the model instances built from
# those exact bytes, reused while Redis still holds the same bytes (read-only for tools). Token ids
# never change for a key, so the memo also lets the rate-limit count ride on the identity read.
_memo: dict[str, tuple[bytes, object, object, float | None]] = {}
MEMO_MAX = 4096


def _identity_from_cache(key_hash: str, cached: bytes) -> Identity | None:
    memo = _memo.get(key_hash)
    if memo is None or memo[0] != cached:
        from django.contrib.auth import get_user_model

        from risk.models import AgentToken

        identity = orjson.loads(cached)
        user = get_user_model()(pk=identity["user_id"], username=identity["username"], is_active=True)
        token = AgentToken(pk=identity["token_id"], user_id=identity["user_id"], name=identity["token_name"],
                           scopes=identity.get("scopes", []), rate_limit_per_minute=identity.get("rate_limit_per_minute"),
                           symbols=identity.get("symbols", []), confirm_orders=bool(identity.get("confirm_orders", False)))
        token._state.adding = False
        user._state.adding = False
        if len(_memo) >= MEMO_MAX:
            _memo.clear()
        memo = _memo[key_hash] = (cached, user, token, identity["expires_at"])
    if memo[3] is not None and memo[3] <= time.time():
        return None
    return Identity(user=memo[1], auth=memo[2], META={})


async def authenticate(headers: dict[bytes, bytes]) -> Identity | None:
    """Resolve ``Authorization: Bearer <token>`` to an ``Identity``, or None.

    The identity is cached in Redis under the token's SHA-256 for 5 minutes; saving or revoking a
    token or deactivating its user deletes the cache entry (``risk.signals``), so revocation takes
    effect on the next call. An expired token is refused even while cached.
    """
    identity, _ = await authenticate_and_count(headers, count=False)
    return identity


async def authenticate_and_count(headers: dict[bytes, bytes], *, count: bool = True) -> tuple[Identity | None, int]:
    """``authenticate`` plus, when ``count``, the per-token rate-limit count of this call
    (``risk.ratelimit``): returns ``(identity or None, retry_after)`` (0 = allowed; seconds to wait
    otherwise). When this process has seen the token before, the identity read and the count go
    to Redis in one pipeline (one round trip); otherwise the count follows the lookup. Raises
    ``RedisError`` when the token cache is unreachable.
    """
    identity, retry_after, _ = await authenticate_count_and_read(headers, count=count)
    return identity, retry_after


async def authenticate_count_and_read(headers: dict[bytes, bytes], *, count: bool = True,
                                      read_ahead: list[str] | tuple = ()) -> tuple[Identity | None, int, dict]:
    """``authenticate_and_count`` that also reads the cache keys ``read_ahead`` (what the call will
    read, ``marketdata.cache.read_ahead_keys``) in the same pipelined round trip when the token is
    known to this process. Returns ``(identity or None, retry_after, {key: raw value or None})``;
    the dict is empty when nothing was read ahead (first call of a token in this process, no keys).
    Run the call inside ``marketdata.cache.read_ahead(values)`` to use them.
    """
    from marketdata.cache import async_redis_shared
    from risk import ratelimit

    key = _bearer_key(headers)
    if key is None:
        return None, 0, {}
    key_hash = hashlib.sha256(key.encode()).hexdigest()
    lane = await fastredis.lane()  # one pipelined connection per loop: the hot path's round trip
    memo = _memo.get(key_hash)
    counted = None
    values: dict = {}
    limited = bool(count and memo is not None and ratelimit.limit_for(memo[2]))
    commands: list[tuple] = [("GET", token_cache_key(key_hash))]
    if memo is not None and limited:
        rl_key, retry = ratelimit._key(memo[2].pk, time.time())
        commands += [("INCR", rl_key), ("EXPIRE", rl_key, 61)]
    if memo is not None and read_ahead:
        commands.append(("MGET", *read_ahead))
    out = await lane.execute(*commands)
    cached = out[0]
    if len(commands) > 1:
        if limited:
            counted = out[1]
        if read_ahead:
            values = dict(zip(read_ahead, out[-1]))
    if cached == b"-":
        return None, 0, {}
    if cached is None:
        from risk.mcp_guard import run_sync

        loaded = await run_sync(_load_identity, key)  # the tool pool: its threads close their DB connections
        cached = orjson.dumps(loaded) if loaded else b"-"
        await async_redis_shared().set(token_cache_key(key_hash), cached, ex=TOKEN_CACHE_TTL_S if loaded else 10)
        if loaded is None:
            return None, 0, {}
    identity = _identity_from_cache(key_hash, cached)
    if identity is None or not count:
        return identity, 0, values
    if counted is not None and identity.auth.rate_limit_per_minute == memo[2].rate_limit_per_minute:
        limit = ratelimit.limit_for(identity.auth)
        return identity, (0 if not limit or counted <= limit else max(1, retry)), values
    return identity, await ratelimit.check_async(identity.auth), values


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


class MCPEndpoint:
    """ASGI app answering MCP over streamable HTTP (see module docstring)."""

    def __init__(self, server=global_mcp_server):
        from risk.mcp_guard import install_dispatch

        self.fastmcp = server
        self.lowlevel = server._mcp_server
        install_dispatch(server)  # async tools on the loop, sync ones in a thread pool (risk.mcp_guard)
        self.init_options = self.lowlevel.create_initialization_options()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        headers = dict(scope["headers"])
        if scope["method"] != "POST":
            # Stateless mode keeps no server-to-client stream and no session to delete.
            await _send(send, 405, _error("Method Not Allowed"), [(b"allow", b"POST")])
            return
        body = await _read_body(receive)
        if body is None:
            return
        raw, parse_error = _parse_body(body)
        keys = read_ahead_keys(raw.get("method"), raw.get("params")) if isinstance(raw, dict) else []
        try:
            identity, retry_after, ahead = await authenticate_count_and_read(headers, read_ahead=keys)
        except RedisError as exc:  # Redis down or restarting: a clear, retryable answer, nothing changed
            log.warning("MCP: token cache unreachable (%s: %s)", type(exc).__name__, exc)
            await _send(send, 503, _error("Service Unavailable: the token cache (Redis) is unreachable; nothing was "
                                          "changed, retry in 1 s."), [(b"retry-after", b"1")])
            return
        if identity is None:
            await _send(send, 401, orjson.dumps({"detail": "Invalid, expired or revoked token, or none was sent."}),
                        [(b"www-authenticate", b'Bearer realm="tradingmcp"')])
            return
        if retry_after:
            await _send(send, 429, _error(f"Too Many Requests: this token's rate limit is reached; retry in {retry_after} s."),
                        [(b"retry-after", str(retry_after).encode())])
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
        if not (isinstance(root, types.JSONRPCRequest) and root.method == "initialize"):
            version = headers.get(b"mcp-protocol-version", DEFAULT_NEGOTIATED_VERSION.encode()).decode("latin-1")
            if version not in SUPPORTED_PROTOCOL_VERSIONS:
                await _send(send, 400, _error(
                    f"Bad Request: Unsupported protocol version: {version}. "
                    f"Supported versions: {', '.join(SUPPORTED_PROTOCOL_VERSIONS)}"))
                return
        if not isinstance(root, types.JSONRPCRequest):
            await _send(send, 202)  # notifications and responses: accepted, nothing to answer
            return
        identity.META = {"REMOTE_ADDR": (scope.get("client") or ("", 0))[0]}
        with read_ahead(ahead):
            response = await self.handle_request(root, identity)
        await _send(send, 200, orjson.dumps(response))

    async def handle_request(self, root: types.JSONRPCRequest, identity: Identity) -> dict:
        """Answer one JSON-RPC request as the SDK's ServerSession + low-level Server would."""
        try:
            request = parse_client_request(root.method, root.params)
        except ValidationError as exc:
            return {"jsonrpc": "2.0", "id": root.id, "error": {"code": types.INVALID_PARAMS, "message": f"Invalid request parameters: {exc}"}}
        req = request.root
        if isinstance(req, types.InitializeRequest):
            requested = req.params.protocolVersion
            opts = self.init_options
            result = types.InitializeResult(
                protocolVersion=requested if requested in SUPPORTED_PROTOCOL_VERSIONS else LATEST_PROTOCOL_VERSION,
                capabilities=opts.capabilities,
                serverInfo=types.Implementation(name=opts.server_name, version=opts.server_version,
                                                websiteUrl=opts.website_url, icons=opts.icons),
                instructions=opts.instructions,
            )
            return {"jsonrpc": "2.0", "id": root.id, "result": result.model_dump(by_alias=True, mode="json", exclude_none=True)}
        handler = self.lowlevel.request_handlers.get(type(req))
        if handler is None:
            return {"jsonrpc": "2.0", "id": root.id, "error": {"code": types.METHOD_NOT_FOUND, "message": "Method not found"}}
        token = django_request_ctx.set(identity)
        try:
            result = await handler(req)
        except Exception as exc:  # the SDK answers an unexpected handler failure with code 0
            log.exception("MCP %s failed", root.method)
            return {"jsonrpc": "2.0", "id": root.id, "error": {"code": 0, "message": str(exc)}}
        finally:
            django_request_ctx.reset(token)
        if isinstance(req, types.ListToolsRequest):
            # django-mcp-server lists every tool to everyone: show a token only what it may call.
            from risk.mcp_guard import tool_allowed

            tools = [t for t in result.root.tools if tool_allowed(t.name, identity.auth)]
            result = types.ServerResult(result.root.model_copy(update={"tools": tools}))
        if isinstance(result, types.ErrorData):
            return {"jsonrpc": "2.0", "id": root.id, "error": result.model_dump(by_alias=True, mode="json", exclude_none=True)}
        return {"jsonrpc": "2.0", "id": root.id, "result": result.model_dump(by_alias=True, mode="json", exclude_none=True)}
