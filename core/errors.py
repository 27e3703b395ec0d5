"""Typed errors raised by the services. Every entry point turns them into a clear answer:
an MCP tool error, an HTTP 4xx, or an inline message on a page.

``code`` follows Binance's error codes where one fits (Binance Spot API docs, "Error codes"):
-1100 illegal characters/bad value, -1102 mandatory parameter missing, -1121 invalid symbol,
-1013 filter failure, -2010 new order rejected (e.g. insufficient balance).
"""
from __future__ import annotations


class TradingError(Exception):
    """Base of every error a caller can act on. ``code``: Binance-style int; ``msg``: the text."""

    code = -1000
    http_status = 400

    def __init__(self, msg: str, *, code: int | None = None, details: dict | None = None):
        super().__init__(msg)
        self.msg = msg
        if code is not None:
            self.code = code
        self.details = details or {}

    def as_dict(self) -> dict:
        """``{"code": int, "msg": str, **details}`` for JSON answers."""
        return {"code": self.code, "msg": self.msg, **self.details}

    def __str__(self) -> str:
        return f"[{self.code}] {self.msg}"


class InvalidInput(TradingError):
    """A malformed or out-of-range argument; nothing was changed."""

    code = -1100


class UnknownSymbol(InvalidInput):
    """The symbol is not traded on this venue."""

    code = -1121


class FilterFailure(InvalidInput):
    """The order breaks one of the symbol's exchangeInfo filters (LOT_SIZE, PRICE_FILTER, ...)."""

    code = -1013


class NotFound(TradingError):
    """The object does not exist, or the caller may not see it (we do not tell which)."""

    code = -2013
    http_status = 404


class PermissionDenied(TradingError):
    """The caller is authenticated but may not do this."""

    code = -2015
    http_status = 403


class OrderRejected(TradingError):
    """The order was valid but could not be accepted (e.g. insufficient balance)."""

    code = -2010


class RiskRejected(OrderRejected):
    """A risk limit refused the order. ``details`` names the limit, its value and the order's value."""

    code = -2010


class MarketDataUnavailable(TradingError):
    """No fresh quote for the symbol, so a paper MARKET order cannot be priced."""

    code = -1003
    http_status = 503


class MarketDataMissing(MarketDataUnavailable):
    """The venue has no data of that kind at all (e.g. no closed candles of an interval), as
    opposed to data not fresh yet: there is nothing to wait for, so over HTTP it is a 404."""

    http_status = 404
