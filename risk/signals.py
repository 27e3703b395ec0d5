"""Access changes take effect at once, on every transport and every worker.

- Any change to a token (revocation, expiry, scopes, accounts) or to its user drops the cached
  identity (``forget_tokens``), so the next call on any process is refused or narrowed.
- Open sockets are told too: revoking or changing a token, deleting or changing a grant
  (``AccountGrant``), saving a user (deactivation) and logging out send ``{"type":
  "access.changed", "user": <id>}`` to the user's channel-layer group ``access_group(user_id)``
  once the transaction commits. ``/mcp/ws`` connections (``mcpapi.ws``) and dashboard sockets
  (``dashboard.consumers``) of that user join the group and re-check their access when it arrives:
  a socket whose token, user or session is no longer valid is closed (4401); one that lost an
  account stops receiving it.
Also: django-axes lockouts (brute-force protection on the login pages) are audited.
"""
import logging

from asgiref.sync import async_to_sync
from axes.signals import user_locked_out
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_out
from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.dispatch import receiver

from core.redis import get_redis
from risk.audit import audit_record
from risk.authentication import token_cache_key
from risk.models import AccountGrant, AgentToken, Channel, Outcome

log = logging.getLogger(__name__)

ACCESS_CHANGED = "access.changed"


def access_group(user_id: int) -> str:
    """Channels group of one user's open sockets that must hear about access changes."""
    return f"access.user.{user_id}"


def forget_tokens(key_hashes) -> None:
    """Delete cached identities of these token hashes (Redis errors are logged, not raised)."""
    keys = [token_cache_key(h) for h in key_hashes]
    if not keys:
        return
    try:
        get_redis().delete(*keys)
    except Exception as exc:
        log.error("could not drop cached tokens: %s", exc)


def notify_access_changed(user_id: int | None) -> None:
    """Tell ``user_id``'s open sockets, on every worker, to re-check their access, once the
    current transaction commits (at once outside one). Failures are logged: the cached identity
    is already gone, so the next request is refused either way."""
    if user_id is None:
        return

    def send():
        from channels.layers import get_channel_layer

        layer = get_channel_layer()
        if layer is None:
            return
        try:
            async_to_sync(layer.group_send)(access_group(user_id), {"type": ACCESS_CHANGED, "user": user_id})
        except Exception as exc:
            log.warning("could not notify sockets of user %s of an access change: %s", user_id, exc)

    transaction.on_commit(send)


@receiver(post_save, sender=AgentToken)
@receiver(post_delete, sender=AgentToken)
def _token_changed(sender, instance, created=False, **kwargs):
    if created:  # a new token was never used, so nothing of it is cached (and Redis may not be up yet)
        return
    forget_tokens([instance.key_hash])
    notify_access_changed(instance.user_id)


@receiver(m2m_changed, sender=AgentToken.accounts.through)
def _token_accounts_changed(sender, instance, action, **kwargs):
    if action in ("post_add", "post_remove", "post_clear") and isinstance(instance, AgentToken):
        forget_tokens([instance.key_hash])
        notify_access_changed(instance.user_id)


@receiver(post_save, sender=AccountGrant)
@receiver(post_delete, sender=AccountGrant)
def _grant_changed(sender, instance, created=False, **kwargs):
    if created:
        return  # a new grant widens access: sockets pick it up when they reconnect
    notify_access_changed(instance.user_id)


@receiver(post_save, sender=get_user_model())
def _user_changed(sender, instance, created=False, **kwargs):
    if created:  # a new user has no token yet
        return
    forget_tokens(AgentToken.objects.filter(user=instance).values_list("key_hash", flat=True))
    notify_access_changed(instance.pk)


@receiver(user_logged_out)
def _logged_out(sender, request, user, **kwargs):
    notify_access_changed(getattr(user, "pk", None))


@receiver(user_locked_out)
def _login_locked_out(sender, request, username, ip_address, **kwargs):
    """A username+IP pair reached django-axes' failure limit, or tried again while locked out:
    one ``auth.lockout`` audit event (channel ``admin`` for ``/admin/login/``, else
    ``dashboard``), attributed to the user of that name when there is one. The username is
    stored as typed (it may be hostile text)."""
    path = getattr(request, "path", "") or ""
    User = get_user_model()
    user = User.objects.filter(**{User.USERNAME_FIELD: username}).first() if username else None
    audit_record(channel=Channel.ADMIN if path.startswith("/admin/") else Channel.DASHBOARD, action="auth.lockout",
                 outcome=Outcome.REJECTED, actor_user=user,
                 params={"username": (username or "")[:150], "ip_address": ip_address, "path": path[:200]},
                 message=f"login locked out after repeated failures: {(username or '')[:150]!r} from {ip_address}")
