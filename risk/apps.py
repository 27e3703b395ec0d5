from django.apps import AppConfig


class RiskConfig(AppConfig):
    """Risk: per-account limits checked before every order, agent tokens and the append-only audit log."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "risk"

    def ready(self):
        from risk import signals  # noqa: F401  (drops cached tokens when they change)
