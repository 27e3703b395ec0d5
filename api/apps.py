from django.apps import AppConfig


class ApiConfig(AppConfig):
    """The REST API for people's own programs (``/api/v1/``, DRF + drf-spectacular)."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "api"
    verbose_name = "REST API"

    def ready(self):
        from api import schema  # noqa: F401  registers the OpenAPI extensions of our fields and authenticator
