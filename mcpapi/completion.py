"""``completion/complete`` (MCP spec 2025-06-18, "Server Features → Utilities → Completion") for the
arguments of our prompts (``mcpapi.prompts``) and the variables of our resource templates
(``mcpapi.resources``), registered with FastMCP's public ``completion()`` decorator.

What each argument completes to, by its name, from what the caller typed (``argument.value``):

- ``symbol``: the stored exchangeInfo symbols starting with it, case-insensitive (``BTC`` →
  ``BTCUSDC``, ``BTCUSDT`` ...), within the token's symbol restriction;
- ``interval``: the Binance kline intervals starting with it (``1`` → ``1m``, ``1h``, ``1d`` ...);
- ``indicators``: a comma-separated list whose last item is completed to the names
  ``marketdata.indicators`` computes (``rsi,m`` → ``rsi,macd``);
- ``account_id``: the ids of the accounts the caller may read (``trading.selectors.accounts_for_user``,
  with the token's account restriction) starting with it;
- ``side``: ``BUY``, ``SELL``.

At most 100 values, with ``total`` (all matches) and ``hasMore``. A reference we do not serve
(an unknown prompt or template, an argument it does not have), or one the token's scopes do not
allow, answers an empty ``values`` list, never an error.
"""
from __future__ import annotations

import re

from mcp import types

from marketdata import selectors as md
from marketdata.indicators import INDICATORS
from mcpapi import prompts, resources
from mcpapi.guard import SERVER, current_identity
from core.workers import run_sync

MAX_VALUES = 100
SIDES = ("BUY", "SELL")


def _prefixed(candidates, typed: str, *, fold: bool = False) -> tuple[list[str], int]:
    typed = typed.upper() if fold else typed
    hits = [c for c in candidates if (c.upper() if fold else c).startswith(typed)]
    return hits[:MAX_VALUES], len(hits)


async def _arguments_of(ref, identity) -> set[str]:
    """The argument names of ``ref`` the caller may complete (empty: unknown or not allowed)."""
    if isinstance(ref, types.PromptReference):
        if not prompts.prompt_allowed(ref.name, identity):
            return set()
        return {a.name for p in await SERVER.list_prompts() if p.name == ref.name for a in (p.arguments or [])}
    if isinstance(ref, types.ResourceTemplateReference):
        if not resources.allowed(ref.uri, identity):
            return set()
        return set(re.findall(r"{(\w+)}", ref.uri))
    return set()


async def values_for(name: str, typed: str, identity) -> tuple[list[str], int]:
    """Completions of argument ``name`` from ``typed`` for ``identity``: ``(values, total)``."""
    if name == "symbol":
        return await run_sync(md.symbol_names_matching, typed, only=identity.symbols, limit=MAX_VALUES)
    if name == "interval":
        return _prefixed(md.KLINE_INTERVALS, typed)
    if name == "indicators":
        head, _, last = typed.rpartition(",")
        done = {n.strip().lower() for n in head.split(",") if n.strip()}
        prefix = f"{head}," if head else ""
        return _prefixed([prefix + n for n in INDICATORS if n not in done], prefix + last.strip().lower())
    if name == "account_id":
        ids = [str(pk) for pk in await run_sync(resources.readable_account_ids, identity)]
        return _prefixed(ids, typed.strip())
    if name == "side":
        return _prefixed(SIDES, typed.strip(), fold=True)
    return [], 0


@SERVER.completion()
async def complete(ref, argument: types.CompletionArgument, context) -> types.Completion:
    """The completion handler (see module docstring)."""
    identity = current_identity()
    if identity is None or argument.name not in await _arguments_of(ref, identity):
        return types.Completion(values=[], total=0, hasMore=False)
    values, total = await values_for(argument.name, argument.value or "", identity)
    return types.Completion(values=values, total=total, hasMore=total > len(values))
