from django.apps import AppConfig


class AgentevalConfig(AppConfig):
    """Agent evaluations: runs an agent against the replay exchange through MCP and reports it
    (``manage.py evaluate_agent``, ``/evaluations/``)."""

    name = "agenteval"
