"""Celery tasks: send one notification (retried with backoff, rate-limited per worker by Celery's
``rate_limit``), and watch for venue disconnects (beat, every 10 s)."""
from __future__ import annotations

import logging
import time

from celery import shared_task
from django.conf import settings

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
    from notifications.triggers import venue_disconnect_check

    venue_disconnect_check(time.time())
