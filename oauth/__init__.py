"""OAuth 2.1 sign-in for MCP clients (MCP authorization spec 2025-11-25), on django-oauth-toolkit."""
