"""The link between a person's OAuth consent and the permission record its tokens carry."""
from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone
from oauth2_provider.settings import oauth2_settings


class OAuthGrant(models.Model):
    """One consent a person gave an OAuth client (a django-oauth-toolkit ``Application``).

    ``agent_token`` is the permission record (``risk.AgentToken``: scopes, accounts, symbols,
    confirm mode, expiry, rate limit) every access token minted under this consent resolves to,
    so MCP, REST and the audit log treat an OAuth client exactly like a bearer token.
    ``token_family`` is the django-oauth-toolkit refresh-token family (kept across rotations)
    that the consent's tokens belong to, set at the first code exchange. ``resource`` is the
    RFC 8707 resource indicator the consent was given for (our ``MCP_RESOURCE_URL``).
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="oauth_grants")
    application = models.ForeignKey(oauth2_settings.APPLICATION_MODEL, on_delete=models.CASCADE, related_name="tradingmcp_grants")
    agent_token = models.OneToOneField("risk.AgentToken", on_delete=models.PROTECT, related_name="oauth_grant")
    resource = models.URLField(max_length=500)
    redirect_uri = models.TextField(blank=True, default="")
    code_checksum = models.CharField(max_length=64, blank=True, default="", db_index=True,
                                     help_text="SHA-256 of the authorization code issued on consent (used once).")
    token_family = models.UUIDField(null=True, blank=True, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.application} for {self.user}"

    @property
    def is_active(self) -> bool:
        """Not revoked, and its permission record neither revoked nor expired."""
        return self.revoked_at is None and self.agent_token.is_active
