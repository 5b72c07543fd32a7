"""Value transforms for mapping rules: each takes a raw cell and returns a clean value or raises RuleError."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from decimal import Decimal
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from dateutil import parser as dateutil_parser

from sync.issues import RuleError

Number = int | float
TransformError = RuleError  # what a failing transform raises: ``.rule`` code and ``.message`` text

# ---------------------------------------------------------------- strings


_INVISIBLE = "\u200b\ufeff\u2060"


def trim(value: Any) -> str:
    """Strip surrounding whitespace, non-breaking and zero-width spaces."""
    text = str(value).strip()
    if text and (text[0] in _INVISIBLE or text[-1] in _INVISIBLE):
        text = text.strip(_INVISIBLE + " \t\r\n\u00a0")
    return text


_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")


def email(value: Any) -> str:
    """Trim and lower-case an email address; refuse text that is not an address."""
    text = trim(value).lower()
    if text.startswith("mailto:"):
        text = text[7:]
    if not _EMAIL.fullmatch(text) or ".." in text:
        raise RuleError("invalid_email", f"{_show(value)} is not an email address")
    return text


def split(value: Any, separator: str = ",") -> list[str]:
    """Split text into a list of trimmed, non-empty parts (a list passes through)."""
    if isinstance(value, list | tuple):
        return [trim(part) for part in value if part is not None and trim(part)]
    parts = str(value).split(separator) if separator else [str(value)]
    return [part.strip() for part in parts if part.strip()]


# ---------------------------------------------------------------- numbers

_SIMPLE_INT = re.compile(r"[-+]?\d{1,18}")
_US_GROUPED = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")  # "1,299.00", as US exports write money
_CURRENCY_CODE = re.compile(r"^[A-Z]{3}\s*|\s*[A-Z]{3}$")
_CURRENCY_SYMBOLS = str.maketrans("", "", "$€£¥₹₩₽¢₺₫₱₪ \u00a0\u202f\u2009'’_")
_NUMERIC_BODY = re.compile(r"\d[\d.,]*(?:[eE][+-]?\d+)?|[.,]\d+")


def to_number(value: Any, decimal: str = "auto") -> Number:
    """Cast to int or float: "1,234.50", "1.234,50", "$1,234.50", "(12)" and "12-" work; NaN/inf do not.

    ``decimal`` is "auto", "." or ",". In auto mode a lone comma followed by exactly three digits
    ("1,234") is read as a thousands separator, as US exports write it.
    """
    if type(value) is not str:
        return _number_from_object(value)
    text = value.strip()
    # Fast path: most cells are plain integers ("3") or decimals ("9.99"); float() parses in C.
    if text.isascii() and text.isdigit():
        return int(text)
    if decimal != "," and "," in text and _US_GROUPED.fullmatch(text):
        return _plain_number(text.replace(",", ""))
    if decimal != "," and text and text[-1].isdigit() and "_" not in text:
        try:
            number = float(text)
        except ValueError:
            pass
        else:
            if not math.isfinite(number):
                raise RuleError("not_finite", f"{_show(value)} is too large to be a number")
            if number.is_integer() and _SIMPLE_INT.fullmatch(text):
                return int(text)
            return number
    return _parse_messy_number(text, value, decimal)


def _plain_number(text: str) -> Number:
    return float(text) if "." in text else int(text)


def _number_from_object(value: Any) -> Number:
    """Numbers that arrive typed (JSON sources, constants) rather than as text."""
    if isinstance(value, bool):
        raise RuleError("not_a_number", f"{value} is a boolean, not a number")
    if isinstance(value, int):
        return value
    if isinstance(value, float | Decimal):
        number = float(value)
        if not math.isfinite(number):
            raise RuleError("not_finite", f"{value} is not a finite number")
        return int(value) if isinstance(value, Decimal) and value == value.to_integral_value() else number
    return to_number(str(value))


def _parse_messy_number(text: str, original: Any, decimal: str) -> Number:
    if text.lower().lstrip("+-") in {"nan", "inf", "infinity"}:
        raise RuleError("not_finite", f"{_show(original)} is not a finite number")
    negative = False
    if text.startswith("(") and text.endswith(")"):
        negative, text = True, text[1:-1].strip()
    if text.endswith("-"):
        negative, text = True, text[:-1].strip()
    text = _CURRENCY_CODE.sub("", text).translate(_CURRENCY_SYMBOLS)
    if text.startswith(("-", "+")):
        negative = negative or text[0] == "-"
        text = text[1:].translate(_CURRENCY_SYMBOLS)
    if not _NUMERIC_BODY.fullmatch(text):
        raise RuleError("not_a_number", f"{_show(original)} is not a number")
    text = _normalise_separators(text, decimal)
    try:
        number: Number = float(text) if ("." in text or "e" in text.lower()) else int(text)
    except ValueError:
        raise RuleError("not_a_number", f"{_show(original)} is not a number") from None
    if isinstance(number, float) and not math.isfinite(number):
        raise RuleError("not_finite", f"{_show(original)} is too large to be a number")
    return -number if negative else number


def _normalise_separators(text: str, decimal: str) -> str:
    """Return text with no grouping separators and "." as the decimal point."""
    mantissa, exponent = text, ""
    for marker in ("e", "E"):
        if marker in text:
            mantissa, _, rest = text.partition(marker)
            exponent = "e" + rest
    has_dot, has_comma = "." in mantissa, "," in mantissa
    if decimal == ".":
        sep = "."
    elif decimal == ",":
        sep = ","
    elif has_dot and has_comma:
        sep = "." if mantissa.rfind(".") > mantissa.rfind(",") else ","
    elif has_comma:
        head, _, tail = mantissa.rpartition(",")
        # "1,234" and "12,345,678" group thousands; "12,5" and "0,75" are decimal commas.
        grouped = mantissa.count(",") > 1 or (len(tail) == 3 and head != "0" and head != "")
        sep = "." if grouped else ","
    elif mantissa.count(".") > 1:
        sep = ","  # "1.234.567": dots can only be grouping
    else:
        sep = "."
    group = "," if sep == "." else "."
    if mantissa.count(sep) > 1:
        raise RuleError("not_a_number", f"{text!r} has more than one decimal separator")
    return mantissa.replace(group, "").replace(sep, ".") + exponent


def to_integer(value: Any, decimal: str = "auto") -> int:
    """Cast to an integer; refuse fractions such as 2.5 (2.0 is fine)."""
    if type(value) is str and value.isascii() and value.isdigit():
        return int(value)
    number = to_number(value, decimal)
    if isinstance(number, float):
        if not number.is_integer():
            raise RuleError("not_an_integer", f"{_show(value)} is not a whole number")
        return int(number)
    return number


_TRUE = frozenset({"true", "t", "yes", "y", "1", "on", "x", "subscribed", "checked"})
_FALSE = frozenset({"false", "f", "no", "n", "0", "off", "unsubscribed", "unchecked", "-"})


def to_boolean(value: Any) -> bool:
    """Read yes/no, true/false, 1/0, on/off (any case) as a boolean."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    text = trim(value).lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise RuleError("not_a_boolean", f"{_show(value)} is not yes/no, true/false or 1/0")


# ---------------------------------------------------------------- phones


def to_e164(value: Any, region: str = "US") -> str:
    """Normalise a phone number to E.164 using ``region`` for numbers written without a country code."""
    text = trim(value)
    if text.startswith("00"):
        text = "+" + text[2:]  # international dialling prefix used across Europe
    try:
        number = phonenumbers.parse(text, region.upper() if region else None)
    except phonenumbers.NumberParseException:
        raise RuleError("invalid_phone", f"{_show(value)} is not a phone number") from None
    if not phonenumbers.is_valid_number(number):
        where = f" for region {region}" if not text.startswith("+") else ""
        raise RuleError("invalid_phone", f"{_show(value)} is not a valid phone number{where}")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


# ---------------------------------------------------------------- dates

_EXCEL_EPOCH = datetime(1899, 12, 30)  # Excel's day 0 once its 1900 leap-year bug is accounted for
_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NUMERIC = re.compile(r"\d+(?:\.\d+)?")
_HAS_TIME = re.compile(r"\d:\d\d|\d\s*[ap]\.?m\b", re.IGNORECASE)
_SEPARATED = re.compile(
    r"(\d{1,4})([/.\-])(\d{1,2})\2(\d{1,4})"
    r"(?:[ T,]+(\d{1,2}):(\d{2})(?::(\d{2})(?:[.,]\d+)?)?\s*([AaPp])?\.?[Mm]?\.?)?"
    r"\s*(Z|UTC|GMT|[+-]\d{2}:?\d{2})?"
)
_TIME_DIRECTIVES = ("%H", "%I", "%M", "%S", "%c", "%X", "%T", "%R")


@lru_cache(maxsize=64)
def zone(name: str) -> tzinfo:
    """A time zone by IANA name ("UTC", "America/New_York"); RuleError if unknown."""
    if name.upper() in ("UTC", "Z", "GMT"):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise RuleError("invalid_timezone", f"{name!r} is not a known time zone") from None


def parse_datetime(
    value: Any,
    fmt: str | None = None,
    tz: str = "UTC",
    *,
    dayfirst: bool = False,
    date_only_hour: int = 0,
) -> tuple[str, bool]:
    """Parse a date or date-time into ISO 8601 UTC; returns (text, had_time_of_day).

    ``fmt`` is a strptime format or one of "unix", "unix_ms", "excel"; None detects ISO 8601, US/EU
    layouts, Unix seconds/milliseconds and Excel serial days. Values without an offset are read in
    ``tz``; date-only values get ``date_only_hour`` o'clock in ``tz``.
    """
    local = zone(tz)
    moment, had_time = _parse_moment(value, fmt, dayfirst)
    if not had_time:
        moment = moment.replace(hour=date_only_hour, minute=0, second=0, microsecond=0)
    # Subtracting the offset from the wall-clock time is astimezone(UTC) without building aware objects.
    if moment.tzinfo is None:
        offset = local.utcoffset(moment)
    else:
        offset = moment.utcoffset()
        moment = moment.replace(tzinfo=None)
    try:
        utc = moment - offset if offset else moment
    except OverflowError:
        raise RuleError("invalid_date", f"{_show(value)} is outside the supported date range") from None
    if utc.microsecond:
        utc = utc.replace(microsecond=0)
    return utc.isoformat() + "+00:00", had_time


def _parse_moment(value: Any, fmt: str | None, dayfirst: bool) -> tuple[datetime, bool]:
    if isinstance(value, datetime):
        return value, True
    if isinstance(value, bool):
        raise RuleError("invalid_date", f"{value} is not a date")
    if isinstance(value, int | float):
        return _from_number(float(value), value, fmt)
    text = trim(value)
    if fmt:
        return _parse_with_format(text, fmt)
    if len(text) >= 10 and text[4] == "-":
        try:
            return datetime.fromisoformat(text), len(text) > 10  # ISO 8601, the common case, parsed in C
        except ValueError:
            pass
    if _NUMERIC.fullmatch(text):
        return _from_number(float(text), value, None)
    match = _SEPARATED.fullmatch(text)
    if match:
        return _from_separated(match, text, dayfirst)
    return _parse_loose(text, dayfirst)


def _from_number(number: float, original: Any, fmt: str | None) -> tuple[datetime, bool]:
    """Read a number as Unix seconds, Unix milliseconds, Excel serial days or YYYYMMDD."""
    if not math.isfinite(number) or number < 0:
        raise RuleError("invalid_date", f"{_show(original)} is not a date")
    try:
        if fmt == "excel" or (fmt is None and 1 <= number < 2958466 and number < 100000):
            # Excel serial: whole days since 1899-12-30, fraction = time of day (wall clock, no zone).
            moment = _EXCEL_EPOCH + timedelta(days=number)
            moment = moment.replace(microsecond=0) + timedelta(seconds=round(moment.microsecond / 1e6))
            return moment, number != int(number)
        if fmt == "unix_ms" or (fmt is None and number >= 1e11):
            return _UNIX_EPOCH + timedelta(milliseconds=number), True
        if fmt is None and 19000101 <= number <= 21001231 and number == int(number):
            return datetime.strptime(str(int(number)), "%Y%m%d"), False
        if fmt in (None, "unix"):
            return _UNIX_EPOCH + timedelta(seconds=number), True
    except (OverflowError, ValueError):
        pass
    raise RuleError("invalid_date", f"{_show(original)} is not a date")


def _parse_with_format(text: str, fmt: str) -> tuple[datetime, bool]:
    if fmt in ("unix", "unix_ms", "excel"):
        try:
            return _from_number(float(text), text, fmt)
        except ValueError:
            raise RuleError("invalid_date", f"{_show(text)} is not a {fmt} timestamp") from None
    try:
        moment = datetime.strptime(text, fmt)
    except ValueError:
        raise RuleError("invalid_date", f"{_show(text)} does not match the date format {fmt!r}") from None
    return moment, any(directive in fmt for directive in _TIME_DIRECTIVES)


def _from_separated(match: re.Match[str], text: str, dayfirst: bool) -> tuple[datetime, bool]:
    first, sep, second, third, hour, minute, sec, ampm, offset = match.groups()
    a, b, c = int(first), int(second), int(third)
    if len(first) == 4:
        year, month, day = a, b, c
    else:
        year = c + (2000 if c < 70 else 1900) if len(third) <= 2 else c
        if a > 12:
            day, month = a, b
        elif b > 12:
            month, day = a, b
        elif dayfirst or sep == ".":
            day, month = a, b  # dotted dates (15.01.2024) are a European layout
        else:
            month, day = a, b
    h = int(hour) if hour else 0
    if ampm:
        if h > 12 or h == 0:
            raise RuleError("invalid_date", f"{_show(text)} has an hour that does not fit AM/PM")
        h = (h % 12) + (12 if ampm.lower() == "p" else 0)
    try:
        moment = datetime(year, month, day, h, int(minute or 0), int(sec or 0))
    except ValueError:
        raise RuleError("invalid_date", f"{_show(text)} is not a real calendar date") from None
    if offset:
        moment = moment.replace(tzinfo=_offset(offset))
    return moment, hour is not None


def _offset(text: str) -> tzinfo:
    if text in ("Z", "UTC", "GMT"):
        return UTC
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    return timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))


def _parse_loose(text: str, dayfirst: bool) -> tuple[datetime, bool]:
    """Last resort for written-out dates such as "Jan 5, 2024 3:04 PM" or RFC 2822."""
    if not any(ch.isdigit() for ch in text):
        raise RuleError("invalid_date", f"{_show(text)} is not a date")
    try:
        moment = dateutil_parser.parse(text, dayfirst=dayfirst, default=datetime(2000, 1, 1))
    except (ValueError, OverflowError):
        raise RuleError("invalid_date", f"{_show(text)} is not a date Klaviyo can read") from None
    return moment, bool(_HAS_TIME.search(text))


# ---------------------------------------------------------------- helpers


def _show(value: Any) -> str:
    """A short, quoted rendering of a value for messages."""
    text = repr(value) if not isinstance(value, str) else f'"{value}"'
    return text if len(text) <= 60 else text[:57] + '..."'
