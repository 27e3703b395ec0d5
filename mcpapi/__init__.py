"""The agent interface over MCP: the guard every tool passes (``mcpapi.guard``), the tools
(``mcpapi.tools``), the streamable HTTP endpoint at ``/mcp`` (``mcpapi.endpoint``) and the
WebSocket transport at ``/mcp/ws`` (``mcpapi.ws``). An entry-point layer: it calls the services
and selectors of ``trading``, ``risk`` and ``marketdata``; nothing below imports it."""
