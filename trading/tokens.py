"""Agent tokens as their person manages them (the tokens page, OAuth consent): restricted to
accounts the person may use (``trading.selectors.account_get``) and to known symbols, listed
without their secret, revoked by their owner only. The token itself (its hash, scopes, checks) is
``risk.services.agent_token_create`` / ``agent_token_revoke``."""
from __future__ import annotations

from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from core.errors import InvalidInput, NotFound
from marketdata.selectors import symbol_get
from risk.models import AgentToken
from risk.services import agent_token_create, agent_token_revoke
from trading import selectors


def token_as_dict(token) -> dict:
    """An agent token as the tokens page lists it (never the secret, only its prefix)."""
    return {
        "id": token.pk, "name": token.name, "prefix": token.prefix, "scopes": list(token.scopes or []),
        "accounts": [a.pk for a in token.accounts.all()], "symbols": list(token.symbols or []),
        "createdAt": token.created_at, "expiresAt": token.expires_at, "lastUsedAt": token.last_used_at,
        "revokedAt": token.revoked_at, "active": token.is_active, "confirmOrders": bool(token.confirm_orders),
    }


def tokens_list(*, user) -> list[dict]:
    """The user's bearer agent tokens, newest first (``token_as_dict``); the permission records of
    OAuth grants are listed with their grants (``oauth.selectors.oauth_grants_list``)."""
    tokens = AgentToken.objects.filter(user=user, oauth_grant__isnull=True)
    return [token_as_dict(t) for t in tokens.prefetch_related("accounts").order_by("-created_at", "-id")]


def token_create(*, user, name: str, scopes: list[str], expires_days: int | None = None,
                 account_ids: list[int] | None = None, symbols: list[str] | None = None, confirm_orders: bool = False):
    """Create an agent token for ``user`` through ``risk.services.agent_token_create``, optionally
    restricted to some of the user's accounts and some symbols, and in confirm mode
    (``confirm_orders``: its orders wait for a person's approval, ``trading.approvals``). Returns
    ``(AgentToken, plain)``: the plain token is shown once and never stored.

    Raises ``InvalidInput`` for an empty/long name, no or unknown scope, ``expires_days`` outside
    1..3650, an unknown symbol; ``NotFound`` for an account the user may not use. Nothing is
    created when it raises.
    """
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise InvalidInput("Give the token a name of 1 to 100 characters (e.g. 'claude-desktop').")
    if not scopes:
        raise InvalidInput("Pick at least one scope (market:read, account:read, trade).")
    expires_at = None
    if expires_days is not None:
        if isinstance(expires_days, bool) or not isinstance(expires_days, int) or not 1 <= expires_days <= 3650:
            raise InvalidInput(f"expires_days must be from 1 to 3650, got {expires_days!r}.")
        expires_at = timezone.now() + timedelta(days=expires_days)
    accounts = []
    for account_id in account_ids or []:
        accounts.append(selectors.account_get(user=user, account_id=account_id))
    names = [symbol_get(s).symbol for s in (symbols or [])]
    with transaction.atomic():
        token, key = agent_token_create(user=user, name=name, expires_at=expires_at, scopes=list(scopes),
                                        confirm_orders=bool(confirm_orders))
        if accounts:
            token.accounts.set(accounts)
        if names:
            token.symbols = names
            token.save(update_fields=["symbols"])
    return token, key


def token_revoke(*, user, token_id) -> dict:
    """Revoke one of the user's tokens (``risk.services.agent_token_revoke``; it stops
    authenticating at once). Raises ``NotFound`` for a token that is not the user's."""
    try:
        token = AgentToken.objects.get(pk=int(token_id), user=user)
    except (AgentToken.DoesNotExist, ValueError, TypeError):
        raise NotFound("Token not found among your tokens.") from None
    return token_as_dict(agent_token_revoke(token=token))
