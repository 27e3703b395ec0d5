"""MCP over stdio (MCP spec 2025-06-18, "Transports → stdio"), for desktop clients that start
the server as a subprocess (Claude Desktop's ``command``/``args``/``env``): ``manage.py mcp_stdio``.

The wire is the SDK's public stdio transport (``mcp.server.stdio.stdio_server``): one JSON-RPC
message per line on stdin and stdout. Every request is answered by the **same** code as ``/mcp``
and ``/mcp/ws``: ``mcpapi.endpoint.MCPEndpoint.handle_request`` (``tools/list`` filtered by the
token's scopes, ``tools/call`` through the guard of ``mcpapi.guard.mcp_tool`` with its scope and
symbol checks, typed errors, audit and trust envelope; ``initialize``, ``ping`` and every other
method answered by the SDK). Nothing here implements a tool.

Authentication: the process serves one agent token (``TRADINGMCP_TOKEN``, or a token file), checked
once before serving (``token_identity``) and again before every request, as ``/mcp/ws`` does (one
Redis read, with the per-token rate-limit count): a token revoked or expired while the process
runs gets JSON-RPC error ``UNAUTHORIZED`` (4401, as ``/mcp/ws``) from its next request on, and a
token over its rate limit gets ``RATE_LIMITED`` (-32029, ``data.retryAfter`` in seconds).

stdout carries nothing but JSON-RPC: ``protocol_streams`` moves the process's file descriptor 1
(which ``sys.stdout`` writes to) onto stderr, so a stray ``print`` or a library writing to stdout
cannot corrupt the protocol; logging goes to stderr (Django's ``StreamHandler`` default).
"""
from __future__ import annotations

import io
import logging
import os
import sys

import anyio
from mcp import types
from mcp.server.stdio import stdio_server
from mcp.shared.message import SessionMessage
from pydantic import ValidationError

from marketdata.cache import read_ahead, read_ahead_keys
from mcpapi.endpoint import MCPEndpoint
from mcpapi.ws import CLOSE_UNAUTHORIZED as UNAUTHORIZED
from mcpapi.ws import RATE_LIMITED
from risk.authentication import Identity, authenticate_bearer_async
from risk.trust import error_text

log = logging.getLogger(__name__)

MAX_CONCURRENT_REQUESTS = 8  # requests of the one client answered at the same time
META = {"REMOTE_ADDR": "", "MCP_TRANSPORT": "stdio"}

__all__ = ["UNAUTHORIZED", "RATE_LIMITED", "protocol_streams", "token_identity", "serve"]


def protocol_streams() -> tuple[anyio.AsyncFile[str], anyio.AsyncFile[str]]:
    """The (stdin, stdout) text streams of the protocol, for ``stdio_server(stdin, stdout)``.

    The process's stdout is duplicated for the protocol first; then file descriptor 1 is pointed
    at stderr, so whatever else writes to "stdout" (a ``print`` through ``sys.stdout``, a C
    library) lands on stderr and never between two JSON-RPC lines."""
    sys.stdout.flush()
    protocol_out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # sys.stdout writes to descriptor 1: from now on, to stderr
    stdin = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace")
    stdout = io.TextIOWrapper(protocol_out, encoding="utf-8", write_through=True)
    return anyio.wrap_file(stdin), anyio.wrap_file(stdout)


async def token_identity(key: str) -> Identity | None:
    """The ``Identity`` of agent token ``key`` (``tmcp_...``), or None if it is unknown, revoked,
    expired or its user inactive (``risk.authentication.authenticate_bearer_async``).
    Raises ``redis.RedisError`` when Redis is unreachable."""
    return (await authenticate_bearer_async(key)).identity if key else None


def _error(request_id, code: int, message: str, data=None) -> types.JSONRPCMessage:
    return types.JSONRPCMessage(types.JSONRPCError(
        jsonrpc="2.0", id=request_id, error=types.ErrorData(code=code, message=error_text(message), data=data)))


async def answer(endpoint: MCPEndpoint, key: str, root: types.JSONRPCRequest) -> types.JSONRPCMessage:
    """The response to one request of the token ``key``: the token re-checked (with its rate-limit
    count and the cache keys the call reads, one Redis round trip), then ``handle_request``."""
    auth = await authenticate_bearer_async(key, count=True, read_ahead=read_ahead_keys(root.method, root.params))
    if auth.identity is None:
        return _error(root.id, UNAUTHORIZED, "This token was revoked or has expired (or its user was deactivated); "
                                             "create a new token on the dashboard and restart this server.")
    if auth.retry_after:
        return _error(root.id, RATE_LIMITED, f"Too Many Requests: this token's rate limit is reached; retry in "
                                             f"{auth.retry_after} s.", {"retryAfter": auth.retry_after})
    with read_ahead(auth.values):
        response = await endpoint.handle_request(root, auth.identity, META)
    try:
        return types.JSONRPCMessage.model_validate(response)
    except ValidationError:
        log.error("mcp stdio: %s answered with an invalid JSON-RPC message", root.method)
        return _error(root.id, types.INTERNAL_ERROR, "Internal error")


async def serve(key: str, stdin: anyio.AsyncFile[str] | None = None, stdout: anyio.AsyncFile[str] | None = None,
                endpoint: MCPEndpoint | None = None) -> None:
    """Serve MCP on ``stdin``/``stdout`` (default: the process's, see ``stdio_server``) as the
    agent token ``key`` until stdin closes. Up to ``MAX_CONCURRENT_REQUESTS`` requests run at the
    same time; notifications (``notifications/initialized``, ``notifications/cancelled``) and
    responses need no answer; a line that is not JSON-RPC is logged and skipped, as the SDK's own
    server does."""
    endpoint = endpoint or MCPEndpoint()
    limiter = anyio.CapacityLimiter(MAX_CONCURRENT_REQUESTS)

    async with stdio_server(stdin, stdout) as (read_stream, write_stream):
        async def reply(root: types.JSONRPCRequest) -> None:
            async with limiter:
                try:
                    message = await answer(endpoint, key, root)
                except Exception:  # Redis or the database unreachable: a clear, retryable answer
                    log.exception("mcp stdio: %s failed", root.method)
                    message = _error(root.id, types.INTERNAL_ERROR, "Internal error (the token cache or the "
                                                                    "database is unreachable?); nothing was changed.")
                await write_stream.send(SessionMessage(message))

        async with write_stream, anyio.create_task_group() as tasks:
            async for item in read_stream:
                if isinstance(item, Exception):
                    log.warning("mcp stdio: ignored a line that is not JSON-RPC: %s", item)
                    continue
                if isinstance(item.message.root, types.JSONRPCRequest):
                    tasks.start_soon(reply, item.message.root)
