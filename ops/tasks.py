"""Celery tasks of ``ops``."""
from celery import shared_task

from ops.health import beat_heartbeat_write


@shared_task(ignore_result=True, expires=10)
def beat_heartbeat() -> None:
    """Scheduled by beat every ``BEAT_HEARTBEAT_S``: record that beat and a worker are alive
    (``/readyz``'s ``beat`` check reads it)."""
    beat_heartbeat_write()
