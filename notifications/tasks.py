"""Celery tasks: send one notification (retried with backoff, rate-limited per worker by Celery's
``rate_limit``), and watch for venue disconnects (beat, every 10 s); queuing a notification
(``notification_queue``, used by ``notifications.triggers``) and a person's test message."""
from __future__ import annotations

import logging
import time

from celery import shared_task
from django.conf import settings
from django.db import transaction

from core.errors import NotFound
from core.redis import get_redis
from marketdata.selectors import ingester_age_s
from notifications import services

log = logging.getLogger(__name__)


@shared_task(bind=True, ignore_result=True, rate_limit=settings.NOTIFY_RATE_LIMIT, acks_late=True,
             autoretry_for=(services.DeliveryFailed,), retry_backoff=2, retry_backoff_max=300, retry_jitter=True,
             max_retries=6)
def notification_send(self, channel_id: int, event: str, account_id: int | None, facts: dict, dedupe: str) -> str:
    """Deliver one notification (``notifications.services.notification_deliver``)."""
    outcome = services.notification_deliver(channel_id=channel_id, event=event, account_id=account_id, facts=facts,
                                            dedupe=dedupe)
    log.info("notification %s to channel %s: %s", event, channel_id, outcome,
             extra={"event": event, "channel_id": channel_id, "outcome": outcome})
    return outcome


@shared_task(ignore_result=True, expires=10)
def venue_watch() -> None:
    """Notify ``venue_disconnect`` subscribers once per outage when the watched symbols' market
    data has been silent longer than ``NOTIFY_VENUE_DISCONNECT_S`` (``marketdata.selectors.ingester_age_s``)."""
    venue_disconnect_check(time.time())


def notification_queue(event: str, account_id: int | None, facts: dict, dedupe: str) -> None:
    """Queue ``event`` to every channel subscribed to it for ``account_id`` (``notification_send``,
    after the current transaction commits)."""
    channel_ids = services.channels_for(account_id, event)
    if not channel_ids:
        return
    def send():
        for channel_id in channel_ids:
            notification_send.delay(channel_id, event, account_id, facts, dedupe)

    transaction.on_commit(send)


def channel_test(*, user, channel_id: int) -> None:
    """Queue a test notification to one of ``user``'s channels (``NotFound`` for anyone else's)."""
    if not services.NotificationChannel.objects.filter(pk=channel_id, user=user).exists():
        raise NotFound("No such notification channel.")
    transaction.on_commit(lambda: notification_send.delay(channel_id, "test", None, {}, f"test:{time.time_ns()}"))


def venue_disconnect_check(now_s: float) -> bool:
    """Queue ``venue_disconnect`` to its subscribers when market data has been silent for over
    ``NOTIFY_VENUE_DISCONNECT_S`` and this outage was not reported yet (a Redis flag, cleared when
    data flows again). Returns True when it queued."""
    age = ingester_age_s(int(now_s * 1000))
    flag = f"{settings.REDIS_KEY_PREFIX}notif:venue_down"
    redis = get_redis()
    if age is None or age <= settings.NOTIFY_VENUE_DISCONNECT_S:
        if age is not None:
            redis.delete(flag)
        return False
    started_ms = int(now_s * 1000 - age * 1000)
    if not redis.set(flag, str(started_ms), nx=True):
        return False
    notification_queue("venue_disconnect", None, {"seconds": int(age)}, f"venue:{started_ms}")
    return True
