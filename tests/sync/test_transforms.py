"""Transforms with nasty inputs: number formats, dates in many layouts and zones, phones, unicode."""

from __future__ import annotations

import pytest

from sync import transforms as tf
from sync.issues import RuleError


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("42", 42),
        ("-7", -7),
        ("9.99", 9.99),
        ("1,234.50", 1234.5),
        ("1.234,50", 1234.5),
        ("$1,234.50", 1234.5),
        ("€ 1.234,50", 1234.5),
        ("£12", 12),
        ("1 234,56", 1234.56),
        ("1\u00a0234,56", 1234.56),
        ("1'234.50", 1234.5),
        ("12,5", 12.5),
        ("0,75", 0.75),
        ("1,234", 1234),
        ("1,234,567", 1234567),
        ("1.234.567", 1234567),
        ("(12.50)", -12.5),
        ("12.50-", -12.5),
        ("USD 29.98", 29.98),
        ("29.98 EUR", 29.98),
        ("+3", 3),
        ("1e3", 1000.0),
        (".5", 0.5),
        (7, 7),
        (2.5, 2.5),
    ],
)
def test_to_number_accepts_common_formats(raw: object, expected: float) -> None:
    assert tf.to_number(raw) == expected


@pytest.mark.parametrize("raw", ["nan", "NaN", "inf", "-Infinity", float("nan"), float("inf"), "1e999"])
def test_to_number_refuses_non_finite(raw: object) -> None:
    with pytest.raises(RuleError) as err:
        tf.to_number(raw)
    assert err.value.rule == "not_finite"


@pytest.mark.parametrize("raw", ["abc", "12abc", "1.2.3,4,5", "--5", "", "$", True, "1,2,3.4.5"])
def test_to_number_refuses_text(raw: object) -> None:
    with pytest.raises(RuleError) as err:
        tf.to_number(raw)
    assert err.value.rule in ("not_a_number", "not_finite")
    assert err.value.message


def test_to_number_forced_decimal_comma() -> None:
    assert tf.to_number("1,234", decimal=",") == 1.234
    assert tf.to_number("1.234", decimal=",") == 1234
    assert tf.to_number("1.234,5", decimal=",") == 1234.5


def test_to_integer() -> None:
    assert tf.to_integer("3") == 3
    assert tf.to_integer("3.0") == 3
    assert tf.to_integer("1,000") == 1000
    with pytest.raises(RuleError) as err:
        tf.to_integer("2.5")
    assert err.value.rule == "not_an_integer"


@pytest.mark.parametrize("raw", ["yes", "Y", "TRUE", "1", "on", " true ", True, 1])
def test_to_boolean_true(raw: object) -> None:
    assert tf.to_boolean(raw) is True


@pytest.mark.parametrize("raw", ["no", "N", "false", "0", "off", False, 0])
def test_to_boolean_false(raw: object) -> None:
    assert tf.to_boolean(raw) is False


def test_to_boolean_refuses_maybe() -> None:
    with pytest.raises(RuleError) as err:
        tf.to_boolean("maybe")
    assert err.value.rule == "not_a_boolean"


def test_trim_and_email() -> None:
    assert tf.trim("  a b \u00a0") == "a b"
    assert tf.email("  John.Smith@Example.COM ") == "john.smith@example.com"
    assert tf.email("mailto:X@Y.io") == "x@y.io"
    assert tf.email("Jörg@Bücher.de") == "jörg@bücher.de"
    for bad in ["john", "john@", "@x.com", "a@b", "a b@c.com", "a@@b.com", "a@b..com"]:
        with pytest.raises(RuleError) as err:
            tf.email(bad)
        assert err.value.rule == "invalid_email"


def test_split() -> None:
    assert tf.split("Fiction, Children ,,") == ["Fiction", "Children"]
    assert tf.split("a|b", "|") == ["a", "b"]
    assert tf.split(["x ", " y", ""]) == ["x", "y"]
    assert tf.split("Ünïcödé;日本", ";") == ["Ünïcödé", "日本"]


# ---------------------------------------------------------------- dates


@pytest.mark.parametrize(
    ("raw", "tz", "expected", "had_time"),
    [
        ("2022-11-08T00:00:00", "UTC", "2022-11-08T00:00:00+00:00", True),
        ("2022-11-08T10:15:30Z", "America/New_York", "2022-11-08T10:15:30+00:00", True),
        ("2022-11-08T10:15:30.123456+02:00", "UTC", "2022-11-08T08:15:30+00:00", True),
        ("2024-01-15 10:23:45 -0500", "UTC", "2024-01-15T15:23:45+00:00", True),  # Shopify export
        ("2024-01-15 10:23", "Europe/Berlin", "2024-01-15T09:23:00+00:00", True),
        ("2024-07-15 10:23", "Europe/Berlin", "2024-07-15T08:23:00+00:00", True),  # summer time
        ("2024-01-15", "UTC", "2024-01-15T00:00:00+00:00", False),
        ("2024-01-15", "America/Los_Angeles", "2024-01-15T08:00:00+00:00", False),
        ("01/15/2024", "UTC", "2024-01-15T00:00:00+00:00", False),
        ("1/5/2024 3:04 PM", "UTC", "2024-01-05T15:04:00+00:00", True),
        ("12/31/2023 12:30 AM", "UTC", "2023-12-31T00:30:00+00:00", True),
        ("15/01/2024", "UTC", "2024-01-15T00:00:00+00:00", False),  # day > 12: day first
        ("15.01.2024 08:00", "Europe/Berlin", "2024-01-15T07:00:00+00:00", True),
        ("03.04.2024", "UTC", "2024-04-03T00:00:00+00:00", False),  # dotted = European
        ("5/6/24", "UTC", "2024-05-06T00:00:00+00:00", False),
        ("Jan 5, 2024 3:04 PM", "UTC", "2024-01-05T15:04:00+00:00", True),
        ("5 January 2024", "UTC", "2024-01-05T00:00:00+00:00", False),
        ("Mon, 15 Jan 2024 10:00:00 +0000", "Asia/Tokyo", "2024-01-15T10:00:00+00:00", True),
        ("1700000000", "Asia/Tokyo", "2023-11-14T22:13:20+00:00", True),  # Unix seconds are UTC
        ("1700000000123", "UTC", "2023-11-14T22:13:20+00:00", True),  # Unix milliseconds
        ("45306", "UTC", "2024-01-15T00:00:00+00:00", False),  # Excel serial day
        ("45306.75", "UTC", "2024-01-15T18:00:00+00:00", True),  # Excel serial with time
        (45306.5, "Europe/London", "2024-01-15T12:00:00+00:00", True),
        ("20240115", "UTC", "2024-01-15T00:00:00+00:00", False),
        ("  2024-01-15T10:00:00Z\u00a0", "UTC", "2024-01-15T10:00:00+00:00", True),
    ],
)
def test_parse_datetime(raw: object, tz: str, expected: str, had_time: bool) -> None:
    assert tf.parse_datetime(raw, tz=tz) == (expected, had_time)


def test_parse_datetime_dayfirst_for_ambiguous_dates() -> None:
    assert tf.parse_datetime("03/04/2024")[0].startswith("2024-03-04")
    assert tf.parse_datetime("03/04/2024", dayfirst=True)[0].startswith("2024-04-03")


def test_parse_datetime_date_only_hour_in_zone() -> None:
    assert tf.parse_datetime("2024-01-15", tz="America/New_York", date_only_hour=9) == (
        "2024-01-15T14:00:00+00:00",
        False,
    )


def test_parse_datetime_explicit_formats() -> None:
    assert tf.parse_datetime("15-Jan-2024 14:05", "%d-%b-%Y %H:%M") == ("2024-01-15T14:05:00+00:00", True)
    assert tf.parse_datetime("2024/15/01", "%Y/%d/%m") == ("2024-01-15T00:00:00+00:00", False)
    assert tf.parse_datetime("1700000000", "unix")[0] == "2023-11-14T22:13:20+00:00"
    assert tf.parse_datetime("45306", "excel")[0] == "2024-01-15T00:00:00+00:00"
    with pytest.raises(RuleError) as err:
        tf.parse_datetime("2024-01-15", "%d/%m/%Y")
    assert err.value.rule == "invalid_date"


@pytest.mark.parametrize(
    "raw", ["garbage", "31/02/2024", "2024-13-01", "13/13/2024", "yesterday", "", True, -5]
)
def test_parse_datetime_refuses(raw: object) -> None:
    with pytest.raises(RuleError) as err:
        tf.parse_datetime(raw)
    assert err.value.rule == "invalid_date"


def test_parse_datetime_unknown_zone() -> None:
    with pytest.raises(RuleError) as err:
        tf.parse_datetime("2024-01-15", tz="Mars/Olympus")
    assert err.value.rule == "invalid_timezone"


def test_nonexistent_local_time_is_still_converted() -> None:
    # 02:30 does not exist on the spring-forward night in New York; zoneinfo resolves it, we must not crash.
    text, _ = tf.parse_datetime("2024-03-10 02:30", tz="America/New_York")
    assert text.startswith("2024-03-10T0")


# ---------------------------------------------------------------- phones


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("(415) 555-2671", "US", "+14155552671"),
        ("415.555.2671", "US", "+14155552671"),
        ("+1 415 555 2671", "DE", "+14155552671"),
        ("020 7946 0958", "GB", "+442079460958"),
        ("07911 123456", "GB", "+447911123456"),
        ("030 901820", "DE", "+4930901820"),
        ("0049 30 901820", "US", "+4930901820"),
        ("06 12 34 56 78", "FR", "+33612345678"),
        ("+61 2 9374 4000", "US", "+61293744000"),
        ("+15005550006", "US", "+15005550006"),
        ("٠٢٠ ٧٩٤٦ ٠٩٥٨", "GB", "+442079460958"),  # Arabic-Indic digits
    ],
)
def test_to_e164(raw: str, region: str, expected: str) -> None:
    assert tf.to_e164(raw, region) == expected


@pytest.mark.parametrize("raw", ["12345", "555-1234567", "not a phone", "+999 123", ""])
def test_to_e164_refuses(raw: str) -> None:
    with pytest.raises(RuleError) as err:
        tf.to_e164(raw, "US")
    assert err.value.rule == "invalid_phone"
