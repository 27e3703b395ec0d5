from django.apps import AppConfig


class DashboardConfig(AppConfig):
    """The dashboard: the pages a person signs in to (overview, market, agent tokens, sharing), their
    JSON reads and the live WebSocket (``/ws/dashboard/``). An entry point: views and consumers parse
    the request and call one selector or service of ``trading``, ``risk`` or ``marketdata``."""

    name = "dashboard"
