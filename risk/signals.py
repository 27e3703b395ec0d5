"""Keep the MCP endpoint's token cache honest: any change to a token or its user drops the cached
identity, so a revocation, an expiry change or a deactivated user takes effect on the next call.
Audit django-axes lockouts (brute-force protection on the login pages)."""
from axes.signals import user_locked_out
from django.contrib.auth import get_user_model
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from risk.audit import audit_record
from risk.models import AgentToken, Channel, Outcome


def forget_tokens(key_hashes) -> None:
    """Delete cached identities of these token hashes (Redis errors are logged, not raised)."""
    import logging

    from marketdata.cache import get_redis
    from project.mcp_endpoint import token_cache_key

    keys = [token_cache_key(h) for h in key_hashes]
    if not keys:
        return
    try:
        get_redis().delete(*keys)
    except Exception as exc:
        logging.getLogger(__name__).error("could not drop cached tokens: %s", exc)


@receiver(post_save, sender=AgentToken)
@receiver(post_delete, sender=AgentToken)
def _token_changed(sender, instance, created=False, **kwargs):
    if created:  # a new token was never used, so nothing of it is cached (and Redis may not be up yet)
        return
    forget_tokens([instance.key_hash])


@receiver(post_save, sender=get_user_model())
def _user_changed(sender, instance, created=False, **kwargs):
    if created:  # a new user has no token yet
        return
    forget_tokens(AgentToken.objects.filter(user=instance).values_list("key_hash", flat=True))


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
