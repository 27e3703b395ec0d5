"""Reads behind OAuth sign-in: the permission record an access token stands for, the Bearer
challenge a protected resource answers with, and a person's OAuth grants.

This module imports only models (ours, ``risk``'s and django-oauth-toolkit's) so that
``risk.services.agent_token_authenticate`` can fall back to it without an import cycle.
"""
from __future__ import annotations

import hashlib
from urllib.parse import urlsplit

from django.conf import settings
from oauth2_provider.models import get_access_token_model, get_refresh_token_model
from oauth2_provider.www_authenticate import build_bearer_challenge

from oauth.models import OAuthGrant
from risk.models import ALL_SCOPES, AgentToken

MAX_TOKEN_LENGTH = 128


def token_checksum(raw: str) -> str:
    """SHA-256 hex digest of a plain token: django-oauth-toolkit's ``token_checksum`` and the key
    the MCP endpoint caches identities under."""
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def resource_matches(resources) -> bool:
    """True if ``resources`` (the RFC 8707 ``resource`` values of a request or token: a list of
    strings) is exactly our MCP resource, ``settings.MCP_RESOURCE_URL`` (a trailing ``/`` aside)."""
    expected = settings.MCP_RESOURCE_URL.rstrip("/")
    values = list(resources or [])
    return len(values) == 1 and isinstance(values[0], str) and values[0].rstrip("/") == expected


def resolve_oauth_access_token(raw: str) -> AgentToken | None:
    """The ``risk.AgentToken`` an OAuth access token carries, or None.

    None when the token is unknown, expired, revoked (its grant or its permission record), minted
    for another resource than ``settings.MCP_RESOURCE_URL`` (RFC 8707 audience binding), not from
    an authorization-code grant with consent, or its user is inactive. The returned row is the
    grant's permission record with two in-memory narrowings (never saved): ``expires_at`` is the
    earlier of the record's and the access token's expiry (so caches holding it expire with the
    access token), and ``scopes`` keeps only those the access token was issued with (a client may
    ask for fewer at refresh, RFC 6749 §6).
    """
    if not raw or len(raw) > MAX_TOKEN_LENGTH:
        return None
    access = get_access_token_model().objects.filter(token_checksum=token_checksum(raw)).first()
    if access is None or access.is_expired() or not resource_matches(access.resource):
        return None
    family = (get_refresh_token_model().objects.filter(access_token=access)
              .values_list("token_family", flat=True).first())
    if family is None:
        return None
    grant = (OAuthGrant.objects.select_related("agent_token", "agent_token__user")
             .filter(token_family=family, application_id=access.application_id, user_id=access.user_id,
                     revoked_at__isnull=True).first())
    if grant is None:
        return None
    token = grant.agent_token
    if not token.is_active or not token.user.is_active:
        return None
    token.expires_at = access.expires if token.expires_at is None else min(token.expires_at, access.expires)
    issued = set(access.scope.split())
    token.scopes = [s for s in (token.scopes or []) if s in issued]
    return token


def protected_resource_metadata_url() -> str:
    """URL of the RFC 9728 metadata of our MCP resource, path-suffixed form (§3.1):
    ``<PUBLIC_BASE_URL>/.well-known/oauth-protected-resource/mcp``."""
    path = urlsplit(settings.MCP_RESOURCE_URL).path.rstrip("/")
    return f"{settings.PUBLIC_BASE_URL}/.well-known/oauth-protected-resource{path}"


def www_authenticate(scope: str | None = None, *, error: str | None = None) -> str:
    """The ``WWW-Authenticate`` value for a refused MCP request (MCP authorization spec 2025-11-25,
    "Protected Resource Metadata Discovery" and "Scope Challenge Handling"; RFC 6750 §3, RFC 9728 §5.1).

    - 401 (no, unknown, expired or revoked token): ``www_authenticate()`` or with the ``scope``
      the request needs: ``Bearer scope="trade",resource_metadata="https://…/.well-known/oauth-protected-resource/mcp"``.
    - 403 (a valid token without the scope the call needs, step-up):
      ``www_authenticate("trade", error="insufficient_scope")``.

    ``scope``: space-separated scopes (any of ``market:read``, ``account:read``, ``trade``).
    Raises ``ValueError`` for an unknown scope.
    """
    params: dict[str, str] = {}
    if error:
        params["error"] = error
    if scope:
        unknown = [s for s in scope.split() if s not in ALL_SCOPES]
        if unknown:
            raise ValueError(f"unknown scope(s): {' '.join(unknown)}")
        params["scope"] = " ".join(scope.split())
    return build_bearer_challenge(None, oauth2_error=params or None, resource_metadata_url=protected_resource_metadata_url())


def oauth_access_token_checksums(*, token_family) -> list[str]:
    """Checksums (= SHA-256 of the plain value) of the live access tokens of one refresh-token family."""
    if token_family is None:
        return []
    return list(get_access_token_model().objects.filter(refresh_token__token_family=token_family)
                .values_list("token_checksum", flat=True))


def grant_as_dict(grant: OAuthGrant) -> dict:
    """One OAuth grant as the tokens page lists it: ``{id, client, clientId, redirectHost, scopes,
    accounts (ids), symbols, confirmOrders, createdAt, expiresAt, lastUsedAt, revokedAt, active}``
    (times as ``datetime``)."""
    token = grant.agent_token
    app = grant.application
    return {
        "id": grant.pk, "client": app.name or app.client_id, "clientId": app.client_id,
        "redirectHost": urlsplit(grant.redirect_uri).netloc or grant.redirect_uri,
        "scopes": list(token.scopes or []), "accounts": [a.pk for a in token.accounts.all()],
        "symbols": list(token.symbols or []), "confirmOrders": bool(token.confirm_orders),
        "createdAt": grant.created_at, "expiresAt": token.expires_at, "lastUsedAt": token.last_used_at,
        "revokedAt": grant.revoked_at or token.revoked_at, "active": grant.is_active,
    }


def same_oauth_client(*, user_id: int, token_ids: tuple[int, int]) -> bool:
    """Are both permission records (``risk.AgentToken`` ids) OAuth grants ``user_id`` gave the
    same client (``Application``)? True for a client that re-authorized for more scopes
    (step-up, RFC 6750 §3.1 ``insufficient_scope``): its new access token stands for a new grant."""
    rows = list(OAuthGrant.objects.filter(user_id=user_id, agent_token_id__in=token_ids)
                .values_list("agent_token_id", "application_id"))
    return len(rows) == 2 and rows[0][1] == rows[1][1]


def oauth_grants_list(*, user) -> list[dict]:
    """The user's OAuth grants, newest first (``grant_as_dict``); never another user's."""
    rows = (OAuthGrant.objects.filter(user=user).select_related("application", "agent_token")
            .prefetch_related("agent_token__accounts"))
    return [grant_as_dict(g) for g in rows]
