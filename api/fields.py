"""Serializer fields that carry their own OpenAPI schema: type, unit (in the description) and an
example, so every field of ``/api/schema/`` has all three (``api.schema`` maps them).

Money and quantities are strings of ASCII digits with an optional fraction ("0.002"): Python's
``Decimal`` would also take "١٢" (Arabic-Indic digits), exponents and "NaN", and a JSON number or
boolean is refused rather than converted (a float could already have lost digits on its way).
"""
from __future__ import annotations

import re

from django.core.validators import RegexValidator
from rest_framework import serializers

DECIMAL_PATTERN = r"^[0-9]+(\.[0-9]+)?$"
SIGNED_DECIMAL_PATTERN = r"^-?[0-9]+(\.[0-9]+)?$"
DECIMAL_MAX_LENGTH = 40
_DECIMAL_RE = re.compile(DECIMAL_PATTERN, re.ASCII)
SYMBOL_PATTERN = r"^[A-Za-z0-9]{1,32}$"
CLIENT_ORDER_ID_PATTERN = r"^[.A-Za-z0-9_:/-]{1,36}$"


NO_EXAMPLE = object()  # ``example=None`` documents null as the example


class Documented:
    """Mixin: ``example`` (required) is this field's OpenAPI example; ``openapi()`` its schema
    (without description/nullable/readOnly, which drf-spectacular adds from the field)."""

    schema: dict = {}

    def __init__(self, *args, example=NO_EXAMPLE, **kwargs):
        self.example = example
        super().__init__(*args, **kwargs)

    def openapi(self) -> dict:
        schema = dict(self.schema)
        if self.example is not NO_EXAMPLE:
            schema["examples"] = [self.example]
        return schema


class DecimalString(Documented, serializers.Field):
    """A non-negative decimal as a string of ASCII digits, e.g. "0.002" (price: quote asset;
    quantity: base asset). Input: a JSON string only (a number or boolean is refused)."""

    default_error_messages = {
        "invalid": 'Expected a decimal number as a string of ASCII digits such as "0.002".',
        "max_length": f"At most {DECIMAL_MAX_LENGTH} characters.",
    }

    def __init__(self, *args, signed: bool = False, **kwargs):
        self.signed = signed  # output only: P&L can be negative; input amounts never are
        super().__init__(*args, **kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, str) or not _DECIMAL_RE.match(data):
            self.fail("invalid")
        if len(data) > DECIMAL_MAX_LENGTH:
            self.fail("max_length")
        return data

    def openapi(self) -> dict:
        schema = {"type": "string", "pattern": SIGNED_DECIMAL_PATTERN if self.signed else DECIMAL_PATTERN,
                  "maxLength": DECIMAL_MAX_LENGTH}
        if self.example is not NO_EXAMPLE:
            schema["examples"] = [self.example]
        return schema

    def to_representation(self, value):
        return None if value is None else str(value)


class Text(Documented, serializers.CharField):
    """A string; ``pattern`` / ``enum`` narrow it in the schema and on input."""

    def __init__(self, *args, pattern: str | None = None, enum: list[str] | None = None, **kwargs):
        self.pattern, self.enum = pattern, enum
        super().__init__(*args, **kwargs)
        if pattern:
            self.validators.append(RegexValidator(re.compile(pattern, re.ASCII),
                                                               message=f"Must match {pattern}."))

    def to_internal_value(self, data):
        if not isinstance(data, str):  # CharField would turn 1 or true into "1"/"True"
            self.fail("invalid")
        value = super().to_internal_value(data)
        if self.enum and value not in self.enum:
            raise serializers.ValidationError(f"Must be one of {', '.join(self.enum)}.")
        return value

    def openapi(self) -> dict:
        schema = {"type": "string", **({"pattern": self.pattern} if self.pattern else {}),
                  **({"enum": list(self.enum)} if self.enum else {})}
        if self.max_length is not None and not self.enum:
            schema["maxLength"] = self.max_length
        if self.example is not NO_EXAMPLE:
            schema["examples"] = [self.example]
        return schema


class Integer(Documented, serializers.IntegerField):
    """A 64-bit integer (ids, counts, ms since the epoch UTC). Input: a JSON integer (not a boolean)."""

    def to_internal_value(self, data):
        if isinstance(data, bool):
            self.fail("invalid")
        return super().to_internal_value(data)

    def openapi(self) -> dict:
        schema = {"type": "integer", "format": "int64"}
        if self.min_value is not None:
            schema["minimum"] = self.min_value
        if self.max_value is not None:
            schema["maximum"] = self.max_value
        if self.example is not NO_EXAMPLE:
            schema["examples"] = [self.example]
        return schema


class Number(Documented, serializers.FloatField):
    """A JSON number (percentages of a limit's use, latencies)."""

    def openapi(self) -> dict:
        return {"type": "number", **({"examples": [self.example]} if self.example is not None else {})}


class Boolean(Documented, serializers.BooleanField):
    """A JSON boolean."""

    schema = {"type": "boolean"}


class AnyObject(Documented, serializers.JSONField):
    """A free-form JSON object (audit params/results, indicator values, exchange filters)."""

    schema = {"type": "object", "additionalProperties": True}
