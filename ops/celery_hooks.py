"""Celery signal handlers (Celery docs, "Signals"): the request context travels in each task
message's headers, and every task's runtime and outcome are counted.

- ``before_task_publish``: the publisher's ``core.context`` (request id, actor, account) goes into
  the message headers ``tmcp_request_id`` / ``tmcp_actor`` / ``tmcp_account``.
- ``task_prerun``: the worker binds them (from ``task.request``, where Celery puts a message's
  custom headers) for the task's logs and for any task it publishes in turn; an eagerly run task
  keeps its caller's context.
- ``task_postrun`` / ``task_failure`` / ``task_retry``: ``tradingmcp_celery_task_seconds`` and
  ``tradingmcp_celery_tasks_total`` (``core.metrics``).
"""
from __future__ import annotations

import time

from celery import signals

from core import context, metrics

HEADERS = {"request_id": "tmcp_request_id", "actor": "tmcp_actor", "account": "tmcp_account"}
_started: dict[str, float] = {}


def _publish(sender=None, headers=None, **_):
    if headers is None:
        return
    values = context.snapshot()
    for key, header in HEADERS.items():
        if values.get(key) not in (None, "") and header not in headers:
            headers[header] = values[key]


def _prerun(sender=None, task_id=None, task=None, **_):
    _started[task_id] = time.perf_counter()
    request = getattr(task, "request", None)
    if request is None or getattr(request, "is_eager", False):
        return
    values = {key: request.get(header) for key, header in HEADERS.items()}
    context.restore(values)


def _postrun(sender=None, task_id=None, task=None, state=None, **_):
    started = _started.pop(task_id, None)
    name = getattr(task, "name", None) or getattr(sender, "name", "unknown")
    metrics.task_finished(name, (state or "unknown").lower(), None if started is None else time.perf_counter() - started)
    request = getattr(task, "request", None)
    if request is not None and not getattr(request, "is_eager", False):
        context.restore({})


def connect() -> None:
    """Connect the handlers (``OpsConfig.ready``); idempotent."""
    signals.before_task_publish.connect(_publish, weak=False, dispatch_uid="ops.publish")
    signals.task_prerun.connect(_prerun, weak=False, dispatch_uid="ops.prerun")
    signals.task_postrun.connect(_postrun, weak=False, dispatch_uid="ops.postrun")
