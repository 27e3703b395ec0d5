"""ASGI wrappers used in ``project.asgi``: they tag the transport of MCP calls and count
WebSocket connections without touching the apps they wrap."""
from __future__ import annotations

from core import context, metrics


def tag_transport(app, transport: str):
    """``app`` with ``core.context.transport`` set to ``transport`` (``"http"`` for /mcp,
    ``"ws"`` for /mcp/ws) and a fresh request id for the connection; each MCP tool call binds
    its own id on top (``mcpapi.guard``)."""
    async def tagged(scope, receive, send):
        context.transport.set(transport)
        context.request_id.set(context.new_request_id())
        await app(scope, receive, send)

    return tagged


def count_websockets(app, route: str):
    """``app`` (a WebSocket ASGI app) counted in ``tradingmcp_websocket_connections{route}``:
    +1 when it accepts, -1 when the connection ends (whichever side closes)."""
    async def counted(scope, receive, send):
        opened = False

        async def counting_send(message):
            nonlocal opened
            if message.get("type") == "websocket.accept" and not opened:
                opened = True
                metrics.websocket_opened(route)
            await send(message)

        try:
            await app(scope, receive, counting_send)
        finally:
            if opened:
                metrics.websocket_closed(route)

    return counted
