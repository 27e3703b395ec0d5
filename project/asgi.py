"""ASGI entry point: ``/mcp`` (the lean MCP endpoint), Django for the rest of HTTP (dashboard,
admin, REST), ``/mcp/ws`` (MCP over WebSocket, ``mcpapi.ws``) and Channels for the other WebSockets."""
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402  (needs the app registry)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from dashboard.routing import websocket_urlpatterns  # noqa: E402
from mcpapi.endpoint import MCPEndpoint  # noqa: E402
from mcpapi.ws import MCPWebSocketApp  # noqa: E402
from ops.asgi import count_websockets, tag_transport  # noqa: E402

mcp_endpoint = MCPEndpoint()
mcp_ws = MCPWebSocketApp(endpoint=mcp_endpoint)  # same server, handlers and registry as /mcp
channels_ws = AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))
# Transport tag for the MCP metrics and WebSocket connection counts (ops.asgi): wrappers, the apps unchanged.
mcp_http_tagged = tag_transport(mcp_endpoint, "http")
mcp_ws_tagged = count_websockets(tag_transport(mcp_ws, "ws"), "mcp")
channels_ws_counted = count_websockets(channels_ws, "dashboard")


async def http_app(scope, receive, send):
    """Route ``/mcp`` to the MCP endpoint without Django's request/middleware machinery."""
    if scope["path"] in ("/mcp", "/mcp/"):
        await mcp_http_tagged(scope, receive, send)
    else:
        await django_asgi_app(scope, receive, send)


async def websocket_app(scope, receive, send):
    """Route ``/mcp/ws`` to MCP over WebSocket (token auth, no session cookie), the rest to Channels."""
    if scope["path"] in ("/mcp/ws", "/mcp/ws/"):
        await mcp_ws_tagged(scope, receive, send)
    else:
        await channels_ws_counted(scope, receive, send)


application = ProtocolTypeRouter(
    {
        "http": http_app,
        "websocket": websocket_app,
    }
)
