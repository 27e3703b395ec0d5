from django.apps import AppConfig


class OAuthConfig(AppConfig):
    """OAuth 2.1 for MCP clients: discovery, client registration, consent, and the link from an
    OAuth grant to the ``risk.AgentToken`` permission record its access tokens carry."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "oauth"
    label = "oauth"
    verbose_name = "OAuth grants"

    def ready(self):
        from oauth import signals  # noqa: F401  (audits sign-ins, drops cached OAuth identities)
        from oauth.selectors import resolve_oauth_access_token
        from risk.services import bearer_resolver_register

        bearer_resolver_register(resolve_oauth_access_token)  # bearer keys that are OAuth access tokens
