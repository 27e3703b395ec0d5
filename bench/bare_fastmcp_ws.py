"""The reference over WebSocket: the same bare FastMCP server as ``bare_fastmcp.py`` (mcp SDK, no
auth, an equivalent Redis-backed ``get_ticker``), with the SDK's own WebSocket transport
(``mcp.server.websocket.websocket_server``, subprotocol ``mcp``, one ``ServerSession`` per
connection) at ``/ws`` and streamable HTTP (stateless JSON) at ``/mcp``, on uvicorn (httptools,
uvloop, websockets-sansio: the same stack as ours).

Run: ``python bench/bare_fastmcp_ws.py --port 8766 --redis-url redis://127.0.0.1:6379/0 --key-prefix tmcp:``
"""
import argparse

import uvicorn
from mcp.server.lowlevel import Server
from mcp.server.websocket import websocket_server

from _common import bare_fastmcp


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--key-prefix", default="tmcp:")
    args = parser.parse_args()

    mcp = bare_fastmcp(args.redis_url, args.key_prefix)

    http_app = mcp.streamable_http_app()
    # The WebSocket transport needs a low-level server: one whose handlers are FastMCP's public
    # list_tools()/call_tool() (the SDK registers FastMCP's own low-level handlers the same way).
    server = Server("bare")
    server.list_tools()(mcp.list_tools)
    server.call_tool(validate_input=False)(mcp.call_tool)

    async def app(scope, receive, send):
        if scope["type"] == "websocket":
            async with websocket_server(scope, receive, send) as (read, write):
                await server.run(read, write, server.create_initialization_options())
        else:  # http, and lifespan (the streamable HTTP app's session manager needs it)
            await http_app(scope, receive, send)

    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", http="httptools", loop="uvloop",
                ws="websockets-sansio", access_log=False)


if __name__ == "__main__":
    main()
