"""Keep the MCP endpoint's token cache honest: any change to a token or its user drops the cached
identity, so a revocation, an expiry change or a deactivated user takes effect on the next call."""
from django.contrib.auth import get_user_model
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from risk.models import AgentToken


def forget_tokens(key_hashes) -> None:
    """Delete cached identities of these token hashes (Redis errors are logged, not raised)."""
    import logging

    from marketdata.cache import get_redis
    from risk.authentication import token_cache_key

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
