"""Pieces every part of the replay exchange shares: JSON text (:func:`dumps`), JSON answers
(:func:`json_response`, :func:`read_json_body`) and Binance-style parameter validation
(:class:`Params`). Imports nothing else of the package but ``errors``, so ``server`` and
``account`` both build on it.
"""
from __future__ import annotations

import json
import re
from typing import Callable, Iterable

from aiohttp import web
from multidict import MultiDict

from .errors import (
    DUPLICATE_PARAM,
    DUPLICATE_SYMBOLS,
    INVALID_SYMBOL,
    NUMBER_RANGE,
    SYMBOL_RANGE,
    SYMBOLS_RANGE,
    err,
    illegal_chars,
    invalid_param,
    mandatory_missing,
    param_empty,
    unread_params,
)

JSON_CT = "application/json;charset=UTF-8"
_SYMBOL_RE = re.compile(SYMBOL_RANGE)
_SYMBOLS_RE = re.compile(SYMBOLS_RANGE)
_NUMBER_RE = re.compile(NUMBER_RANGE)
_TZ_RE = re.compile(r"^([+-])?(\d{1,2})(?::(\d{2}))?$")

try:  # orjson is in requirements.txt; fall back to the stdlib
    import orjson

    def dumps(obj) -> str:
        """Compact JSON text (as Binance sends it)."""
        return orjson.dumps(obj).decode()

except ImportError:  # pragma: no cover

    def dumps(obj) -> str:
        """Compact JSON text (as Binance sends it)."""
        return json.dumps(obj, separators=(",", ":"))




# ------------------------------------------------------------------------------------------------
# request parameters
# ------------------------------------------------------------------------------------------------
class Params:
    """Binance-style query-string validation for one request.

    ``allowed``: the endpoint's parameter names. Raises :class:`BinanceError`: -1101 on a repeated
    parameter, -1102/-1105 on empty values, -1100 on malformed numbers/symbols, and (from
    :meth:`done`) -1104 when an unknown parameter was sent.
    """

    def __init__(self, request: web.Request, allowed: Iterable[str]):
        self._init(request.query, allowed)

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, str]], allowed: Iterable[str]) -> "Params":
        """Validation of ``[(name, value), ...]`` (a signed request's query string + body, a
        WebSocket API request's ``params``) instead of an aiohttp request's query."""
        self = cls.__new__(cls)
        self._init(MultiDict(pairs), allowed)
        return self

    def _init(self, q, allowed: Iterable[str]) -> None:
        keys = list(q.keys())
        if len(keys) != len(set(keys)):
            raise err(DUPLICATE_PARAM)
        self.q = {k: q[k] for k in keys}
        self.allowed = set(allowed)

    def has(self, name: str) -> bool:
        """True if ``name`` was sent (even empty)."""
        return name in self.q

    def str(self, name: str, required: bool = False) -> str | None:
        """The raw value; ``None`` when absent (and not required)."""
        v = self.q.get(name)
        if v is None or v == "":
            if required:
                raise mandatory_missing(name)
            if v == "":
                raise param_empty(name)
            return None
        return v

    def int(self, name: str, default: int | None = None, required: bool = False) -> int | None:
        """A non-negative integer (Binance LONG/INT); -1100 when not ``^[0-9]{1,20}$``."""
        v = self.str(name, required)
        if v is None:
            return default
        if not _NUMBER_RE.match(v):
            raise illegal_chars(name, NUMBER_RANGE)
        return int(v)

    def symbol(self, model_has: Callable[[str], bool], name: str = "symbol", required: bool = True) -> str | None:
        """A symbol: -1102 if missing, -1100 if not ``^[A-Z0-9-_.]{1,20}$``, -1121 if not served."""
        v = self.str(name, required)
        if v is None:
            return None
        if not _SYMBOL_RE.match(v):
            raise illegal_chars(name, SYMBOL_RANGE)
        if not model_has(v):
            raise err(INVALID_SYMBOL)
        return v

    def symbols(self, model_has: Callable[[str], bool]) -> list[str] | None:
        """The ``symbols`` JSON array (``["BTCUSDT","ETHUSDT"]``; blanks tolerated)."""
        v = self.str("symbols")
        if v is None:
            return None
        compact = re.sub(r"\s+", "", v)
        if not _SYMBOLS_RE.match(compact):
            raise illegal_chars("symbols", SYMBOLS_RANGE)
        names = json.loads(compact)
        if len(names) != len(set(names)):
            raise err(DUPLICATE_SYMBOLS)
        for s in names:
            if not model_has(s):
                raise err(INVALID_SYMBOL)
        return names

    def limit(self, default: int, maximum: int) -> int:
        """``limit``: default when absent, -1130 below 1, clamped to ``maximum``."""
        n = self.int("limit", default)
        if n < 1:
            raise invalid_param("limit")
        return min(n, maximum)

    def tz_ms(self) -> int:
        """``timeZone`` (klines): ``[+-]H[H][:MM]`` within [-12:00, +14:00] -> offset in ms."""
        v = self.str("timeZone")
        if v is None:
            return 0
        m = _TZ_RE.match(v)
        if not m:
            raise invalid_param("timeZone")
        minutes = int(m[2]) * 60 + int(m[3] or 0)
        if m[3] is not None and int(m[3]) >= 60:
            raise invalid_param("timeZone")
        if m[1] == "-":
            minutes = -minutes
        if not -12 * 60 <= minutes <= 14 * 60:
            raise invalid_param("timeZone")
        return minutes * 60_000

    def done(self) -> None:
        """-1104 if a parameter the endpoint does not read was sent."""
        unknown = [k for k in self.q if k not in self.allowed]
        if unknown:
            raise unread_params(len(self.q) - len(unknown), len(self.q))


def json_response(body, status: int = 200, headers: dict | None = None) -> web.Response:
    """An aiohttp answer with ``body`` as compact JSON and Binance's ``Content-Type``."""
    return web.Response(body=dumps(body).encode(), status=status, headers={"Content-Type": JSON_CT, **(headers or {})})


async def read_json_body(request: web.Request) -> dict:
    """The JSON object of a control-API request body (``{}`` when there is none); HTTP 400 when the
    body is not a JSON object."""
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text=dumps({"error": "body must be JSON"}), content_type="application/json")
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text=dumps({"error": "body must be a JSON object"}), content_type="application/json")
    return body


class Reply:
    """A handler's answer with extra HTTP headers (e.g. ``X-MBX-ORDER-COUNT-10S`` on orders)."""

    __slots__ = ("body", "headers")

    def __init__(self, body, headers: dict[str, str]):
        self.body, self.headers = body, headers
