"""Keep cached MCP identities of OAuth access tokens honest, revoke a deleted grant's permission
record, and audit dashboard sign-ins."""
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.db import transaction
from django.db.models.signals import post_delete, post_save, pre_delete
from django.dispatch import receiver
from oauth2_provider.models import get_access_token_model

from oauth.models import OAuthGrant
from oauth.selectors import oauth_access_token_checksums
from risk.audit import audit_record
from risk.models import AgentToken, Channel, Outcome
from risk.services import agent_token_revoke
from risk.signals import forget_tokens


@receiver(post_delete, sender=get_access_token_model())
def _access_token_deleted(sender, instance, **kwargs):
    """A revoked, rotated or deleted access token: drop its cached identity once the delete commits."""
    checksum = instance.token_checksum
    if checksum:
        transaction.on_commit(lambda: forget_tokens([checksum]))


@receiver(post_save, sender=AgentToken)
def _agent_token_changed(sender, instance, created=False, **kwargs):
    """A permission record changed (e.g. revoked in the admin): drop the cached identities of the
    access tokens of its OAuth grant, if it has one."""
    if created:
        return
    grant = OAuthGrant.objects.filter(agent_token=instance).only("token_family").first()
    if grant is not None:
        checksums = oauth_access_token_checksums(token_family=grant.token_family)
        transaction.on_commit(lambda: forget_tokens(checksums))


@receiver(post_save, sender=get_user_model())
def _user_changed(sender, instance, created=False, **kwargs):
    """A user changed (e.g. deactivated): drop the cached identities of their OAuth access tokens,
    as ``risk.signals`` does for their bearer tokens."""
    if created:
        return
    checksums = list(get_access_token_model().objects.filter(user=instance).values_list("token_checksum", flat=True))
    if checksums:
        transaction.on_commit(lambda: forget_tokens(checksums))


@receiver(pre_delete, sender=OAuthGrant)
def _grant_deleted(sender, instance, **kwargs):
    """A grant deleted (e.g. with its client in the admin): its permission record is revoked too."""
    agent_token_revoke(token=instance.agent_token)


@receiver(user_logged_in)
def _logged_in(sender, request, user, **kwargs):
    audit_record(channel=Channel.DASHBOARD, action="auth.login", outcome=Outcome.OK, actor_user=user,
                 params={"ip": request.META.get("REMOTE_ADDR", "") if request is not None else ""})


@receiver(user_login_failed)
def _login_failed(sender, credentials, request=None, **kwargs):
    audit_record(channel=Channel.DASHBOARD, action="auth.login_failed", outcome=Outcome.REJECTED,
                 params={"username": str(credentials.get("username", ""))[:150],
                         "ip": request.META.get("REMOTE_ADDR", "") if request is not None else ""})
