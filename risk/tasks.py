"""Celery tasks of risk: thin wrappers over ``risk.audit``."""
from celery import shared_task

from risk.audit import audit_drain


@shared_task(ignore_result=True)
def drain_audit() -> int:
    """Move audit events from the Redis write-ahead stream into the database (every second)."""
    return audit_drain()
