"""Autodiscovered by django-mcp-server (it imports ``<app>.mcp`` of every installed app): importing
the tool modules registers their tools on the one server (``mcpapi.guard.SERVER``)."""
from mcpapi.tools import marketdata, risk, trading  # noqa: F401
