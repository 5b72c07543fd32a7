"""Subscriptions: consent per channel, historical imports need consented_at in the past, SDK validation."""

from __future__ import annotations

from typing import Any

from sync.mapping import BooleanCast, Mapping, MappingOptions, Target, TargetKind, column
from sync.pipeline import run_pipeline
from tests.sync.envelopes import subscriptions_job


def _mapping(**options: Any) -> Mapping:
    return Mapping(
        name="s",
        target=Target(kind=TargetKind.SUBSCRIPTION, list_id="Y6nRLr"),
        options=MappingOptions(**options),
        fields=[
            column("Email", "email"),
            column("Phone", "phone_number"),
            column("Consented", "consented_at"),
            column("SmsOk", "consent.sms", BooleanCast()),
        ],
    )


def _run(row: dict[str, str], **options: Any) -> Any:
    (result,) = list(run_pipeline(_mapping(**options), [(1, row)]))
    return result


def test_email_and_sms_consent() -> None:
    result = _run({"Email": "a@b.io", "Phone": "+14155552671", "SmsOk": "yes"}, channels=["email", "sms"])
    assert result.ok, result.errors
    assert result.items == [
        {
            "type": "profile",
            "attributes": {
                "email": "a@b.io",
                "phone_number": "+14155552671",
                "subscriptions": {
                    "email": {"marketing": {"consent": "SUBSCRIBED"}},
                    "sms": {"marketing": {"consent": "SUBSCRIBED"}},
                },
            },
        }
    ]
    subscriptions_job(result.items, "Y6nRLr")


def test_sms_transactional_consent_next_to_marketing() -> None:
    result = _run(
        {"Email": "a@b.io", "Phone": "+14155552671", "SmsOk": "yes"},
        channels=["sms"],
        sms_transactional=True,
    )
    assert result.ok, result.errors
    assert result.items[0]["attributes"]["subscriptions"] == {
        "sms": {"marketing": {"consent": "SUBSCRIBED"}, "transactional": {"consent": "SUBSCRIBED"}}
    }
    subscriptions_job(result.items, "Y6nRLr")


def test_row_can_opt_out_of_a_channel() -> None:
    result = _run({"Email": "a@b.io", "Phone": "+14155552671", "SmsOk": "no"}, channels=["email", "sms"])
    assert list(result.items[0]["attributes"]["subscriptions"]) == ["email"]


def test_historical_import_requires_past_consented_at() -> None:
    ok = _run({"Email": "a@b.io", "Consented": "2023-05-01 10:00"}, historical_import=True)
    assert ok.ok
    assert ok.items[0]["attributes"]["subscriptions"]["email"]["marketing"] == {
        "consent": "SUBSCRIBED",
        "consented_at": "2023-05-01T10:00:00+00:00",
    }
    subscriptions_job(ok.items, "Y6nRLr", historical=True)
    missing = _run({"Email": "a@b.io"}, historical_import=True)
    assert [e.rule for e in missing.errors] == ["consented_at_missing"]
    future = _run({"Email": "a@b.io", "Consented": "2999-01-01 10:00"}, historical_import=True)
    assert [e.rule for e in future.errors] == ["consented_at_future"]


def test_nothing_to_subscribe() -> None:
    result = _run({"Phone": "+14155552671"})
    assert [e.rule for e in result.errors] == ["no_consent_channel"]
