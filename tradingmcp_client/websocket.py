"""An MCP client transport over TradingMCP's WebSocket endpoint (``/mcp/ws``, subprotocol ``mcp``).

Usage with the ``mcp`` SDK::

    from mcp import ClientSession
    from tradingmcp_client import websocket_client

    async def on_message(message):          # pushed notifications (and SDK exceptions)
        if isinstance(message, mcp.types.ServerNotification):
            params = message.root.params    # {uri, stream, data, dropped, droppedTotal} or {uri, account, kind, data}
            ...

    async with websocket_client("ws://127.0.0.1:8000/mcp/ws", token="tmcp_...") as (read, write, info):
        async with ClientSession(read, write, message_handler=on_message) as mcp:
            await mcp.initialize()
            await mcp.call_tool("subscribe_stream", {"stream": "btcusdt@trade"})
            ...
    # reconnect later with the same pushed subscriptions:
    websocket_client(url, token=..., session_id=info.session_id)

One JSON-RPC message per text frame both ways (as the SDK's deprecated ``mcp.client.websocket``),
plus what that one lacks: the ``Authorization`` header (or, with ``auth_in_first_message=True``,
an ``authenticate`` request as the first frame, for environments that cannot set headers), the
session id for resuming, and ``info`` with the session id and the close code/reason. Incoming
frames that are not valid JSON-RPC are handed to the session as exceptions, like the SDK does.
"""
from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
import mcp.types as types
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.shared.message import SessionMessage
from pydantic import ValidationError
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol


@dataclass
class WebSocketInfo:
    """What the transport learnt: ``session_id`` (pass it back to resume), ``close_code`` and
    ``close_reason`` once the server closed (4401: token refused; 4408: client too slow)."""

    session_id: str | None = None
    close_code: int | None = None
    close_reason: str | None = None
    auth: dict | None = None


class AuthenticationError(Exception):
    """The server refused the token sent in the first message."""


@asynccontextmanager
async def websocket_client(
    url: str,
    *,
    token: str | None = None,
    session_id: str | None = None,
    headers: dict[str, str] | None = None,
    auth_in_first_message: bool = False,
    read_buffer: int = 16,
    open_timeout: float = 10.0,
) -> AsyncGenerator[tuple[MemoryObjectReceiveStream, MemoryObjectSendStream, WebSocketInfo], None]:
    """Connect to ``url`` (``ws://host:port/mcp/ws``) and yield ``(read_stream, write_stream, info)``
    for ``mcp.ClientSession``.

    Args:
        token: the agent token (``tmcp_...``), sent as ``Authorization: Bearer`` unless
            ``auth_in_first_message``.
        session_id: a previous connection's ``info.session_id``: the server restores its pushed
            stream subscriptions (same token only).
        headers: extra handshake headers.
        read_buffer: messages held between the socket and the session; when full the transport
            stops reading and the server starts coalescing market updates (never responses).
    Raises ``AuthenticationError`` when a first-message token is refused; a refused header token
    ends the connection with ``info.close_code == 4401``.
    """
    extra = dict(headers or {})
    if token and not auth_in_first_message:
        extra["Authorization"] = f"Bearer {token}"
    if session_id:
        extra["Mcp-Session-Id"] = session_id
    info = WebSocketInfo()
    read_writer, read_stream = anyio.create_memory_object_stream(read_buffer)
    write_stream, write_reader = anyio.create_memory_object_stream(0)

    async with ws_connect(url, subprotocols=[Subprotocol("mcp")], additional_headers=extra, open_timeout=open_timeout,
                          max_size=2**24) as ws:
        info.session_id = ws.response.headers.get("Mcp-Session-Id") if ws.response is not None else None
        if token and auth_in_first_message:
            await ws.send(json.dumps({"jsonrpc": "2.0", "id": "auth", "method": "authenticate", "params": {"token": token}}))
            try:
                answer = json.loads(await ws.recv())
            except ConnectionClosed as exc:
                raise AuthenticationError(f"connection closed: {exc.rcvd.reason if exc.rcvd else exc}") from None
            if "error" in answer:
                raise AuthenticationError(answer["error"].get("message"))
            info.auth = answer.get("result")
            info.session_id = (info.auth or {}).get("sessionId") or info.session_id

        async def reader():
            async with read_writer:
                try:
                    async for raw in ws:
                        try:
                            message = types.JSONRPCMessage.model_validate_json(raw)
                        except ValidationError as exc:
                            await read_writer.send(exc)
                            continue
                        await read_writer.send(SessionMessage(message))
                except ConnectionClosed:
                    pass
                finally:
                    if ws.close_code is not None:
                        info.close_code, info.close_reason = ws.close_code, ws.close_reason

        async def writer():
            async with write_reader:
                async for session_message in write_reader:
                    data = session_message.message.model_dump(by_alias=True, mode="json", exclude_none=True)
                    try:
                        await ws.send(json.dumps(data))
                    except ConnectionClosed:
                        return

        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            tg.start_soon(writer)
            try:
                yield read_stream, write_stream, info
            finally:
                tg.cancel_scope.cancel()
        if ws.close_code is not None and info.close_code is None:
            info.close_code, info.close_reason = ws.close_code, ws.close_reason
