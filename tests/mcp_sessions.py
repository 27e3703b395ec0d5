"""An ``mcp`` SDK ``ClientSession`` on the running stack (``conftest.stack``) over either transport:
streamable HTTP at ``/mcp`` or the WebSocket at ``/mcp/ws`` (``tradingmcp_client``)."""
from contextlib import asynccontextmanager

import httpx
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tradingmcp_client import websocket_client

TRANSPORTS = ("http", "ws")


@asynccontextmanager
async def mcp_session(stack, token: str, transport: str):
    """An initialized ``ClientSession`` of ``token`` on ``stack`` over ``transport`` ("http" | "ws")."""
    if transport == "http":
        http = httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
        async with http, streamable_http_client(f"{stack.base_url}/mcp", http_client=http) as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session
    else:
        url = stack.base_url.replace("http://", "ws://") + "/mcp/ws"
        async with websocket_client(url, token=token) as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session
