"""JSON for Klaviyo bodies: orjson with Decimal support and a hard refusal of NaN/inf."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import orjson

_OPTIONS = orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z


class NotSerializableError(ValueError):
    """A value Klaviyo cannot accept (NaN, infinity, or an unknown type)."""


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise NotSerializableError(f"{value} is not a finite number")
        # Integral decimals stay integers so "3" is not sent as 3.0.
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise NotSerializableError(f"cannot serialize {type(value).__name__}")


def check_finite(value: Any) -> None:
    """Raise NotSerializableError when a float anywhere in ``value`` is NaN or infinite.

    orjson silently turns NaN into null; Klaviyo would store a wrong value, so we refuse it.
    """
    if isinstance(value, float):
        if not math.isfinite(value):
            raise NotSerializableError(f"{value} is not a finite number")
    elif isinstance(value, dict):
        for item in value.values():
            check_finite(item)
    elif isinstance(value, list | tuple):
        for item in value:
            check_finite(item)


def dumps(value: Any) -> bytes:
    """Serialize a payload to compact UTF-8 JSON (datetimes as ISO 8601 with offset)."""
    return orjson.dumps(value, default=_default, option=_OPTIONS)


def dumps_kept(value: Any) -> bytes:
    """``dumps`` for bytes that stay in memory (batch items): a right-sized copy, since orjson 3.12+
    leaves every result in a buffer of at least 4 KB (a 400-byte item would cost ten times that)."""
    return bytes(memoryview(dumps(value)))


def loads(data: bytes | str) -> Any:
    """Parse JSON bytes or text."""
    return orjson.loads(data)
