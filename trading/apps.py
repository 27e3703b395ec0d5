from django.apps import AppConfig


class TradingConfig(AppConfig):
    """Trading: accounts, balances, orders, fills, positions and the venues that execute orders."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "trading"

    def ready(self) -> None:
        from trading import checks  # noqa: F401  (registers the database checks)
