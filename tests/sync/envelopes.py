"""Wrap sync items in the endpoint envelopes of docs/contracts.md and validate them with the SDK models."""

from __future__ import annotations

from typing import Any

from openapi_client import models

from klaviyo.serialization import dumps, loads


def roundtrip(value: Any) -> Any:
    """What the client would send: serialised with klaviyo.serialization and parsed back."""
    return loads(dumps(value))


def events_job(items: list[dict[str, Any]]) -> models.EventsBulkCreateJob:
    """Validate event items as a bulk event create job."""
    body = {"data": {"type": "event-bulk-create-job", "attributes": {"events-bulk-create": {"data": items}}}}
    return models.EventsBulkCreateJob.from_dict(roundtrip(body))


def single_event(item: dict[str, Any]) -> models.EventCreateQueryV2:
    """Validate one event item as POST /api/events would carry it."""
    attrs = item["attributes"]
    event = dict(attrs["events"]["data"][0]["attributes"])
    event["profile"] = attrs["profile"]
    event["backfill"] = attrs["backfill"]
    return models.EventCreateQueryV2.from_dict(roundtrip({"data": {"type": "event", "attributes": event}}))


def profiles_job(
    items: list[dict[str, Any]], list_id: str | None = None
) -> models.ProfileImportJobCreateQuery:
    """Validate profile items as a bulk profile import job."""
    data: dict[str, Any] = {"type": "profile-bulk-import-job", "attributes": {"profiles": {"data": items}}}
    if list_id:
        data["relationships"] = {"lists": {"data": [{"type": "list", "id": list_id}]}}
    return models.ProfileImportJobCreateQuery.from_dict(roundtrip({"data": data}))


def subscriptions_job(
    items: list[dict[str, Any]], list_id: str, historical: bool = False
) -> models.SubscriptionCreateJobCreateQuery:
    """Validate subscription items as a subscribe job."""
    body = {
        "data": {
            "type": "profile-subscription-bulk-create-job",
            "attributes": {"profiles": {"data": items}, "historical_import": historical},
            "relationships": {"list": {"data": {"type": "list", "id": list_id}}},
        }
    }
    return models.SubscriptionCreateJobCreateQuery.from_dict(roundtrip(body))


def list_members(items: list[dict[str, Any]]) -> models.ListMembersAddQuery:
    """Validate list membership items."""
    return models.ListMembersAddQuery.from_dict(roundtrip({"data": items}))


def catalog_job(kind: str, items: list[dict[str, Any]]) -> Any:
    """Validate catalog items / variants / categories as their bulk create (or update) job."""
    model, job_type, key = {
        "catalog-item": (models.CatalogItemCreateJobCreateQuery, "catalog-item-bulk-create-job", "items"),
        "catalog-item-update": (
            models.CatalogItemUpdateJobCreateQuery,
            "catalog-item-bulk-update-job",
            "items",
        ),
        "catalog-variant": (
            models.CatalogVariantCreateJobCreateQuery,
            "catalog-variant-bulk-create-job",
            "variants",
        ),
        "catalog-category": (
            models.CatalogCategoryCreateJobCreateQuery,
            "catalog-category-bulk-create-job",
            "categories",
        ),
    }[kind]
    body = {"data": {"type": job_type, "attributes": {key: {"data": items}}}}
    return model.from_dict(roundtrip(body))
