"""Every request body the client can build validates against the klaviyo-api SDK's pydantic models."""

from __future__ import annotations

from decimal import Decimal

import httpx
import openapi_client.models as sdk
import pytest

from klaviyo import endpoints as ep
from klaviyo.batching import batches
from klaviyo.client import KlaviyoClient
from klaviyo.serialization import loads

# (method, path prefix) -> SDK model of the request body
MODELS = {
    ("POST", "/api/events"): sdk.EventCreateQueryV2,
    ("POST", "/api/event-bulk-create-jobs"): sdk.EventsBulkCreateJob,
    ("POST", "/api/profile-import"): sdk.ProfileUpsertQuery,
    ("PATCH", "/api/profiles/"): sdk.ProfilePartialUpdateQuery,
    ("POST", "/api/profile-bulk-import-jobs"): sdk.ProfileImportJobCreateQuery,
    ("POST", "/api/lists/L1/relationships/profiles"): sdk.ListMembersAddQuery,
    ("DELETE", "/api/lists/L1/relationships/profiles"): sdk.ListMembersDeleteQuery,
    ("POST", "/api/lists"): sdk.ListCreateQuery,
    ("PATCH", "/api/lists/"): sdk.ListPartialUpdateQuery,
    ("POST", "/api/profile-subscription-bulk-create-jobs"): sdk.SubscriptionCreateJobCreateQuery,
    ("POST", "/api/profile-subscription-bulk-delete-jobs"): sdk.SubscriptionDeleteJobCreateQuery,
    ("POST", "/api/profile-suppression-bulk-create-jobs"): sdk.SuppressionCreateJobCreateQuery,
    ("POST", "/api/catalog-item-bulk-create-jobs"): sdk.CatalogItemCreateJobCreateQuery,
    ("POST", "/api/catalog-item-bulk-update-jobs"): sdk.CatalogItemUpdateJobCreateQuery,
    ("POST", "/api/catalog-item-bulk-delete-jobs"): sdk.CatalogItemDeleteJobCreateQuery,
    ("POST", "/api/catalog-variant-bulk-create-jobs"): sdk.CatalogVariantCreateJobCreateQuery,
    ("POST", "/api/catalog-category-bulk-create-jobs"): sdk.CatalogCategoryCreateJobCreateQuery,
}

PROFILE = {"email": "ana@shop.test", "first_name": "Ana", "properties": {"Tier": "gold"}}
EVENT_ITEM = {
    "type": "event-bulk-create",
    "attributes": {
        "profile": {"data": {"type": "profile", "attributes": {"email": "ana@shop.test"}}},
        "events": {
            "data": [
                {
                    "type": "event",
                    "attributes": {
                        "properties": {"OrderId": "1001", "ItemNames": ["Mug"]},
                        "time": "2024-05-01T10:00:00+02:00",
                        "value": Decimal("19.90"),
                        "value_currency": "EUR",
                        "unique_id": "1001",
                        "metric": {"data": {"type": "metric", "attributes": {"name": "Placed Order"}}},
                    },
                }
            ]
        },
        "backfill": True,
    },
}
CATALOG_ITEM = {
    "type": "catalog-item",
    "attributes": {
        "external_id": "SKU-1",
        "integration_type": "$custom",
        "catalog_type": "$default",
        "title": "Mug",
        "description": "A mug",
        "url": "https://shop.test/mug",
        "price": 12.5,
        "published": True,
    },
}
VARIANT = {
    "type": "catalog-variant",
    "attributes": {
        "external_id": "SKU-1-RED",
        "catalog_type": "$default",
        "integration_type": "$custom",
        "title": "Red mug",
        "description": "A red mug",
        "sku": "SKU-1-RED",
        "inventory_policy": 1,
        "inventory_quantity": 5,
        "price": 12.5,
        "url": "https://shop.test/mug?c=red",
    },
    "relationships": {"item": {"data": {"type": "catalog-item", "id": "$custom:::$default:::SKU-1"}}},
}
CATEGORY = {
    "type": "catalog-category",
    "attributes": {
        "external_id": "mugs",
        "name": "Mugs",
        "integration_type": "$custom",
        "catalog_type": "$default",
    },
}
SUBSCRIBER = {
    "type": "profile",
    "attributes": {
        "email": "ana@shop.test",
        "subscriptions": {
            "email": {"marketing": {"consent": "SUBSCRIBED", "consented_at": "2024-01-01T00:00:00Z"}}
        },
    },
}
UNSUBSCRIBER = {
    "type": "profile",
    "attributes": {
        "email": "ana@shop.test",
        "subscriptions": {"email": {"marketing": {"consent": "UNSUBSCRIBED"}}},
    },
}


def model_for(method: str, path: str):
    for (m, prefix), model in sorted(MODELS.items(), key=lambda kv: -len(kv[0][1])):
        if m == method and (path == prefix or (prefix.endswith("/") and path.startswith(prefix))):
            return model
    return None


@pytest.fixture
async def recorded():
    requests: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(202, json={"data": {"type": "job", "id": "J1", "attributes": {}}})

    http = httpx.AsyncClient(base_url="http://klaviyo.test", transport=httpx.MockTransport(answer))
    client = KlaviyoClient("pk_test_0123456789abcdef", base_url="http://klaviyo.test", http=http)
    yield client, requests
    await http.aclose()


async def test_every_body_validates_against_the_sdk(recorded) -> None:
    client, requests = recorded
    await client.create_event(
        {
            "type": "event",
            "attributes": EVENT_ITEM["attributes"]["events"]["data"][0]["attributes"]
            | {"profile": EVENT_ITEM["attributes"]["profile"]},
        }
    )
    await client.bulk_create_events([EVENT_ITEM])
    await client.import_profile(PROFILE)
    await client.update_profile("P1", {"first_name": None})
    await client.bulk_import_profiles([{"type": "profile", "attributes": PROFILE}], list_ids=["L1"])
    await client.create_list("VIP")
    await client.rename_list("L1", "VIP customers")
    await client.add_list_members("L1", ["P1", "P2"])
    await client.remove_list_members("L1", ["P1"])
    await client.subscribe_profiles(
        [SUBSCRIBER], list_id="L1", historical_import=True, custom_source="backfill"
    )
    await client.unsubscribe_profiles([UNSUBSCRIBER], list_id="L1")
    await client.suppress_profiles(["ana@shop.test"])
    await client.create_catalog_items([CATALOG_ITEM])
    await client.update_catalog_items(
        [{"type": "catalog-item", "id": "$custom:::$default:::SKU-1", "attributes": {"title": "Big mug"}}]
    )
    await client.delete_catalog_items([{"type": "catalog-item", "id": "$custom:::$default:::SKU-1"}])
    await client.create_catalog_variants([VARIANT])
    await client.create_catalog_categories([CATEGORY])

    assert len(requests) == 17
    for request in requests:
        model = model_for(request.method, request.url.path)
        assert model is not None, f"no SDK model for {request.method} {request.url.path}"
        document = loads(request.content)
        model.from_dict(document)  # raises pydantic.ValidationError on a shape Klaviyo would refuse
        assert request.headers["authorization"] == "Klaviyo-API-Key pk_test_0123456789abcdef"
        assert request.headers["revision"] == "2026-10-15"
        assert request.headers["content-type"] == "application/vnd.api+json"
        assert request.headers["accept"] == "application/vnd.api+json"


async def test_bodies_match_the_expected_documents(recorded) -> None:
    client, requests = recorded
    await client.subscribe_profiles([SUBSCRIBER], list_id="L1", historical_import=True)
    await client.bulk_import_profiles([{"type": "profile", "attributes": PROFILE}], list_ids=["L1"])
    sub, imp = (loads(r.content) for r in requests)
    assert sub == {
        "data": {
            "type": "profile-subscription-bulk-create-job",
            "attributes": {"historical_import": True, "profiles": {"data": [SUBSCRIBER]}},
            "relationships": {"list": {"data": {"type": "list", "id": "L1"}}},
        }
    }
    assert imp["data"]["relationships"] == {"lists": {"data": [{"type": "list", "id": "L1"}]}}
    assert imp["data"]["attributes"]["profiles"]["data"][0]["attributes"] == PROFILE


def test_batched_bodies_validate_for_every_bulk_endpoint() -> None:
    samples = {
        ep.BULK_EVENTS: (EVENT_ITEM, sdk.EventsBulkCreateJob),
        ep.BULK_PROFILES: ({"type": "profile", "attributes": PROFILE}, sdk.ProfileImportJobCreateQuery),
        ep.ADD_LIST_MEMBERS: ({"type": "profile", "id": "P1"}, sdk.ListMembersAddQuery),
        ep.SUBSCRIBE: (SUBSCRIBER, sdk.SubscriptionCreateJobCreateQuery),
        ep.UNSUBSCRIBE: (UNSUBSCRIBER, sdk.SubscriptionDeleteJobCreateQuery),
        ep.SUPPRESS: (
            {"type": "profile", "attributes": {"email": "a@shop.test"}},
            sdk.SuppressionCreateJobCreateQuery,
        ),
        ep.CATALOG_ITEMS_CREATE: (CATALOG_ITEM, sdk.CatalogItemCreateJobCreateQuery),
        ep.CATALOG_VARIANTS_CREATE: (VARIANT, sdk.CatalogVariantCreateJobCreateQuery),
        ep.CATALOG_CATEGORIES_CREATE: (CATEGORY, sdk.CatalogCategoryCreateJobCreateQuery),
    }
    for endpoint, (item, model) in samples.items():
        for batch in batches([(i, item) for i in range(1, 4)], endpoint):
            model.from_dict(loads(endpoint.envelope_bytes(batch.items)))


def test_repr_masks_the_key() -> None:
    client = KlaviyoClient("pk_live_secret_abcdef123456", base_url="http://x")
    assert "secret" not in repr(client) and "secret" not in str(client)
    assert "3456" in repr(client)
    assert "secret" not in repr(client.for_run("r1"))


# --- answers and requests against Klaviyo's pinned operation files (tests/klaviyo/spec) --------

import copy  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
from pathlib import Path  # noqa: E402

from klaviyo.jobs import settle  # noqa: E402
from klaviyo.sender import BatchOutcome  # noqa: E402
from simulator.app import ROUTES as SIM_ROUTES  # noqa: E402
from simulator.config import default_limits  # noqa: E402
from simulator.conformance import check_answer  # noqa: E402
from simulator.validation import MODELS as SIM_MODELS  # noqa: E402
from simulator.validation import unknown_fields  # noqa: E402
from tests.klaviyo import oas  # noqa: E402

SPEC_DIR = Path(__file__).parent / "spec"


def _answers(sim, operation: str) -> list[dict]:
    samples = sim.app.conformance.samples.get(operation) or []
    assert samples, f"the flow never called {operation}"
    return samples


async def test_import_error_answers_conform_to_the_pinned_operation(client, sim) -> None:
    spec = oas.load("get_errors_for_bulk_import_profiles_job")
    method, path, _ = oas.operation_of(spec)
    assert (method, path) == ("GET", "/api/profile-bulk-import-jobs/{id}/import-errors")
    profiles = [
        {"type": "profile", "attributes": {"email": "ok@shop.test"}},
        {"type": "profile", "attributes": {"email": "bad@shop.test", "phone_number": "12345"}},
    ]
    job_id = await client.bulk_import_profiles(profiles)
    assert job_id
    outcome = BatchOutcome(seq=0, accepted=[1, 2], job_ids=[job_id], job_rows={job_id: [1, 2]})
    outcome = await settle(client, ep.BULK_PROFILES, outcome, first_delay=0.02, max_delay=0.1)
    assert [r.row_ref for r in outcome.rejected] == [2]
    _conforms(sim, "get_bulk_import_profiles_job")
    for answer in _answers(sim, "get_errors_for_bulk_import_profiles_job"):
        schema = oas.response_schema(spec, answer["status"])
        assert schema is not None
        assert oas.problems(spec, schema, answer["body"]) == [], answer["body"]


async def test_suppression_answers_and_requests_conform_to_the_pinned_operation(client, sim) -> None:
    spec = oas.load("bulk_suppress_profiles")
    requests: list[bytes] = []

    async def keep(request: httpx.Request) -> None:
        if request.url.path == "/api/profile-suppression-bulk-create-jobs":
            requests.append(request.content)

    http = client._shared.http
    http.event_hooks = {**http.event_hooks, "request": [*http.event_hooks["request"], keep]}
    job_id = await client.suppress_profiles(["gone@shop.test", "left@shop.test"])
    assert job_id  # the spec's answer is a job document, with an id
    [answer] = _answers(sim, "bulk_suppress_profiles")
    assert answer["status"] == 202
    assert oas.problems(spec, oas.response_schema(spec, 202), answer["body"]) == []
    assert requests and all(oas.problems(spec, oas.request_schema(spec), loads(r)) == [] for r in requests)


async def test_profile_import_jobs_conform_to_the_pinned_operation(client, sim) -> None:
    spec = oas.load("bulk_import_profiles")
    sent: list[bytes] = []

    async def keep(request: httpx.Request) -> None:
        if request.url.path == "/api/profile-bulk-import-jobs":
            sent.append(request.content)

    http = client._shared.http
    http.event_hooks = {**http.event_hooks, "request": [*http.event_hooks["request"], keep]}
    list_id = await client.create_list("Pinned")
    profile = {**PROFILE, "location": {"city": "Oslo", "latitude": 59.91}, "phone_number": "+4791234567"}
    assert await client.bulk_import_profiles([{"type": "profile", "attributes": profile}], [list_id])
    [answer] = _answers(sim, "bulk_import_profiles")
    assert answer["status"] == 202
    assert oas.problems(spec, oas.response_schema(spec, 202), answer["body"]) == []
    [body] = sent
    assert oas.problems(spec, oas.request_schema(spec), loads(body)) == []
    # The strict check sees what the SDK's models let through.
    wrong = loads(body)
    wrong["data"]["attributes"]["profiles"]["data"][0]["attributes"]["frist_name"] = "Ana"
    assert oas.problems(spec, oas.request_schema(spec), wrong) == [
        "/data/attributes/profiles/data/0/attributes/frist_name: not in the spec"
    ]


def test_the_checker_refuses_what_the_spec_does_not_allow() -> None:
    spec = oas.load("get_errors_for_bulk_import_profiles_job")
    schema = oas.response_schema(spec, 200)
    assert schema is not None
    bad = {"data": [{"type": "import-error", "id": "e1", "attributes": {"code": "x", "title": "t"}}]}
    bad["links"] = {"self": "http://x/api", "next": None}
    found = oas.problems(spec, schema, bad)
    assert "/data/0/attributes/detail: required by the spec, missing" in found
    assert "/links/next: null where the spec allows none" in found
    # The simulator's own checker (every answer of every test flow) says the same of undocumented
    # statuses, bodies where none is documented, and null links.
    assert check_answer("POST", "/api/profile-suppression-bulk-create-jobs", 202, None)
    assert check_answer("POST", "/api/events", 200, None)
    assert check_answer("POST", "/api/events", 202, {"data": {}})
    assert check_answer("GET", "/api/accounts", 200, {"data": [], "links": {"self": "x", "next": None}})
    assert check_answer("POST", "/api/events", 202, None) == []


def test_the_simulators_rate_classes_carry_the_spec_limits() -> None:
    table = json.loads((SPEC_DIR / "rate_limits.json").read_text())
    limits = default_limits()
    for operation, entry in table.items():
        if operation.startswith("_"):
            continue
        limit = limits[entry["class"]]
        assert (limit.burst, limit.steady) == (entry["burst"], entry["steady"]), operation
    # The client never paces an endpoint faster than Klaviyo allows; where it is slower, the table
    # says so ("client_slower"), since its one catalog job read serves every job kind.
    for operation, entry in table.items():
        if operation.startswith("_"):
            continue
        rate = getattr(ep, entry["endpoint"]).rate
        assert rate.burst <= entry["burst"] and rate.steady <= entry["steady"], operation
        same = (rate.burst, rate.steady) == (entry["burst"], entry["steady"])
        assert same != entry.get("client_slower", False), operation
    # The pinned operation files say the same as the table, and the simulator's route for each
    # operation is in the table's class.
    for path in sorted(SPEC_DIR.glob("*.json")):
        if path.name == "rate_limits.json":
            continue
        operation = path.stem
        method, template, op = oas.operation_of(oas.load(operation))
        concrete = re.sub(r"\{[^}]+\}", "X1", template)
        [route] = [r for r in SIM_ROUTES if r.method == method and r.pattern.match(concrete)]
        assert route.limit_class == table[operation]["class"], operation
        rate = op["x-klaviyo-ratelimit"]
        assert (rate["burst"], rate["steady"]) == (
            f"{table[operation]['burst']}/s",
            f"{table[operation]['steady']}/m",
        )


async def test_no_request_the_client_builds_has_a_field_klaviyo_would_refuse(recorded) -> None:
    # Klaviyo answers 400 "'x' is not a valid field for the resource 'y'" to a field its schema
    # lacks; the SDK's models let such fields through, so they are checked key by key here.
    client, requests = recorded
    await client.bulk_create_events([EVENT_ITEM])
    await client.bulk_import_profiles([{"type": "profile", "attributes": PROFILE}], list_ids=["L1"])
    await client.subscribe_profiles([SUBSCRIBER], list_id="L1", historical_import=True, custom_source="x")
    await client.unsubscribe_profiles([UNSUBSCRIBER], list_id="L1")
    await client.suppress_profiles(["ana@shop.test"])
    await client.create_catalog_items([CATALOG_ITEM])
    await client.create_catalog_variants([VARIANT])
    await client.create_catalog_categories([CATEGORY])
    for request in requests:
        model = model_for(request.method, request.url.path)
        assert model is not None
        assert unknown_fields(model, loads(request.content)) == [], request.url.path
    assert set(SIM_MODELS.values()) >= {model_for(r.method, r.url.path) for r in requests}


def _capture(client, method: str, path: str) -> list[bytes]:
    """Bodies of the requests the client sends to ``method path`` from now on."""
    sent: list[bytes] = []

    async def keep(request: httpx.Request) -> None:
        if request.method == method and request.url.path == path:
            sent.append(request.content)

    http = client._shared.http
    http.event_hooks = {**http.event_hooks, "request": [*http.event_hooks["request"], keep]}
    return sent


def _conforms(sim, operation: str, sent: list[bytes] | None = None) -> None:
    """Every answer of ``operation`` the flow got, and every request it sent, by the pinned file."""
    spec = oas.load(operation)
    _, _, op = oas.operation_of(spec)
    documented = {int(s) for s in op["responses"] if s.isdigit()}
    for answer in _answers(sim, operation):
        assert answer["status"] in documented, (operation, answer["status"], documented)
        schema = oas.response_schema(spec, answer["status"])
        if schema is None:
            assert answer["body"] is None, (operation, "a body where the spec documents none")
        else:
            assert oas.problems(spec, schema, answer["body"]) == [], operation
    for body in sent or []:
        assert oas.problems(spec, oas.request_schema(spec), loads(body)) == [], operation


async def test_bulk_event_jobs_conform_to_the_pinned_operation(client, sim) -> None:
    sent = _capture(client, "POST", ep.BULK_EVENTS.path)
    other = copy.deepcopy(EVENT_ITEM)
    other["attributes"]["profile"]["data"]["attributes"] = {
        "email": "bo@shop.test",
        "location": {"city": "Oslo", "latitude": 59.91},
        "properties": {"Tier": "silver"},
    }
    await client.bulk_create_events([EVENT_ITEM, other])
    assert sent
    _conforms(sim, "bulk_create_events", sent)
    wrong = loads(sent[0])
    wrong["data"]["attributes"]["events-bulk-create"]["data"][0]["attributes"]["events"]["data"][0][
        "attributes"
    ]["vaule"] = 1
    spec = oas.load("bulk_create_events")
    at = "/data/attributes/events-bulk-create/data/0/attributes/events/data/0/attributes/vaule"
    assert oas.problems(spec, oas.request_schema(spec), wrong) == [f"{at}: not in the spec"]


async def test_subscription_jobs_conform_to_the_pinned_operations(client, sim) -> None:
    subscribe = _capture(client, "POST", ep.SUBSCRIBE.path)
    unsubscribe = _capture(client, "POST", ep.UNSUBSCRIBE.path)
    list_id = await client.create_list("Pinned consent")
    await client.subscribe_profiles([SUBSCRIBER], list_id=list_id, historical_import=True, custom_source="x")
    sms = {
        "type": "profile",
        "attributes": {
            "phone_number": "+4791234567",
            "subscriptions": {"sms": {"marketing": {"consent": "SUBSCRIBED"}}},
        },
    }
    await client.subscribe_profiles([sms], list_id=list_id)
    await client.unsubscribe_profiles([UNSUBSCRIBER], list_id=list_id)
    assert len(subscribe) == 2 and len(unsubscribe) == 1
    _conforms(sim, "bulk_subscribe_profiles", subscribe)
    _conforms(sim, "bulk_unsubscribe_profiles", unsubscribe)


async def test_list_writes_conform_to_the_pinned_operations(client, sim) -> None:
    created = _capture(client, "POST", "/api/lists")
    list_id = await client.create_list("Pinned members")
    path = f"/api/lists/{list_id}/relationships/profiles"
    added = _capture(client, "POST", path)
    removed = _capture(client, "DELETE", path)
    profile_id = await client.import_profile({"email": "member@shop.test"})
    await client.add_list_members(list_id, [profile_id])
    await client.remove_list_members(list_id, [profile_id])
    assert created and added and removed
    _conforms(sim, "create_list", created)
    renamed = _capture(client, "PATCH", f"/api/lists/{list_id}")
    await client.rename_list(list_id, "Pinned members, renamed")
    assert renamed
    _conforms(sim, "update_list", renamed)
    _conforms(sim, "add_profiles_to_list", added)
    _conforms(sim, "remove_profiles_from_list", removed)


async def test_catalog_item_jobs_conform_to_the_pinned_operation(client, sim) -> None:
    sent = _capture(client, "POST", ep.CATALOG_ITEMS_CREATE.path)
    second = copy.deepcopy(CATALOG_ITEM)
    second["attributes"] |= {"external_id": "SKU-2", "images": ["https://shop.test/2.png"]}
    second["attributes"]["custom_metadata"] = {"Top Pick": True}
    job_id = await client.create_catalog_items([CATALOG_ITEM, second, CATALOG_ITEM])
    assert job_id and sent
    _conforms(sim, "bulk_create_catalog_items", sent)
    # The job's reads, with the refused duplicate among its errors.
    outcome = BatchOutcome(seq=0, accepted=[1, 2, 3], job_ids=[job_id], job_rows={job_id: [1, 2, 3]})
    outcome = await settle(client, ep.CATALOG_ITEMS_CREATE, outcome, first_delay=0.02, max_delay=0.1)
    assert [r.row_ref for r in outcome.rejected] == [3]
    _conforms(sim, "get_bulk_create_catalog_items_job")
    reads = _answers(sim, "get_bulk_create_catalog_items_job")
    assert any(a["body"]["data"]["attributes"]["errors"] for a in reads)


async def test_catalog_category_jobs_conform_to_the_pinned_operation(client, sim) -> None:
    sent = _capture(client, "POST", ep.CATALOG_CATEGORIES_CREATE.path)
    await client.create_catalog_items([CATALOG_ITEM])
    linked = copy.deepcopy(CATEGORY)
    linked["relationships"] = {
        "items": {"data": [{"type": "catalog-item", "id": "$custom:::$default:::SKU-1"}]}
    }
    job_id = await client.create_catalog_categories(
        [CATEGORY | {"attributes": {**CATEGORY["attributes"], "external_id": "cups"}}, linked]
    )
    assert job_id and sent
    _conforms(sim, "bulk_create_catalog_categories", sent)
    outcome = BatchOutcome(seq=0, accepted=[1, 2], job_ids=[job_id], job_rows={job_id: [1, 2]})
    await settle(client, ep.CATALOG_CATEGORIES_CREATE, outcome, first_delay=0.02, max_delay=0.1)
    _conforms(sim, "get_bulk_create_categories_job")


async def test_catalog_variant_jobs_conform_to_the_pinned_operation(client, sim) -> None:
    sent = _capture(client, "POST", ep.CATALOG_VARIANTS_CREATE.path)
    await client.create_catalog_items([CATALOG_ITEM])
    job_id = await client.create_catalog_variants([VARIANT])
    assert job_id and sent
    _conforms(sim, "bulk_create_catalog_variants", sent)
    outcome = BatchOutcome(seq=0, accepted=[1], job_ids=[job_id], job_rows={job_id: [1]})
    await settle(client, ep.CATALOG_VARIANTS_CREATE, outcome, first_delay=0.02, max_delay=0.1)
    _conforms(sim, "get_bulk_create_variants_job")


async def test_metric_aggregate_queries_conform_to_the_pinned_operation(client, sim) -> None:
    from sync.verification import aggregate_queries

    sent = _capture(client, "POST", ep.QUERY_METRIC_AGGREGATES.path)
    await client.bulk_create_events([EVENT_ITEM])
    [metric] = [m for m in await client.get_metrics() if m["attributes"]["name"] == "Placed Order"]
    for query in aggregate_queries(metric["id"], ["2024-05-01", "2024-05-02"], "Europe/Oslo"):
        await client.query_metric_aggregates(query)
    assert sent
    _conforms(sim, "query_metric_aggregates", sent)
    _conforms(sim, "get_metrics")


async def test_account_reads_conform_to_the_pinned_operation(client, sim) -> None:
    account = await client.get_account()
    assert account
    _conforms(sim, "get_accounts")


async def test_webhook_creation_conforms_to_the_pinned_operation(client, sim) -> None:
    sent = _capture(client, "POST", ep.CREATE_WEBHOOK.path)
    topics = [t["id"] for t in await client.get_webhook_topics()][:1]
    webhook_id = await client.create_webhook("Consent feed", "https://hooks.shop.test/k", "s3cret", topics)
    assert webhook_id and sent
    _conforms(sim, "create_webhook", sent)
    _conforms(sim, "get_webhook_topics")
    await client.delete_webhook(webhook_id)
    _conforms(sim, "delete_webhook")


async def test_list_reads_conform_to_the_pinned_operation(client, sim) -> None:
    for i in range(12):  # more than one page of ten
        await client.create_list(f"Pinned read {i}")
    names = [lst["attributes"]["name"] async for lst in client.get_lists()]
    assert len(names) >= 12
    _conforms(sim, "get_lists")


async def test_single_events_conform_to_the_pinned_operation(client, sim) -> None:
    sent = _capture(client, "POST", ep.CREATE_EVENT.path)
    attributes = EVENT_ITEM["attributes"]["events"]["data"][0]["attributes"]
    await client.create_event(
        {"type": "event", "attributes": attributes | {"profile": EVENT_ITEM["attributes"]["profile"]}}
    )
    assert sent
    _conforms(sim, "create_event", sent)


async def test_profile_upserts_conform_to_the_pinned_operation(client, sim) -> None:
    sent = _capture(client, "POST", ep.PROFILE_IMPORT.path)
    profile = {**PROFILE, "location": {"city": "Oslo", "latitude": 59.91}, "phone_number": "+4791234567"}
    await client.import_profile(profile)  # created: 201
    await client.import_profile({**profile, "last_name": "Lund"})  # updated: 200
    assert len(sent) == 2
    assert {a["status"] for a in _answers(sim, "create_or_update_profile")} == {200, 201}
    _conforms(sim, "create_or_update_profile", sent)


async def test_profile_patches_conform_to_the_pinned_operation(client, sim) -> None:
    profile_id = await client.import_profile({"email": "patch@shop.test", "first_name": "Ana"})
    sent = _capture(client, "PATCH", f"/api/profiles/{profile_id}")
    await client.update_profile(profile_id, {"first_name": None, "properties": {"Tier": "gold"}})
    assert sent
    _conforms(sim, "update_profile", sent)


async def test_catalog_item_deletes_conform_to_the_pinned_operation(client, sim) -> None:
    sent = _capture(client, "POST", ep.CATALOG_ITEMS_DELETE.path)
    await client.create_catalog_items([CATALOG_ITEM])
    gone = [{"type": "catalog-item", "id": "$custom:::$default:::SKU-1"}]
    job_id = await client.delete_catalog_items(gone)
    assert job_id and sent
    _conforms(sim, "bulk_delete_catalog_items", sent)
    outcome = BatchOutcome(seq=0, accepted=[1], job_ids=[job_id], job_rows={job_id: [1]})
    await settle(client, ep.CATALOG_ITEMS_DELETE, outcome, first_delay=0.02, max_delay=0.1)
    _conforms(sim, "get_bulk_delete_catalog_items_job")


async def test_catalog_item_updates_conform_to_the_pinned_operation(client, sim) -> None:
    sent = _capture(client, "POST", ep.CATALOG_ITEMS_UPDATE.path)
    await client.create_catalog_items([CATALOG_ITEM])
    change = {"title": "Big mug", "price": 14.0, "published": False, "custom_metadata": {"Top Pick": True}}
    item = {"type": "catalog-item", "id": "$custom:::$default:::SKU-1", "attributes": change}
    job_id = await client.update_catalog_items([item])
    assert job_id and sent
    _conforms(sim, "bulk_update_catalog_items", sent)
    outcome = BatchOutcome(seq=0, accepted=[1], job_ids=[job_id], job_rows={job_id: [1]})
    await settle(client, ep.CATALOG_ITEMS_UPDATE, outcome, first_delay=0.02, max_delay=0.1)
    _conforms(sim, "get_bulk_update_catalog_items_job")


async def test_catalog_variant_deletes_conform_to_the_pinned_operation(client, sim) -> None:
    endpoint = ep.CATALOG_VARIANTS_DELETE
    sent = _capture(client, "POST", endpoint.path)
    await client.create_catalog_items([CATALOG_ITEM])
    await client.create_catalog_variants([VARIANT])
    gone = {"type": "catalog-variant", "id": "$custom:::$default:::SKU-1-RED"}
    for batch in batches([(1, gone)], endpoint):
        assert (await client.send_bulk(endpoint, endpoint.envelope_bytes(batch.items))).id
    assert sent
    _conforms(sim, "bulk_delete_catalog_variants", sent)
    [job_id] = [a["body"]["data"]["id"] for a in _answers(sim, "bulk_delete_catalog_variants")]
    outcome = BatchOutcome(seq=0, accepted=[1], job_ids=[job_id], job_rows={job_id: [1]})
    await settle(client, endpoint, outcome, first_delay=0.02, max_delay=0.1)
    _conforms(sim, "get_bulk_delete_variants_job")


async def test_catalog_category_deletes_conform_to_the_pinned_operation(client, sim) -> None:
    endpoint = ep.CATALOG_CATEGORIES_DELETE
    sent = _capture(client, "POST", endpoint.path)
    await client.create_catalog_categories([CATEGORY])
    gone = {"type": "catalog-category", "id": "$custom:::$default:::mugs"}
    for batch in batches([(1, gone)], endpoint):
        assert (await client.send_bulk(endpoint, endpoint.envelope_bytes(batch.items))).id
    assert sent
    _conforms(sim, "bulk_delete_catalog_categories", sent)
    [job_id] = [a["body"]["data"]["id"] for a in _answers(sim, "bulk_delete_catalog_categories")]
    outcome = BatchOutcome(seq=0, accepted=[1], job_ids=[job_id], job_rows={job_id: [1]})
    await settle(client, endpoint, outcome, first_delay=0.02, max_delay=0.1)
    _conforms(sim, "get_bulk_delete_categories_job")


async def test_catalog_category_update_job_reads_conform_to_the_pinned_operation(client, sim) -> None:
    endpoint = ep.CATALOG_CATEGORIES_UPDATE
    await client.create_catalog_categories([CATEGORY])
    change = {"type": "catalog-category", "id": "$custom:::$default:::mugs", "attributes": {"name": "Cups"}}
    [batch] = list(batches([(1, change)], endpoint))
    job_id = (await client.send_bulk(endpoint, endpoint.envelope_bytes(batch.items))).id
    assert job_id
    outcome = BatchOutcome(seq=0, accepted=[1], job_ids=[job_id], job_rows={job_id: [1]})
    await settle(client, endpoint, outcome, first_delay=0.02, max_delay=0.1)
    _conforms(sim, "get_bulk_update_categories_job")


async def test_catalog_variant_update_job_reads_conform_to_the_pinned_operation(client, sim) -> None:
    endpoint = ep.CATALOG_VARIANTS_UPDATE
    await client.create_catalog_items([CATALOG_ITEM])
    await client.create_catalog_variants([VARIANT])
    change = {"type": "catalog-variant", "id": "$custom:::$default:::SKU-1-RED", "attributes": {"price": 9.5}}
    [batch] = list(batches([(1, change)], endpoint))
    job_id = (await client.send_bulk(endpoint, endpoint.envelope_bytes(batch.items))).id
    assert job_id
    outcome = BatchOutcome(seq=0, accepted=[1], job_ids=[job_id], job_rows={job_id: [1]})
    await settle(client, endpoint, outcome, first_delay=0.02, max_delay=0.1)
    _conforms(sim, "get_bulk_update_variants_job")
