"""Notification channels (create, list, delete, test) and delivery (``notification_deliver``,
run by ``notifications.tasks.notification_send``)."""
from __future__ import annotations

import threading
import time
from collections import defaultdict

import apprise
from django.conf import settings
from django.db import transaction
from django.db.models import Q

from core.errors import InvalidInput, NotFound
from core.redis import get_redis
from notifications.messages import render
from notifications.models import NotificationChannel, NotificationEvent
from risk.audit import audit_record
from risk.models import AccountGrant, Channel, Outcome
from risk.secrets import decrypt, encrypt
from trading.models import Account

MAX_CHANNELS_PER_USER = 10
SENT_TTL_S = 7 * 24 * 3600  # a delivered (channel, dedupe key) is remembered this long


class DeliveryFailed(Exception):
    """Apprise could not deliver to the channel (the task retries)."""


def channel_create(*, user, url: str, events: list[str]) -> NotificationChannel:
    """Add an Apprise ``url`` for ``user`` receiving ``events`` (``NotificationEvent`` values).

    Raises ``InvalidInput`` when Apprise does not recognise the URL, no or unknown events are
    chosen, or the user already has ``MAX_CHANNELS_PER_USER`` channels. Audited as
    ``notification_channel.create`` with the masked URL only."""
    url = (url or "").strip()
    plugin = apprise.Apprise.instantiate(url) if url and len(url) <= 2000 else None
    if plugin is None:
        raise InvalidInput("Not an Apprise URL Apprise can use, e.g. json://example.com/hook, "
                           "tgram://bottoken/chatid, mailtos://user:pass@example.com (see Apprise's list of services).")
    chosen = sorted(set(events or ()))
    unknown = [e for e in chosen if e not in NotificationEvent.values]
    if unknown or not chosen:
        raise InvalidInput(f"Choose at least one of: {', '.join(NotificationEvent.values)}.")
    if NotificationChannel.objects.filter(user=user).count() >= MAX_CHANNELS_PER_USER:
        raise InvalidInput(f"At most {MAX_CHANNELS_PER_USER} notification channels per person; delete one first.")
    hint = plugin.url(privacy=True).split("?", 1)[0][:300]
    with transaction.atomic():
        channel = NotificationChannel.objects.create(user=user, url_encrypted=encrypt(url), url_hint=hint, events=chosen)
        audit_record(channel=Channel.DASHBOARD, action="notification_channel.create", outcome=Outcome.OK, actor_user=user,
                     params={"channel_id": channel.pk, "url": hint, "events": chosen})
    recipients_forget()
    return channel


def channel_delete(*, user, channel_id: int) -> None:
    """Delete one of ``user``'s channels (``NotFound`` for anyone else's). Audited."""
    with transaction.atomic():
        deleted, _ = NotificationChannel.objects.filter(pk=channel_id, user=user).delete()
        if not deleted:
            raise NotFound("No such notification channel.")
        audit_record(channel=Channel.DASHBOARD, action="notification_channel.delete", outcome=Outcome.OK,
                     actor_user=user, params={"channel_id": channel_id})
    recipients_forget()


def channels_list(*, user) -> list[NotificationChannel]:
    return list(NotificationChannel.objects.filter(user=user))


# --- who wants what --------------------------------------------------------------------------------

_lookup_lock = threading.Lock()
_lookup: dict = {"at": -1e9, "by_account": {}, "by_event": {}}


def recipients_forget() -> None:
    """Drop this process's cached recipient map (after a channel changes)."""
    with _lookup_lock:
        _lookup["at"] = -1e9


def _refresh() -> None:
    """Rebuild the map: account id → [(channel id, events)] for the channels of the account's
    owner and grantees, and event → channel ids for account-less events. Cached for
    ``NOTIFY_LOOKUP_TTL_S`` per process (a trigger runs on every order)."""
    channels = list(NotificationChannel.objects.filter(enabled=True).values_list("id", "user_id", "events"))
    by_account: dict[int, list] = defaultdict(list)
    by_event: dict[str, list] = defaultdict(list)
    if channels:
        users = {u for _, u, _ in channels}
        owned = Account.objects.filter(Q(owner_id__in=users)).values_list("id", "owner_id")
        granted = AccountGrant.objects.filter(user_id__in=users).values_list("account_id", "user_id")
        accounts_of: dict[int, set] = defaultdict(set)
        for account_id, user_id in list(owned) + list(granted):
            accounts_of[user_id].add(account_id)
        for channel_id, user_id, events in channels:
            for account_id in accounts_of[user_id]:
                by_account[account_id].append((channel_id, frozenset(events)))
            for event in events:
                by_event[event].append(channel_id)
    _lookup.update(at=time.monotonic(), by_account=dict(by_account), by_event=dict(by_event))


def channels_for(account_id: int | None, event: str) -> list[int]:
    """Ids of the enabled channels that receive ``event`` about ``account_id`` (account-less
    events: every channel that chose it)."""
    with _lookup_lock:
        if time.monotonic() - _lookup["at"] > settings.NOTIFY_LOOKUP_TTL_S:
            _refresh()
        if account_id is None:
            return list(_lookup["by_event"].get(event, ()))
        return [cid for cid, events in _lookup["by_account"].get(account_id, ()) if event in events]


def _may_see(user_id: int, account_id: int) -> bool:
    return Account.objects.filter(Q(owner_id=user_id) | Q(grants__user_id=user_id), pk=account_id).exists()


# --- delivery --------------------------------------------------------------------------------------

def _sent_key(channel_id: int, dedupe: str) -> str:
    return f"{settings.REDIS_KEY_PREFIX}notif:sent:{channel_id}:{dedupe}"


def notification_deliver(*, channel_id: int, event: str, account_id: int | None, facts: dict, dedupe: str) -> str:
    """Send one notification through Apprise and audit it (``notification.send``). Returns
    ``"sent"``, ``"skipped"`` (channel gone, disabled, no longer subscribed, or its owner may no
    longer see the account) or ``"duplicate"`` (this ``dedupe`` key was delivered to this channel
    already: a retried or redelivered task sends nothing twice). Raises ``DeliveryFailed`` when
    Apprise reports a failure (the dedupe claim is released so a retry sends it)."""
    channel = NotificationChannel.objects.filter(pk=channel_id, enabled=True).first()
    if channel is None or (event != "test" and event not in channel.events):
        return "skipped"
    if account_id is not None and not _may_see(channel.user_id, account_id):
        return "skipped"
    redis = get_redis()
    key = _sent_key(channel_id, dedupe)
    if not redis.set(key, "1", nx=True, ex=SENT_TTL_S):
        return "duplicate"
    title, body = render(event, account_id, facts)
    sender = apprise.Apprise()
    sender.add(decrypt(channel.url_encrypted))
    ok = bool(sender.notify(title=title, body=body))
    account = Account.objects.filter(pk=account_id).first() if account_id is not None else None
    audit_record(channel=Channel.SYSTEM, action="notification.send", outcome=Outcome.OK if ok else Outcome.ERROR,
                 account=account, params={"event": event, "channel_id": channel_id, "user_id": channel.user_id,
                                          "dedupe": dedupe[:100]},
                 message=title if ok else f"delivery to {channel.url_hint} failed")
    if not ok:
        redis.delete(key)
        raise DeliveryFailed(f"delivery of {event} to channel {channel_id} failed")
    return "sent"
