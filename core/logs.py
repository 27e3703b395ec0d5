"""Log records with the request context (``core.context``): ``ContextFilter`` adds
``request_id``, ``actor`` and ``account`` to every record it sees (an ``extra=`` value wins).
``project.settings`` puts it on the console handler, whose formatter is the plain text one by
default and python-json-logger's ``JsonFormatter`` (one JSON object per line) with ``LOG_FORMAT=json``."""
from __future__ import annotations

import logging

from core import context


class ContextFilter(logging.Filter):
    """Adds the current ``request_id``, ``actor`` and ``account`` to each record; never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", None):
            record.request_id = context.request_id.get()
        if not getattr(record, "actor", None):
            record.actor = context.actor.get()
        if getattr(record, "account", None) is None:
            record.account = context.account.get()
        return True
