"""Money arguments from outside (MCP tools, the REST API): quantities, quote amounts and prices
arrive as a decimal string (``"0.002"``) or a JSON number, and are checked here *before* any
coercion, the same way on every transport.

Accepted: ASCII digits with an optional fractional part (``[0-9]+(\\.[0-9]+)?``), as a string, an
integer or a finite float (written out in positional notation). Refused, with a message saying
what is expected: booleans (JSON ``true`` is not 1), lists, objects, signs, exponents
(``"1e3"``), ``NaN``/``Infinity``, and digits of other scripts (``'٠.٠٠٢'``, which Python's
``Decimal`` would read as 0.002). Binance's API documents its decimal fields as strings matching
``^([0-9]{1,20})(\\.[0-9]{1,20})?$`` (REST API, "General API Information → Data Types").
"""
from __future__ import annotations

import math
import re
from decimal import Decimal

MONEY_TEXT = re.compile(r"\A[0-9]{1,20}(\.[0-9]{1,20})?\Z", re.ASCII)
EXPECTED = 'a decimal number: a string of ASCII digits such as "0.002", or a JSON number'


def money_input(value, *, field: str = "value") -> str | None:
    """The decimal text of a money argument (None stays None), or ``ValueError`` naming ``field``
    and what is expected. Never coerces a boolean, container or non-ASCII digit."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{field} must be {EXPECTED}, not a boolean.")
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{field} must be {EXPECTED}, not NaN or Infinity.")
        text = format(Decimal(repr(value)), "f")
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise ValueError(f"{field} must be {EXPECTED}, not {type(value).__name__}.")
    if not MONEY_TEXT.match(text):
        shown = text if len(text) <= 40 else text[:40] + "…"
        raise ValueError(f"{field} must be {EXPECTED} (no sign, exponent, NaN or Infinity); got {shown!r}.")
    return text
