"""Client-side helpers for TradingMCP (no Django needed): ``tradingmcp_client.websocket`` is an
MCP transport over ``/mcp/ws`` for the ``mcp`` SDK's ``ClientSession``."""
from tradingmcp_client.websocket import WebSocketInfo, websocket_client

__all__ = ["WebSocketInfo", "websocket_client"]
