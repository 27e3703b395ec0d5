"""The request context carried through one unit of work: a request id, the actor (a user name or
an agent token's *name*, never the token), the account, and for MCP calls the tool and the
transport. Held in ``contextvars``, so it follows an asyncio task and a
``run_in_executor``/``sync_to_async`` hop under a copied context; Celery tasks get it through
their message headers (``ops.celery_hooks``).

Set at the entry points: Django HTTP requests (``ops.middleware.RequestContextMiddleware``),
the MCP transports (``ops.asgi.tag_transport`` in ``project.asgi``; each tool call binds its
own id in ``mcpapi.guard``), Celery tasks (``task_prerun``). Read by the log filter
(``core.logs.ContextFilter``) and the metrics (``core.metrics``).
"""
from __future__ import annotations

import contextvars
import uuid

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("tmcp_request_id", default="")
actor: contextvars.ContextVar[str] = contextvars.ContextVar("tmcp_actor", default="")
account: contextvars.ContextVar[int | None] = contextvars.ContextVar("tmcp_account", default=None)
tool: contextvars.ContextVar[str] = contextvars.ContextVar("tmcp_tool", default="")
transport: contextvars.ContextVar[str] = contextvars.ContextVar("tmcp_transport", default="")

HEADER = "request_id"  # Celery message header carrying the id (also ``actor``, ``account``)


def new_request_id() -> str:
    """A fresh request id: 16 hex characters (the length ``mcpapi.guard`` uses)."""
    return uuid.uuid4().hex[:16]


def actor_name(user=None, token=None) -> str:
    """``"token:<name>"`` for an agent token, ``"user:<username>"`` for a person, ``""`` for
    nobody. Only names: a token's secret never leaves ``risk.authentication``."""
    if token is not None and getattr(token, "name", None):
        return f"token:{token.name}"
    username = getattr(user, "username", None)
    if username and getattr(user, "is_authenticated", False):
        return f"user:{username}"
    return ""


def bind_call(request_id_value: str, *, user=None, token=None, tool_name: str = "") -> str:
    """Bind one MCP tool call's context (its request id, actor and tool) and return the id.
    Called where ``mcpapi.guard`` creates the call's ``CallContext``."""
    request_id.set(request_id_value)
    actor.set(actor_name(user, token))
    if tool_name:
        tool.set(tool_name)
    return request_id_value


def snapshot() -> dict:
    """The current context as a dict (``request_id``, ``actor``, ``account``)."""
    return {"request_id": request_id.get(), "actor": actor.get(), "account": account.get()}


def restore(values: dict) -> None:
    """Bind ``values`` (a ``snapshot()``, e.g. from a Celery task's headers)."""
    request_id.set(values.get("request_id") or "")
    actor.set(values.get("actor") or "")
    acc = values.get("account")
    account.set(int(acc) if acc not in (None, "") else None)
