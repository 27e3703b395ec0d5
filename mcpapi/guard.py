"""The guard of every MCP tool, applied where the tool is declared: who is calling, scopes, typed
errors, the audit trail and the trust envelope.

Tools are plain functions in ``mcpapi/tools/<app>.py`` declared with ``@mcp_tool(scope=...)``. The
decorator wraps the function (below) and registers the wrapper on the one MCP server object,
``SERVER`` (django-mcp-server's ``global_mcp_server``, an ``mcp.server.fastmcp.FastMCP``), through
FastMCP's public ``tool(name=, title=, description=, annotations=)`` decorator; FastMCP builds the
tool's input schema from the function's signature and docstring, and its output schema from the
function's return annotation, a pydantic model of ``mcpapi.results`` (MCP spec 2025-06-18, "Tools →
Output Schema"). Each tool declares its hints (``annotations=``: one of ``READ_OWN_STORE``,
``READ_VENUE``, ``ORDER``, ``CANCEL`` below; "Tools → Tool annotations") and a ``title``. Transports list and call tools
only through FastMCP's public ``list_tools()`` / ``call_tool()`` (``list_tools_for``,
``call_tool`` here). Annotations, titles, output schemas, resources, prompts and completions are
declared on the same ``SERVER`` with the SDK's decorators; resource reads and prompts run their
data gathering through ``guard()``, the same wrapper without the tool declaration.

The wrapper, per call:

- reads the caller from ``current_identity()`` (a ``risk.authentication.Identity`` the transport
  bound with ``identity_bound``) and exposes ``current_call()`` (a ``CallContext``) to the tool;
- refuses a call the identity's scopes do not allow (``scope=``), or that names a symbol outside
  its symbol restriction, with a message saying what is missing, and audits the refusal;
- turns a ``TradingError`` into an MCP tool error (``isError: true``) whose text an agent can act
  on (``[code] message``), and any other exception into a tool error with a request id;
- records one ``AuditEvent`` per call (``mcp.<tool>``) through the audit write-ahead log
  (``risk.audit``), unless the tool's service audits the action in its own transaction
  (``audit=False``, e.g. ``place_order`` → ``order.place``);
- marks outside text in the result (``risk.trust``: the ``_tradingmcp_security`` block) and in
  tool errors (fenced exchange text + a note);
- answers a tool with an output model with a ``CallToolResult`` whose ``structuredContent`` is the
  result as JSON values and whose one text content block is that same value as JSON text (for
  clients that predate structured output); FastMCP validates ``structuredContent`` against the
  model. Errors carry no ``structuredContent`` (``isError: true``, ``[code] message`` text).

Where a call runs: an ``async def`` tool is awaited on the event loop (its selectors use the
asyncio Redis client); a sync tool runs in a bounded pool of ``MCP_TOOL_THREADS`` worker threads
(``run_sync``), or on one dedicated thread when declared ``serial=True``. Django database
connections are per thread: each pooled call runs between two ``close_old_connections()`` (what
Django does around a request). When the event loop is driven from sync code (``async_to_sync``:
tests, management commands) sync tools run in that calling thread, as Django's own
``sync_to_async`` does, so they see the caller's transaction. Trading calls on one account queue
per process before taking a thread (``_account_queue``).
"""
from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import time
import uuid
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field

from typing import Annotated

from mcp import types
from mcp.server.fastmcp.exceptions import ToolError
from mcp_server.djangomcp import global_mcp_server
from pydantic import BaseModel, ValidationError
from pydantic_core import to_json, to_jsonable_python

from core.context import bind_call
from core.workers import run_sync
from risk import access
from risk.audit import audit_enqueue_async
from risk.authentication import requested_symbols
from risk.models import Channel, Outcome, Scope
from risk.trust import envelope, error_text
from core.errors import PermissionDenied, TradingError

log = logging.getLogger(__name__)

SERVER = global_mcp_server  # the one MCP server object (FastMCP) every tool, resource and prompt is declared on

_identity: contextvars.ContextVar = contextvars.ContextVar("mcp_identity", default=None)
_meta: contextvars.ContextVar = contextvars.ContextVar("mcp_meta", default=None)
_current: contextvars.ContextVar["CallContext"] = contextvars.ContextVar("mcp_call")


@contextmanager
def identity_bound(identity, meta: dict | None = None):
    """Within the block, tools called on this task see ``identity`` (a
    ``risk.authentication.Identity``) as their caller; ``meta``: transport facts
    (``REMOTE_ADDR``, ``MCP_TRANSPORT``)."""
    t1, t2 = _identity.set(identity), _meta.set(meta or {})
    try:
        yield
    finally:
        _identity.reset(t1)
        _meta.reset(t2)


def current_identity():
    """The ``Identity`` bound by the transport for this call, or None."""
    return _identity.get()


@dataclass
class CallContext:
    """The caller of one tool call: ``identity``, its ``user`` and ``token`` (an ``AgentToken``), a
    ``request_id``; a tool sets ``account`` so the audit event is filed under it."""

    identity: object
    user: object
    token: object
    request_id: str
    tool: str = ""
    account: object = None
    meta: dict = field(default_factory=dict)


def current_call() -> CallContext:
    """The ``CallContext`` of the tool call running in this thread/task."""
    return _current.get()


# tool name → the scope a token needs to see and call it (filled by ``mcp_tool``).
TOOL_SCOPES: dict[str, str] = {}
# tool name → its result model (``mcpapi.results``), the source of its outputSchema.
TOOL_MODELS: dict[str, type[BaseModel]] = {}

# Tool hints (MCP spec 2025-06-18, "Tools → Tool annotations"); every tool declares one. Clients
# use them to decide what to confirm with a person; they are hints, never the permission check
# (that is the scope). openWorldHint: the call may reach Binance (a venue request, or a stream the
# ingester opens); false when the answer comes from this server's own store (database, Redis).
READ_OWN_STORE = types.ToolAnnotations(readOnlyHint=True, destructiveHint=False, idempotentHint=True, openWorldHint=False)
READ_VENUE = types.ToolAnnotations(readOnlyHint=True, destructiveHint=False, idempotentHint=True, openWorldHint=True)
# Orders and closes: a repeat with the same arguments places another order unless the call names
# its clientOrderId, and the hint cannot say "if", so idempotentHint is false (docs/adr/0008).
ORDER = types.ToolAnnotations(readOnlyHint=False, destructiveHint=True, idempotentHint=False, openWorldHint=True)
# Cancels: canceling the same order(s) again changes nothing more.
CANCEL = types.ToolAnnotations(readOnlyHint=False, destructiveHint=True, idempotentHint=True, openWorldHint=True)

# MCP list methods answered per caller, as ``tools/list`` is (``resources/list``,
# ``resources/templates/list``, ``prompts/list``): method → ``async fn(identity)`` returning the
# SDK's result model. Filled by ``mcpapi.resources`` and ``mcpapi.prompts``; the transports call
# them with the identity bound.
CALLER_LISTS: dict = {}


def tool_allowed(name: str, identity) -> bool:
    """May ``identity`` (an ``Identity`` or an ``AgentToken``) see and call tool ``name``? Tools
    with no declared scope need ``trade`` (fail closed)."""
    return identity is not None and identity.has_scope(TOOL_SCOPES.get(name, Scope.TRADE))


def scope_missing(name: str, identity) -> str | None:
    """The scope tool ``name`` needs when ``identity`` lacks it (None when it has it or no tool of
    that name is declared): what ``/mcp`` names in its 403 ``insufficient_scope`` step-up."""
    if name not in TOOL_SCOPES or identity is None or tool_allowed(name, identity):
        return None
    return TOOL_SCOPES[name]


def mcp_tool(fn=None, *, scope: str = Scope.TRADE, audit: bool = True, serial: bool = False,
             title: str | None = None, annotations: types.ToolAnnotations | None = None, server=None):
    """Declare ``fn`` (sync or ``async def``) as an MCP tool on ``server`` (default ``SERVER``),
    guarded (see module docstring). Its name is the function's; its description the docstring.

    ``scope``: the ``risk.models.Scope`` an identity needs (default ``trade``, so a tool that
    forgets one is hidden from read-only tokens). ``audit``: file an ``mcp.<tool>`` audit event per
    call (False when the tool's service audits in its own transaction). ``serial``: run this sync
    tool one call at a time per process. ``title``/``annotations``: MCP tool metadata (spec
    2025-06-18, "Tools"), passed to FastMCP (the title also as ``annotations.title``, where
    2025-03-26 clients read it). The function's return annotation, a pydantic model
    (``mcpapi.results``), is the tool's output schema; the function still returns a dict. Returns
    the guarded coroutine function."""

    def decorate(func):
        name = func.__name__
        TOOL_SCOPES[name] = str(scope)
        signature = inspect.signature(func, eval_str=True)
        model = signature.return_annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            model = None
        else:
            TOOL_MODELS[name] = model
        guarded = guard(func, name=name, scope=scope, audit=audit, serial=serial, structured_result=model is not None)
        if model is not None:  # FastMCP: a CallToolResult whose structuredContent the model validates
            guarded.__signature__ = signature.replace(return_annotation=Annotated[types.CallToolResult, model])
        hints = annotations
        if hints is not None and title and hints.title is None:
            hints = hints.model_copy(update={"title": title})
        (server or SERVER).tool(name=name, title=title, description=guarded.__doc__, annotations=hints)(guarded)
        return guarded

    return decorate(fn) if fn is not None else decorate


def structured(result) -> types.CallToolResult:
    """A successful tool result (a dict) as MCP sends it: ``structuredContent`` is the result as
    JSON values (``Decimal`` and other non-JSON values as strings, as in the text), and the one
    text content block is that value as JSON text, so ``json.loads(text) == structuredContent``
    (MCP spec 2025-06-18, "Tools → Structured Content": a tool returning structured content
    should also return it serialized in a text block)."""
    value = to_jsonable_python(result, fallback=str)
    text = to_json(value, indent=2).decode()
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], structuredContent=value, isError=False)


def guard(func, *, name: str, scope: str, audit: bool = True, serial: bool = False, structured_result: bool = False):
    """``func`` (sync or ``async def``) wrapped in the guard (see module docstring) as the
    coroutine function ``guarded(**kwargs)``, without declaring it anywhere: ``mcp_tool`` declares
    the result as a tool; resources and prompts (``mcpapi.resources``, ``mcpapi.prompts``) call
    theirs from their FastMCP handlers. ``name``: what the call is audited (``mcp.<name>``) and
    logged as; ``scope``: the ``risk.models.Scope`` the identity needs; ``audit``/``serial``: as
    ``mcp_tool``'s; ``structured_result``: return the result as a ``CallToolResult`` with
    ``structuredContent`` (``structured``; tools with an output schema). Errors: ``ToolError`` with the refusal's or failure's text."""
    is_async = inspect.iscoroutinefunction(func)
    is_trade = str(scope) == Scope.TRADE

    @functools.wraps(func)
    async def guarded(**kwargs):
        identity = _identity.get()
        user, token = getattr(identity, "user", None), getattr(identity, "token", None)
        ctx = CallContext(identity=identity, user=user, token=token,
                          request_id=bind_call(uuid.uuid4().hex[:16], user=user, token=token, tool_name=name),
                          tool=name, meta=_meta.get() or {})
        t0 = time.perf_counter()
        reset = _current.set(ctx)
        try:
            check_access(identity, scope, kwargs, name)
            if is_async:
                result = await func(**kwargs)
            elif is_trade:
                async with _account_queue(ctx.user, kwargs.get("account_id")):
                    result = await run_sync(func, serial=serial, **kwargs)
            else:
                result = await run_sync(func, serial=serial, **kwargs)
            result = envelope(name, result)
        except Exception as exc:
            error, event = _failure(name, ctx, kwargs, exc, audit, t0)
            if event is not None:
                await _audit_async(*event)
            if error is None:
                raise
            raise error from None
        finally:
            _current.reset(reset)
        if audit:
            await _audit_async(name, ctx, kwargs, Outcome.OK, "", {}, t0)
        return structured(result) if structured_result else result

    guarded.__doc__ = inspect.cleandoc(func.__doc__ or "")
    return guarded


def check_access(identity, scope: str, kwargs: dict, name: str) -> None:
    """The identity's scope and symbol restriction for a call of ``name`` with arguments
    ``kwargs``, through the one access check of every transport (``risk.access.require``: raises
    ``ScopeMissing`` / ``PermissionDenied``). The one check behind tools, resources and prompts."""
    access.require(identity, scope=str(scope), symbols=requested_symbols(kwargs), what=name)


def _failure(name, ctx, params, exc, audit, t0):
    """The tool error to raise for ``exc`` (None: re-raise it as it is) and the audit event to
    file first (``_audit_async``'s arguments, or None)."""
    if isinstance(exc, TradingError):
        event = (name, ctx, params, Outcome.REJECTED, str(exc), exc.as_dict(), t0) \
            if audit or isinstance(exc, PermissionDenied) else None
        return ToolError(error_text(str(exc))), event
    if isinstance(exc, ToolError):
        return None, None
    log.error("tool %s failed (request %s)", name, ctx.request_id, exc_info=exc)
    event = (name, ctx, params, Outcome.ERROR, f"{type(exc).__name__}: {exc}", {}, t0) if audit else None
    return ToolError(f"Internal error in {name} (request id {ctx.request_id}); nothing was changed by this call."), event


async def _audit_async(name, ctx: CallContext, params, outcome, message, result, t0) -> None:
    try:
        await audit_enqueue_async(**_audit_fields(name, ctx, params, outcome, message, result, t0))
    except Exception:  # never hide the tool's answer behind an audit failure; log loudly
        log.exception("audit of mcp.%s failed (request %s)", name, ctx.request_id)


def _audit_fields(name, ctx: CallContext, params, outcome, message, result, t0) -> dict:
    return dict(
        channel=Channel.MCP, action=f"mcp.{name}", outcome=outcome, actor_user=ctx.user, actor_token=ctx.token,
        account=ctx.account, params=params, message=message, result=result,
        latency_ms=(time.perf_counter() - t0) * 1000, request_id=ctx.request_id,
    )


# --- listing and calling, through FastMCP's public API ----------------------------------------------

async def list_tools_for(identity) -> list[types.Tool]:
    """The tools ``identity`` may see and call (``FastMCP.list_tools()`` filtered by scope)."""
    return [t for t in await SERVER.list_tools() if tool_allowed(t.name, identity)]


async def call_tool(name: str, arguments: dict) -> types.CallToolResult:
    """Call tool ``name`` through ``FastMCP.call_tool()`` as the bound identity; the result as the
    SDK's low-level server shapes it (MCP spec 2025-06-18, "Tools → Tool Result"): unstructured
    content, plus ``structuredContent`` when the tool has an output schema; a failure is a result
    with ``isError: true`` and the error's text."""
    try:
        out = await SERVER.call_tool(name, arguments)
    except Exception as exc:  # ToolError (the guard's typed errors, argument validation, unknown tool)
        text = str(exc)
        cause = exc.__cause__
        model = TOOL_MODELS.get(name)
        if isinstance(cause, ValidationError) and model is not None and cause.title == model.__name__:
            # The tool ran (and may have acted) but its answer does not fit its outputSchema: a bug here.
            log.error("tool %s: result does not match its output model %s", name, model.__name__, exc_info=cause)
            text = (f"Internal error in {name}: its answer did not match its output schema. The call itself may have "
                    "taken effect; check with a read tool (get_order, list_orders, get_account) before retrying.")
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)], isError=True)
    if isinstance(out, types.CallToolResult):
        return out
    if isinstance(out, tuple) and len(out) == 2:
        return types.CallToolResult(content=list(out[0]), structuredContent=out[1], isError=False)
    return types.CallToolResult(content=list(out), isError=False)


_account_locks: weakref.WeakValueDictionary = weakref.WeakValueDictionary()  # (loop, user, account) → lock


def _account_queue(user, account_id) -> asyncio.Lock:
    """The per-process queue of one caller's trading calls on one account (``account_id`` as the
    call names it; None = the caller's default account), on this event loop.

    A trading call locks its account's row for its whole transaction, so two calls on the same
    account run one after the other whatever we do. Queued here first, the waiting ones hold no
    worker thread, database connection or GIL time while the first one books. Other processes
    still meet on the row lock itself, which stays the guarantee. The lock is forgotten when no
    call holds or awaits it."""
    key = (id(asyncio.get_running_loop()), getattr(user, "pk", None), account_id if isinstance(account_id, (int, str)) else None)
    lock = _account_locks.get(key)
    if lock is None:
        lock = _account_locks[key] = asyncio.Lock()
    return lock
