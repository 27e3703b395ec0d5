from django.apps import AppConfig


class MCPAPIConfig(AppConfig):
    """The MCP agent interface (tools, transports, guard)."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "mcpapi"
    verbose_name = "MCP agent interface"
