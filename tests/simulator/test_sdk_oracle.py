"""The official SDK (klaviyo-api 25.0.0) as an oracle: what it sends we accept, what we answer it parses."""

from __future__ import annotations

import time
from typing import Any

import pytest
from klaviyo_api import KlaviyoAPI

from simulator.server import SimulatorServer
from tests.simulator.payloads import bulk, event_item


@pytest.fixture
def sdk(sim: SimulatorServer) -> KlaviyoAPI:
    sim.config.limits_enabled = False
    sim.config.time_scale = 100
    return KlaviyoAPI(sim.api_key, max_retries=0, test_host=sim.base_url)


def _attr(obj: Any, *path: str) -> Any:
    for name in path:
        obj = obj[name] if isinstance(obj, dict) else getattr(obj, name)
    return obj


def test_sdk_round_trips(sim: SimulatorServer, sdk: KlaviyoAPI) -> None:
    accounts = sdk.Accounts.get_accounts()
    assert _attr(accounts, "data")[0].attributes.timezone == "UTC"

    sdk.Events.bulk_create_events(bulk([event_item(unique_id="o-1")]))
    sdk.Events.create_event(
        {
            "data": {
                "type": "event",
                "attributes": {
                    "properties": {"a": 1},
                    "metric": {"data": {"type": "metric", "attributes": {"name": "Viewed Product"}}},
                    "profile": {"data": {"type": "profile", "attributes": {"email": "v@shop.io"}}},
                },
            }
        }
    )
    assert len(sim.state.events()) == 2
    metrics = sdk.Metrics.get_metrics()
    assert sorted(m.attributes.name for m in metrics.data) == ["Placed Order", "Viewed Product"]

    created = sdk.Profiles.create_or_update_profile(
        {"data": {"type": "profile", "attributes": {"email": "p@shop.io", "first_name": "P"}}}
    )
    pid = created.data.id
    found = sdk.Profiles.get_profiles(filter='equals(email,"p@shop.io")')
    assert [p.id for p in found.data] == [pid]

    new_list = sdk.Lists.create_list({"data": {"type": "list", "attributes": {"name": "VIP"}}})
    list_id = new_list.data.id
    sdk.Lists.add_profiles_to_list(list_id, {"data": [{"type": "profile", "id": pid}]})
    lists = sdk.Lists.get_lists()
    assert [kl.id for kl in lists.data] == [list_id]
    detail = sdk.Lists.get_list(list_id, additional_fields_list=["profile_count"])
    assert detail.data.attributes.profile_count == 1

    job = sdk.Profiles.bulk_import_profiles(
        {
            "data": {
                "type": "profile-bulk-import-job",
                "attributes": {
                    "profiles": {
                        "data": [
                            {"type": "profile", "attributes": {"email": "i@shop.io"}},
                            {"type": "profile", "attributes": {"email": "bad"}},
                        ]
                    }
                },
            }
        }
    )
    time.sleep(0.05)
    polled = sdk.Profiles.get_bulk_import_profiles_job(job.data.id)
    assert polled.data.attributes.status == "complete"
    errors = sdk.Profiles.get_bulk_profile_import_job_import_errors(job.data.id)
    assert len(errors.data) == 1

    catalog_job = sdk.Catalogs.bulk_create_catalog_items(
        {
            "data": {
                "type": "catalog-item-bulk-create-job",
                "attributes": {
                    "items": {
                        "data": [
                            {
                                "type": "catalog-item",
                                "attributes": {
                                    "external_id": "SKU1",
                                    "title": "T",
                                    "description": "D",
                                    "url": "https://shop.io/sku1",
                                    "integration_type": "$custom",
                                    "catalog_type": "$default",
                                },
                            }
                        ]
                    }
                },
            }
        }
    )
    time.sleep(0.05)
    polled_catalog = sdk.Catalogs.get_bulk_create_catalog_items_job(catalog_job.data.id)
    assert polled_catalog.data.attributes.status == "complete"
    items = sdk.Catalogs.get_catalog_items()
    assert [i.id for i in items.data] == ["$custom:::$default:::SKU1"]

    sdk.Profiles.bulk_subscribe_profiles(
        {
            "data": {
                "type": "profile-subscription-bulk-create-job",
                "attributes": {
                    "profiles": {
                        "data": [
                            {
                                "type": "profile",
                                "attributes": {
                                    "email": "s@shop.io",
                                    "subscriptions": {"email": {"marketing": {"consent": "SUBSCRIBED"}}},
                                },
                            }
                        ]
                    }
                },
                "relationships": {"list": {"data": {"type": "list", "id": list_id}}},
            }
        }
    )
    assert (
        sim.state.profile(email="s@shop.io")["subscriptions"]["email"]["marketing"]["consent"] == "SUBSCRIBED"
    )


def test_every_ecommerce_spec_preset_payload_goes_through_the_sdk(
    sim: SimulatorServer, sdk: KlaviyoAPI
) -> None:
    """Each event the spec presets build from the spec's documented examples, sent by the official
    SDK (which validates it against its models) and accepted by the simulator."""
    from sync.pipeline import run_pipeline
    from sync.presets import ecommerce_event_mapping
    from tests.support.ecommerce_spec import EXAMPLES, expected

    sent = 0
    for event, call in EXAMPLES.items():
        (result,) = list(run_pipeline(ecommerce_event_mapping(event), [(1, call)]))
        assert result.ok, (event, result.errors)
        for item in result.items:
            attributes = dict(item["attributes"]["events"]["data"][0]["attributes"])
            attributes["profile"] = item["attributes"]["profile"]
            sdk.Events.create_event({"data": {"type": "event", "attributes": attributes}})
            sent += 1
        sdk.Events.bulk_create_events(bulk(result.items))
    assert sent == sum(len(expected(event)) for event in EXAMPLES)
    metrics = {m.attributes.name for m in sdk.Metrics.get_metrics().data}
    assert {
        "Placed Order",
        "Ordered Product",
        "Started Checkout",
        "Refunded Order",
        "Searched Site",
    } <= metrics
