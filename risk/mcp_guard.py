"""The guard around every MCP tool: who is calling, typed errors, and the audit trail.

Tools are declared as methods of ``mcp_server.MCPToolset`` subclasses in ``<app>/mcp.py``
(django-mcp-server's convention) and decorated with ``@guarded_tool``. The guard:

- reads the caller from the authenticated request (``request.user``, ``request.auth`` = the
  ``AgentToken``) and exposes it to the tool through ``current_call()``;
- refuses a call the token's scopes do not allow (``scope=``), with a message saying which scope
  is missing, and audits the refusal;
- turns a ``TradingError`` into an MCP tool error (``isError: true``) whose text an agent can act
  on (``[code] message``), and any other exception into a tool error with a request id;
- records one ``AuditEvent`` per call (``mcp.<tool>``) through the audit write-ahead log
  (``risk.audit.audit_enqueue``: off the request path, never lost), unless the tool's service
  already audits the action in its own transaction (``audit=False``, e.g. ``place_order`` →
  ``order.place``);
- marks outside text in the result (``risk.trust``: the ``_tradingmcp_security`` trust-boundary
  block, after alpaca-mcp-server's envelope) and in tool errors (fenced exchange text + a note).

How a call runs (``install_dispatch``, installed by ``project.mcp_endpoint.MCPEndpoint`` on the
registry that both ``/mcp`` and ``/mcp/ws`` use). django-mcp-server alone would run every tool
through ``sync_to_async`` in ONE shared thread per process, so concurrent calls queue behind each
other's Redis and database round trips. Instead:

- an ``async def`` tool (the hot reads: ``get_ticker``, ``get_market_data``) is awaited on the
  event loop: its selectors use the asyncio Redis client, and its audit entry goes to the
  write-ahead stream with ``audit_enqueue_async``; no thread at all;
- a sync tool runs in a bounded pool of ``MCP_TOOL_THREADS`` (default 4) worker threads, so calls
  overlap; a tool declared ``serial=True`` runs on one dedicated worker thread instead (one at a
  time per process, as before). Django database connections are per thread: each pooled call runs
  between two ``close_old_connections()`` (what Django does around a request), so a connection
  is reused while ``CONN_MAX_AGE`` allows and closed after the call when it is 0, when it errored
  or when it is too old; at most one connection per worker thread, ``close_tool_connections()``
  closes them all;
- when the endpoint is driven from sync code through ``async_to_sync`` (tests, management
  commands), sync tools run in that calling thread, as Django's own ``sync_to_async`` does, so they
  see the caller's transaction.
"""
from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import os
import threading
import time
import uuid
import weakref
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass, field
from types import SimpleNamespace

from asgiref.sync import AsyncToSync, SyncToAsync, async_to_sync, sync_to_async
from mcp.server.fastmcp.exceptions import ToolError

from ops.context import bind_call
from risk.audit import audit_enqueue, audit_enqueue_async
from risk.models import Channel, Outcome, Scope
from risk.trust import envelope, error_text
from trading.errors import PermissionDenied, TradingError

log = logging.getLogger(__name__)

_current: contextvars.ContextVar["CallContext"] = contextvars.ContextVar("mcp_call")


@dataclass
class CallContext:
    """The caller of one tool call: ``user``, ``token`` (an ``AgentToken``), a ``request_id``;
    a tool sets ``account`` so the audit event is filed under it."""

    user: object
    token: object
    request_id: str
    tool: str = ""
    account: object = None
    extra: dict = field(default_factory=dict)


def current_call() -> CallContext:
    """The ``CallContext`` of the tool call running in this thread/task."""
    return _current.get()


# tool name → the scope a token needs to see and call it (filled by ``guarded_tool``).
TOOL_SCOPES: dict[str, str] = {}


def tool_allowed(name: str, token) -> bool:
    """May ``token`` (an ``AgentToken``) see and call tool ``name``? Tools with no declared scope
    need ``trade`` (fail closed)."""
    return token is not None and token.has_scope(TOOL_SCOPES.get(name, Scope.TRADE))


ASYNC_IMPL = "__tradingmcp_async__"  # attribute of a sync facade: the guarded coroutine function
SERIAL = "__tradingmcp_serial__"  # attribute: run this sync tool on the one serial worker thread


def guarded_tool(fn=None, *, scope: str = Scope.TRADE, audit: bool = True, serial: bool = False):
    """Decorate a toolset method, sync or ``async def`` (see module docstring). Keeps its
    signature and docstring, from which django-mcp-server/FastMCP build the tool's JSON schema and
    description.

    ``scope``: the ``risk.models.Scope`` a token needs for this tool (default ``trade``, so a tool
    that forgets to declare one is not exposed to read-only tokens). ``audit``: file an
    ``mcp.<tool>`` audit event per call (False when the tool's service audits in its own
    transaction). ``serial``: run this sync tool one call at a time per process (on a dedicated
    thread) instead of in the worker pool.

    An ``async def`` tool is returned as a sync method (what django-mcp-server registers; calling
    it from sync code runs the coroutine through ``async_to_sync``) carrying the guarded coroutine
    function in its ``__tradingmcp_async__`` attribute, which ``install_dispatch`` awaits directly.
    """

    def decorate(func):
        name = func.__name__
        TOOL_SCOPES[name] = str(scope)

        if inspect.iscoroutinefunction(func):
            @functools.wraps(func)
            async def run_async(self, *args, **kwargs):
                ctx, params, t0 = _begin(name, self, kwargs)
                token_var = _current.set(ctx)
                try:
                    _check(name, ctx, kwargs)
                    result = envelope(name, await func(self, *args, **kwargs))
                except Exception as exc:
                    error, event = _failure(name, ctx, params, exc, audit, t0)
                    if event is not None:
                        await _audit_async(*event)
                    if error is None:
                        raise
                    raise error from None
                finally:
                    _current.reset(token_var)
                if audit:
                    await _audit_async(name, ctx, params, Outcome.OK, "", {}, t0)
                return result

            @functools.wraps(func)
            def wrapper(self, *args, **kwargs):
                return async_to_sync(run_async)(self, *args, **kwargs)

            setattr(wrapper, ASYNC_IMPL, run_async)
        else:
            @functools.wraps(func)
            def wrapper(self, *args, **kwargs):
                ctx, params, t0 = _begin(name, self, kwargs)
                token_var = _current.set(ctx)
                try:
                    _check(name, ctx, kwargs)
                    result = envelope(name, func(self, *args, **kwargs))
                except Exception as exc:
                    error, event = _failure(name, ctx, params, exc, audit, t0)
                    if event is not None:
                        _audit(*event)
                    if error is None:
                        raise
                    raise error from None
                finally:
                    _current.reset(token_var)
                if audit:
                    _audit(name, ctx, params, Outcome.OK, "", {}, t0)
                return result

            setattr(wrapper, SERIAL, bool(serial))
        wrapper.__doc__ = inspect.cleandoc(func.__doc__ or "")
        return wrapper

    return decorate(fn) if fn is not None else decorate


def _begin(name: str, toolset, kwargs: dict) -> tuple[CallContext, dict, float]:
    request = toolset.request
    ctx = CallContext(
        user=getattr(request, "user", None),
        token=getattr(request, "auth", None),
        request_id=bind_call(uuid.uuid4().hex[:16], user=getattr(request, "user", None), token=getattr(request, "auth", None), tool_name=name),
        tool=name,
    )
    return ctx, dict(kwargs), time.perf_counter()


def _check(name: str, ctx: CallContext, kwargs: dict) -> None:
    """The token's scope and symbol restriction (``PermissionDenied``)."""
    if not tool_allowed(name, ctx.token):
        raise PermissionDenied(
            f"This token lacks the '{TOOL_SCOPES[name]}' scope needed by {name}; "
            "ask the account owner for a token with that scope."
        )
    allowed = getattr(ctx.token, "symbols", None)
    if allowed:
        for symbol in requested_symbols(kwargs):
            if symbol not in allowed:
                raise PermissionDenied(f"This token may trade and read only {', '.join(allowed)}, not {symbol!r}.")


def requested_symbols(kwargs: dict) -> list[str]:
    """The symbols a tool call names (upper case): ``symbol``, ``symbols`` (a list or a
    comma-separated string) and the symbol part of a ``stream`` name (``btcusdt@trade``)."""
    names = []
    if isinstance(kwargs.get("symbol"), str):
        names.append(kwargs["symbol"])
    many = kwargs.get("symbols")
    if isinstance(many, str):
        names += many.split(",")
    elif isinstance(many, (list, tuple)):
        names += [x for x in many if isinstance(x, str)]
    stream = kwargs.get("stream")
    if isinstance(stream, str) and "@" in stream:
        names.append(stream.split("@", 1)[0])
    return [n.strip().upper() for n in names if n.strip()]


def _failure(name, ctx, params, exc, audit, t0):
    """The tool error to raise for ``exc`` (None: re-raise it as it is) and the audit event to
    file first (``_audit``'s arguments, or None)."""
    if isinstance(exc, TradingError):
        event = (name, ctx, params, Outcome.REJECTED, str(exc), exc.as_dict(), t0) \
            if audit or isinstance(exc, PermissionDenied) else None
        return ToolError(error_text(str(exc))), event
    if isinstance(exc, ToolError):
        return None, None
    log.error("tool %s failed (request %s)", name, ctx.request_id, exc_info=exc)
    event = (name, ctx, params, Outcome.ERROR, f"{type(exc).__name__}: {exc}", {}, t0) if audit else None
    return ToolError(f"Internal error in {name} (request id {ctx.request_id}); nothing was changed by this call."), event


def _audit(name, ctx: CallContext, params, outcome, message, result, t0) -> None:
    try:
        audit_enqueue(**_audit_fields(name, ctx, params, outcome, message, result, t0))
    except Exception:  # never hide the tool's answer behind an audit failure; log loudly
        log.exception("audit of mcp.%s failed (request %s)", name, ctx.request_id)


async def _audit_async(name, ctx: CallContext, params, outcome, message, result, t0) -> None:
    try:
        await audit_enqueue_async(**_audit_fields(name, ctx, params, outcome, message, result, t0))
    except Exception:
        log.exception("audit of mcp.%s failed (request %s)", name, ctx.request_id)


def _audit_fields(name, ctx: CallContext, params, outcome, message, result, t0) -> dict:
    return dict(
        channel=Channel.MCP, action=f"mcp.{name}", outcome=outcome, actor_user=ctx.user, actor_token=ctx.token,
        account=ctx.account, params=params, message=message, result=result,
        latency_ms=(time.perf_counter() - t0) * 1000, request_id=ctx.request_id,
    )


# --- dispatch: async tools on the loop, sync tools in a thread pool ------------------------------

TOOL_THREADS = max(1, int(os.environ.get("MCP_TOOL_THREADS", "4")))
_pool = ThreadPoolExecutor(max_workers=TOOL_THREADS, thread_name_prefix="mcp-tool")
_serial = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mcp-tool-serial")


def _in_caller_thread() -> bool:
    """Is this coroutine driven by sync code (``async_to_sync``) or inside a
    ``ThreadSensitiveContext``? Then sync code must run in that thread (Django's rule)."""
    return getattr(AsyncToSync.executors, "current", None) is not None or \
        SyncToAsync.thread_sensitive_context.get(None) is not None


HEALTH_CHECK_FRESH_S = 1.0
_last_clean = threading.local()  # per worker thread: when its connection last ended a call cleanly


def _with_db_hygiene(fn):
    """``fn`` wrapped to run as ``_hygienic_call`` runs it (see there)."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        return _hygienic_call(fn, args, kwargs)

    return run


def _hygienic_call(fn, args: tuple, kwargs: dict):
    """``fn(*args, **kwargs)`` between two ``close_old_connections()``, as Django runs a request:
    the worker thread's connection is reused only while ``CONN_MAX_AGE`` allows and it is healthy.

    Django's ``CONN_HEALTH_CHECKS`` would ping the connection (``SELECT 1``, a round trip) before
    every call; a connection that ended its previous call without error less than
    ``HEALTH_CHECK_FRESH_S`` ago is used without that ping (agents call in tight loops). If the
    server dropped it within that second, that one call fails with a database error and the
    connection is replaced after it, as Django does after any error."""
    from django.db import DEFAULT_DB_ALIAS, close_old_connections, connections

    close_old_connections()
    db = connections[DEFAULT_DB_ALIAS]
    if db.connection is not None and time.monotonic() - getattr(_last_clean, "at", -1e9) < HEALTH_CHECK_FRESH_S:
        db.health_check_done = True
    clean = False
    try:
        result = fn(*args, **kwargs)
        clean = True
        return result
    finally:
        close_old_connections()
        _last_clean.at = time.monotonic() if clean and db.connection is not None and not db.errors_occurred else -1e9


async def run_sync(fn, /, *args, serial: bool = False, **kwargs):
    """Run sync ``fn(*args, **kwargs)`` (Django ORM code allowed) from the event loop: in the
    calling thread when there is one (see ``_in_caller_thread``), else in the tool pool, or on the
    serial thread when ``serial``, under a copy of the caller's context variables (the identity,
    the read-ahead values), as ``_hygienic_call``.

    The pool hop is ``loop.run_in_executor`` with ``contextvars.copy_context().run``, which is
    what asgiref's ``sync_to_async(thread_sensitive=False, executor=...)`` amounts to here, without
    its per-call wrapper objects and context copy-back (py-spy: ~4 % of a ``place_order`` call's
    CPU). Context variables a tool sets are not copied back to the caller; none needs them."""
    if _in_caller_thread():
        return await sync_to_async(fn)(*args, **kwargs)
    executor = _serial if serial else _pool
    context = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(executor, context.run, _hygienic_call, fn, args, kwargs)


def close_tool_connections(timeout: float = 10.0) -> None:
    """Close the database connections of every tool worker thread (e.g. before dropping a test
    database, or at shutdown). Blocks until each worker has run the close or ``timeout`` (s)."""
    from django.db import connections

    for executor, n in ((_pool, TOOL_THREADS), (_serial, 1)):
        barrier = threading.Barrier(n)

        def close(barrier=barrier):
            connections.close_all()
            try:  # hold this worker until every other one has a close job too: one per thread
                barrier.wait(timeout)
            except threading.BrokenBarrierError:
                pass

        futures_wait([executor.submit(close) for _ in range(n)], timeout)


class GuardedCaller:
    """What FastMCP calls for a toolset tool (replaces django-mcp-server's ``_ToolsetMethodCaller``,
    same arguments): a new toolset instance with ``request`` = the caller's identity, then the
    guarded coroutine awaited on the loop (async tools) or the sync method through ``run_sync``."""

    def __init__(self, original):
        self.class_ = original.class_
        self.method_name = original.method_name
        self.context_kwarg = original.context_kwarg
        self.forward_context_kwarg = original.forward_context_kwarg
        func = getattr(self.class_, self.method_name)
        self.async_impl = getattr(func, ASYNC_IMPL, None)
        self.serial = bool(getattr(func, SERIAL, False))

    async def __call__(self, *args, **kwargs):
        from mcp_server.djangomcp import _SyncToolCallWrapper, django_request_ctx

        instance = self.class_(context=kwargs[self.context_kwarg], request=django_request_ctx.get(SimpleNamespace()))
        if not self.forward_context_kwarg:
            del kwargs[self.context_kwarg]
        if self.async_impl is not None:
            return await self.async_impl(instance, *args, **kwargs)
        method = _SyncToolCallWrapper(getattr(instance, self.method_name))
        if TOOL_SCOPES.get(self.method_name) != Scope.TRADE:
            return await run_sync(method, *args, serial=self.serial, **kwargs)
        async with _account_queue(instance.request, kwargs.get("account_id")):
            return await run_sync(method, *args, serial=self.serial, **kwargs)


_account_locks: weakref.WeakValueDictionary = weakref.WeakValueDictionary()  # (loop, user, account) → lock


def _account_queue(identity, account_id) -> asyncio.Lock:
    """The per-process queue of one caller's trading calls on one account (``account_id`` as the
    call names it; None = the caller's default account), on this event loop.

    A trading call locks its account's row for its whole transaction, so two calls on the same
    account run one after the other whatever we do. Queued here first, the waiting ones hold no
    worker thread, database connection or GIL time while the first one books: with all of a
    process's tool threads blocked on one account's row lock, calls on other accounts would wait
    for a thread, and the lock holder would compete for the GIL with threads that can only wait.
    Other processes still meet on the row lock itself, which stays the guarantee. The lock is
    forgotten when no call holds or awaits it."""
    user = getattr(getattr(identity, "user", None), "pk", None)
    key = (id(asyncio.get_running_loop()), user, account_id if isinstance(account_id, (int, str)) else None)
    lock = _account_locks.get(key)
    if lock is None:
        lock = _account_locks[key] = asyncio.Lock()
    return lock


def install_dispatch(server) -> int:
    """Make ``server`` (django-mcp-server's ``DjangoMCP``) run its toolset tools through
    ``GuardedCaller``; idempotent. Returns how many tools it switched."""
    from mcp_server.djangomcp import _ToolsetMethodCaller

    n = 0
    for tool in server._tool_manager.list_tools():
        if isinstance(tool.fn, _ToolsetMethodCaller):
            tool.fn = GuardedCaller(tool.fn)
            n += 1
    return n
