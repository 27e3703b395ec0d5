"""Autodiscovered by django-mcp-server (it imports ``<app>.mcp`` of every installed app): importing
the tool, resource, prompt and completion modules declares them on the one server
(``mcpapi.guard.SERVER``)."""
from mcpapi import completion, prompts, resources  # noqa: F401
from mcpapi.tools import marketdata, risk, trading  # noqa: F401
