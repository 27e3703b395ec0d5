"""Binance spot REST error payloads used by the replay exchange.

Texts are Binance's, from "Error codes for Binance" (``binance-spot-api-docs/errors.md``, 2025)
and as observed from the live API (the ``legal range`` regexes of -1100 and the -1128 text for
``symbol`` + ``symbols``). Every error is ``{"code": <int>, "msg": <str>}``; 4xx request errors are
HTTP 400, rate limiting 429 (418 once banned), server trouble 5xx.
"""
from __future__ import annotations

SYMBOL_RANGE = "^[A-Z0-9-_.]{1,20}$"
SYMBOLS_RANGE = '^\\[("[A-Z0-9-_.]{1,20}"(,"[A-Z0-9-_.]{1,20}"){0,}){0,1}\\]$'
NUMBER_RANGE = "^[0-9]{1,20}$"


class BinanceError(Exception):
    """An error answer: HTTP ``status`` with body ``{"code": code, "msg": msg}``.

    ``headers``: extra response headers (e.g. ``Retry-After``).
    """

    def __init__(self, code: int, msg: str, status: int = 400, headers: dict | None = None):
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg
        self.status = status
        self.headers = headers or {}

    def body(self) -> dict:
        """The JSON body Binance sends."""
        return {"code": self.code, "msg": self.msg}


def illegal_chars(param: str, legal_range: str) -> BinanceError:
    """-1100 ILLEGAL_CHARS for ``param``."""
    return BinanceError(-1100, f"Illegal characters found in parameter '{param}'; legal range is '{legal_range}'.")


def mandatory_missing(param: str) -> BinanceError:
    """-1102 MANDATORY_PARAM_EMPTY_OR_MALFORMED for ``param``."""
    return BinanceError(-1102, f"Mandatory parameter '{param}' was not sent, was empty/null, or malformed.")


def param_empty(param: str) -> BinanceError:
    """-1105 PARAM_EMPTY for an optional ``param`` sent without a value."""
    return BinanceError(-1105, f"Parameter '{param}' was empty.")


def invalid_param(param: str) -> BinanceError:
    """-1130 INVALID_PARAMETER for ``param``."""
    return BinanceError(-1130, f"Data sent for parameter '{param}' is not valid.")


def unread_params(read: int, sent: int) -> BinanceError:
    """-1104 UNREAD_PARAMETERS (an unknown parameter was sent)."""
    return BinanceError(-1104, f"Not all sent parameters were read; read '{read}' parameter(s) but was sent '{sent}'.")


DUPLICATE_PARAM = (-1101, "Duplicate values for a parameter detected.")
BAD_COMBO = (-1128, "Combination of optional parameters invalid.")
SYMBOL_AND_SYMBOLS = (
    -1128,
    "Combination of optional parameters invalid. Recommendation: 'symbol' and 'symbols' cannot both be sent.",
)
INVALID_INTERVAL = (-1120, "Invalid interval.")
INVALID_SYMBOL = (-1121, "Invalid symbol.")
INVALID_TICKER_TYPE = (-1139, "Invalid ticker type.")
DUPLICATE_SYMBOLS = (-1151, "Symbol is present multiple times in the list.")
UNKNOWN = (-1000, "An unknown error occurred while processing the request.")
DISCONNECTED = (-1001, "Internal error; unable to process your request. Please try again.")
SERVER_BUSY = (-1008, "Server is currently overloaded with other requests. Please try again in a few minutes.")


def err(pair: tuple[int, str], status: int = 400) -> BinanceError:
    """Build a :class:`BinanceError` from a ``(code, msg)`` constant."""
    return BinanceError(pair[0], pair[1], status)


def too_much_weight(limit: int, retry_after_s: int) -> BinanceError:
    """HTTP 429, -1003: the per-minute request weight limit is exceeded."""
    return BinanceError(
        -1003,
        f"Too much request weight used; current limit is {limit} request weight per 1 MINUTE. "
        "Please use WebSocket Streams for live updates to avoid polling the API.",
        status=429,
        headers={"Retry-After": str(retry_after_s)},
    )


def ip_banned(until_ms: int, retry_after_s: int) -> BinanceError:
    """HTTP 418, -1003: the IP is auto-banned until ``until_ms``."""
    return BinanceError(
        -1003,
        f"Way too much request weight used; IP banned until {until_ms}. "
        "Please use WebSocket Streams for live updates to avoid bans.",
        status=418,
        headers={"Retry-After": str(retry_after_s)},
    )
