from django.apps import AppConfig


class MarketdataConfig(AppConfig):
    """Market data: exchangeInfo, klines, the latest-quote cache, the ingester and the replay exchange."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "marketdata"
    verbose_name = "Market data"

    def ready(self):
        from marketdata import signals  # noqa: F401  (connects the Celery worker_ready hook)
