"""Writes behind OAuth sign-in: a person's consent becomes an ``OAuthGrant`` and the
``risk.AgentToken`` permission record its tokens carry; revoking a grant kills both at once."""
from __future__ import annotations

from urllib.parse import urlsplit

from django.db import transaction
from django.utils import timezone
from oauth2_provider.models import get_refresh_token_model

from core.errors import InvalidInput, NotFound
from oauth import selectors
from oauth.models import OAuthGrant
from risk.audit import audit_record
from risk.models import Channel, Outcome
from risk.services import agent_token_revoke
from risk.signals import forget_tokens
from trading import tokens

CONSENT_EXPIRY_DAYS = (1, 7, 30, 90, 365)


def oauth_grant_create(*, user, application, scopes: list[str], resource: str, redirect_uri: str,
                       account_ids: list[int] | None = None, symbols: list[str] | None = None,
                       confirm_orders: bool = False, expires_days: int | None = None) -> OAuthGrant:
    """Record the consent ``user`` gave ``application`` (a django-oauth-toolkit ``Application``).

    Creates the permission record (``trading.tokens.token_create``: ``scopes``, optionally
    restricted to ``account_ids`` of the user's accounts and to ``symbols``, confirm mode, expiry
    in ``expires_days`` days or none) and the ``OAuthGrant`` linking it to the client; the
    authorization code issued next is bound to the grant (``oauth_grant_bind_code``). The plain
    bearer key of the record is discarded: only OAuth access tokens reach it.
    ``resource`` must be ``settings.MCP_RESOURCE_URL`` (RFC 8707).

    Raises ``InvalidInput`` (foreign resource, no/unknown scope, unknown symbol, bad expiry) or
    ``NotFound`` (an account the user may not use); nothing is created then. Audited as
    ``oauth.consent``.
    """
    if not selectors.resource_matches([resource]):
        raise InvalidInput(f"The resource {resource!r} is not this server's MCP resource.")
    if expires_days is not None and expires_days not in CONSENT_EXPIRY_DAYS:
        raise InvalidInput(f"expires_days must be one of {', '.join(map(str, CONSENT_EXPIRY_DAYS))} or empty (never).")
    client = application.name or application.client_id
    with transaction.atomic():
        token, _discarded = tokens.token_create(
            user=user, name=f"OAuth: {client}"[:100], scopes=scopes, expires_days=expires_days,
            account_ids=account_ids, symbols=symbols, confirm_orders=confirm_orders,
        )
        grant = OAuthGrant.objects.create(user=user, application=application, agent_token=token,
                                          resource=resource, redirect_uri=redirect_uri)
        audit_record(channel=Channel.DASHBOARD, action="oauth.consent", outcome=Outcome.OK, actor_user=user,
                     actor_token=token, params={
                         "client_id": application.client_id, "client_name": application.name,
                         "redirect_host": urlsplit(redirect_uri).netloc, "scopes": list(token.scopes),
                         "accounts": list(account_ids or []), "symbols": list(token.symbols or []),
                         "confirm_orders": bool(confirm_orders), "expires_days": expires_days,
                     }, result={"grant_id": grant.pk, "token_id": token.pk})
    return grant


def oauth_grant_bind_code(*, grant_id: int, code: str) -> None:
    """Bind the authorization code just issued for a consent to its grant (only its SHA-256 is kept)."""
    OAuthGrant.objects.filter(pk=grant_id, code_checksum="").update(code_checksum=selectors.token_checksum(code))


def oauth_grant_for_code(*, application, code: str) -> OAuthGrant | None:
    """The active, not yet exchanged grant an authorization code was issued for, or None."""
    grant = (OAuthGrant.objects.select_related("agent_token")
             .filter(application=application, code_checksum=selectors.token_checksum(code),
                     token_family__isnull=True, revoked_at__isnull=True).first())
    return grant if grant is not None and grant.is_active else None


def oauth_grant_for_family(*, application, token_family) -> OAuthGrant | None:
    """The active grant a refresh-token family belongs to, or None."""
    if token_family is None:
        return None
    grant = (OAuthGrant.objects.select_related("agent_token")
             .filter(application=application, token_family=token_family, revoked_at__isnull=True).first())
    return grant if grant is not None and grant.is_active else None


def oauth_grant_bind_tokens(*, grant: OAuthGrant, refresh_token: str) -> None:
    """After the code exchange: remember the refresh-token family of the grant's tokens (kept by
    django-oauth-toolkit across rotations), through which access tokens resolve to the grant."""
    family = (get_refresh_token_model().objects.filter(token_checksum=selectors.token_checksum(refresh_token))
              .values_list("token_family", flat=True).first())
    if family is not None:
        OAuthGrant.objects.filter(pk=grant.pk, token_family__isnull=True).update(token_family=family)


def oauth_grant_revoke(*, user, grant_id, channel: str = Channel.DASHBOARD) -> OAuthGrant:
    """Revoke one of ``user``'s OAuth grants at once: the grant, its permission record
    (``risk.services.agent_token_revoke``) and every access and refresh token of its family
    (django-oauth-toolkit ``RefreshToken.revoke_family``); cached identities of those access
    tokens are dropped after the commit, so the next MCP call with any of them gets 401.
    Raises ``NotFound`` for a grant that is not the user's. Audited as ``oauth.revoke``."""
    try:
        with transaction.atomic():
            grant = OAuthGrant.objects.select_for_update().select_related("agent_token", "application").get(
                pk=int(grant_id), user=user)
            checksums = selectors.oauth_access_token_checksums(token_family=grant.token_family)
            if grant.revoked_at is None:
                grant.revoked_at = timezone.now()
                grant.save(update_fields=["revoked_at"])
            agent_token_revoke(token=grant.agent_token)
            get_refresh_token_model().revoke_family(grant.token_family)
            audit_record(channel=channel, action="oauth.revoke", outcome=Outcome.OK, actor_user=user,
                         params={"grant_id": grant.pk, "client_id": grant.application.client_id},
                         result={"token_id": grant.agent_token_id})
            transaction.on_commit(lambda: forget_tokens(checksums))
    except (OAuthGrant.DoesNotExist, ValueError, TypeError):
        raise NotFound("OAuth grant not found among yours.") from None
    return grant


def oauth_client_remove(*, application, actor_user=None) -> None:
    """Remove a registered OAuth client: revoke every grant of it (``oauth_grant_revoke``: the
    permission records and tokens die at once), then delete the ``Application`` with its remaining
    tokens and codes. Audited as ``oauth.client_remove``."""
    for grant in OAuthGrant.objects.filter(application=application, revoked_at__isnull=True):
        oauth_grant_revoke(user=grant.user, grant_id=grant.pk, channel=Channel.ADMIN)
    with transaction.atomic():
        audit_record(channel=Channel.ADMIN, action="oauth.client_remove", outcome=Outcome.OK, actor_user=actor_user,
                     params={"client_id": application.client_id, "client_name": application.name})
        OAuthGrant.objects.filter(application=application).delete()
        application.delete()


def oauth_token_family(*, application, raw: str):
    """The refresh-token family of a plain access or refresh token issued to ``application``, or None."""
    if application is None or not raw:
        return None
    checksum = selectors.token_checksum(raw)
    refresh = get_refresh_token_model().objects.filter(application=application)
    family = refresh.filter(token_checksum=checksum).values_list("token_family", flat=True).first()
    if family is None:
        family = refresh.filter(access_token__token_checksum=checksum).values_list("token_family", flat=True).first()
    return family


def oauth_grant_revoke_family(*, application, token_family) -> OAuthGrant | None:
    """Revoke the active grant of ``application`` whose tokens are ``token_family``
    (``oauth_grant_revoke``), e.g. after the client revoked its tokens (RFC 7009); None if none."""
    grant = OAuthGrant.objects.filter(application=application, token_family=token_family, revoked_at__isnull=True).first()
    if grant is None or token_family is None:
        return None
    return oauth_grant_revoke(user=grant.user, grant_id=grant.pk, channel=Channel.API)
