"""Event items: contract shape, unique ids (mapped or row hash), SDK validation, seed examples."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from sync.mapping import (
    FieldRule,
    Mapping,
    MappingOptions,
    NumberCast,
    PathSource,
    Target,
    TargetKind,
    column,
)
from sync.pipeline import run_pipeline
from sync.targets.common import MappingError
from sync.targets.events import EventBuilder
from tests.sync.envelopes import events_job, single_event
from tests.sync.seed_order import SEED


def _mapping(*fields: FieldRule, metric: str = "Viewed Product", **options: Any) -> Mapping:
    return Mapping(
        name="e",
        target=Target(kind=TargetKind.EVENT, metric=metric),
        options=MappingOptions(**options),
        fields=list(fields),
    )


def test_contract_shape() -> None:
    mapping = _mapping(
        column("Email", "email"),
        column("First", "profile.first_name"),
        column("Tier", "profile.properties.Tier"),
        column("Price", "properties.Price", NumberCast()),
        column("When", "time"),
        column("Total", "value"),
        column("Id", "unique_id"),
        default_currency="USD",
    )
    row = {"Email": "A@B.io", "First": "Ann", "Tier": "gold", "Price": "9.99", "When": "2024-01-02T03:04:05Z"}
    row |= {"Total": "12", "Id": "ev-1"}
    (result,) = list(run_pipeline(mapping, [(7, row)]))
    assert result.row_ref == 7 and result.ok
    assert result.items == [
        {
            "type": "event-bulk-create",
            "attributes": {
                "profile": {
                    "data": {
                        "type": "profile",
                        "attributes": {
                            "email": "a@b.io",
                            "first_name": "Ann",
                            "properties": {"Tier": "gold"},
                        },
                    }
                },
                "events": {
                    "data": [
                        {
                            "type": "event",
                            "attributes": {
                                "properties": {"Price": 9.99},
                                "time": "2024-01-02T03:04:05+00:00",
                                "value": 12,
                                "value_currency": "USD",
                                "unique_id": "ev-1",
                                "metric": {
                                    "data": {"type": "metric", "attributes": {"name": "Viewed Product"}}
                                },
                            },
                        }
                    ]
                },
                "backfill": True,
            },
        }
    ]
    events_job(result.items)
    single_event(result.items[0])


def test_row_hash_unique_id_is_stable_and_distinct() -> None:
    mapping = _mapping(column("Email", "email"), column("P", "properties.P"))
    rows = [
        (1, {"Email": "a@b.io", "P": "x"}),
        (2, {"Email": "a@b.io", "P": "y"}),
        (3, {"Email": "a@b.io", "P": "x"}),
    ]
    ids = [
        r.items[0]["attributes"]["events"]["data"][0]["attributes"]["unique_id"]
        for r in run_pipeline(mapping, rows)
    ]
    assert ids[0] == ids[2] != ids[1]  # same content -> same id, so a resent batch deduplicates
    again = [
        r.items[0]["attributes"]["events"]["data"][0]["attributes"]["unique_id"]
        for r in run_pipeline(mapping, rows)
    ]
    assert again == ids
    other_metric = _mapping(column("Email", "email"), column("P", "properties.P"), metric="Other")
    assert (
        next(iter(run_pipeline(other_metric, rows[:1]))).items[0]["attributes"]["events"]["data"][0][
            "attributes"
        ]["unique_id"]
        != ids[0]
    )


def test_backfill_option_and_missing_time() -> None:
    mapping = _mapping(column("Email", "email"), backfill=False)
    (result,) = list(run_pipeline(mapping, [(1, {"Email": "a@b.io"})]))
    attrs = result.items[0]["attributes"]
    assert attrs["backfill"] is False
    assert "time" not in attrs["events"]["data"][0]["attributes"]


def test_unknown_target_is_a_mapping_error() -> None:
    with pytest.raises(MappingError) as err:
        EventBuilder(_mapping(column("Email", "email"), column("X", "colour")))
    assert "colour" in str(err.value)


def test_sdk_rejects_what_klaviyo_would() -> None:
    mapping = _mapping(column("Email", "email"), column("Total", "value"))
    (result,) = list(run_pipeline(mapping, [(1, {"Email": "a@b.io", "Total": "5"})]))
    broken = copy.deepcopy(result.items)
    broken[0]["attributes"]["events"]["data"][0]["attributes"]["value"] = "five"
    with pytest.raises(ValidationError):
        events_job(broken)


def _seed_compare(metric: str, mapping: Mapping, row: dict[str, str]) -> None:
    (result,) = list(run_pipeline(mapping, [(1, row)]))
    assert result.ok, result.errors
    (item,) = result.items
    events_job([item])
    expected = SEED[metric]["data"]["attributes"]
    attrs = item["attributes"]
    event = attrs["events"]["data"][0]["attributes"]
    # These two guide examples use the older shorthand profile/metric objects; compare the content.
    assert attrs["profile"]["data"]["attributes"] == expected["profile"]
    assert event["metric"]["data"]["attributes"] == expected["metric"]
    assert event["properties"] == expected["properties"]
    assert event["unique_id"] == expected["unique_id"]
    assert event["time"] == expected["time"] + "+00:00"


def test_received_article_share_equals_the_guide() -> None:
    names = ["SharerName", "SharerEmail", "Name", "URL", "ImageURL"]
    mapping = _mapping(
        column("Recipient", "email"),
        column("Time", "time"),
        column("Id", "unique_id"),
        *[column(n, f"properties.{n}") for n in names],
        metric="Received Article Share",
    )
    seed = SEED["Received Article Share"]["data"]["attributes"]
    row = {"Recipient": seed["profile"]["email"], "Time": seed["time"], "Id": seed["unique_id"]}
    row |= seed["properties"]
    _seed_compare("Received Article Share", mapping, row)


def test_referred_by_friend_equals_the_guide_from_json() -> None:
    mapping = _mapping(
        FieldRule(source=PathSource(path="friend.email"), target="email"),
        FieldRule(source=PathSource(path="at"), target="time"),
        FieldRule(source=PathSource(path="id"), target="unique_id"),
        FieldRule(source=PathSource(path="referrer.name"), target="properties.ReferrerName"),
        FieldRule(source=PathSource(path="referrer.email"), target="properties.ReferrerEmail"),
        FieldRule(source=PathSource(path="referrer.codes[0]"), target="properties.ReferrerCode"),
        metric="Referred by Friend",
    )
    seed = SEED["Referred by Friend"]["data"]["attributes"]
    record = {
        "friend": {"email": seed["profile"]["email"]},
        "at": seed["time"],
        "id": seed["unique_id"],
        "referrer": {"name": "Erin Smith", "email": "erin.smith@test.com", "codes": ["12abc456def", "old"]},
    }
    _seed_compare("Referred by Friend", mapping, record)
