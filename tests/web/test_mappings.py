"""Mappings: versions, duplicate, delete guard, import/export, the studio preview, and roles."""

from __future__ import annotations

import html
import json
import re
from datetime import UTC, datetime

import orjson
import pytest
from litestar.datastructures import FormMultiDict
from sqlmodel import select

from klaviyo import endpoints as ep
from klaviyo.serialization import dumps
from models import AuditEvent, Mapping, MappingVersion, Role, RunSource, RunStatus, SyncRun
from services import mappings, metric_cache
from services.mapping_editor import FormErrors, spec_from_form
from services.metric_cache import MetricCache
from sync import presets
from sync.mapping import Mapping as Spec
from sync.mapping import TargetKind
from sync.pipeline import run_pipeline
from tests.support.env import unique
from tests.support.web import mapping_form_items, post_form, repeated_fields

NOW = datetime(2026, 11, 1, tzinfo=UTC)
SHOPIFY_CSV = """Name,Email,Financial Status,Created at,Currency,Subtotal,Shipping,Taxes,Total,Discount Code,\
Lineitem quantity,Lineitem name,Lineitem price,Lineitem sku,Vendor
#1001,ana@shop.test,paid,2024-03-01 10:15:00 -0500,USD,45.00,5.00,0.00,50.00,,1,Blue Mug,15.00,MUG-BLUE,Acme
#1001,,,,,,,,,,2,Red Mug,15.00,MUG-RED,Acme
#1002,ben@shop.test,paid,2024-03-02,EUR,20.00,0,0,20.00,SPRING,1,Tea Towel,20.00,TOWEL-1,Linen Co
"""


def shopify_spec(name: str = "Shopify placed orders") -> Spec:
    return presets.shopify_orders_mapping().model_copy(update={"name": name})


# ---------------------------------------------------------------- service: versions and guards


async def test_create_save_versions_never_mutate_old_ones(sessionmaker):
    async with sessionmaker() as db:
        mapping = await mappings.create_mapping(db, shopify_spec(unique("orders-")))
        first = await mappings.get_version(db, mapping)
        assert first is not None and first.version == 1 and mapping.current_version == 1
        changed = mappings.spec_of(first).model_copy(
            update={"options": mappings.spec_of(first).options.model_copy(update={"default_currency": "EUR"})}
        )
        second = await mappings.save_version(db, mapping, changed)
        await db.commit()
        assert second.version == 2 and mapping.current_version == 2
        again = await mappings.get_version(db, mapping, 1)
        assert again is not None and again.spec["options"]["default_currency"] is None
        assert second.spec["options"]["default_currency"] == "EUR" and second.spec["version"] == 2
        assert [v.version for v, _ in await mappings.list_versions(db, mapping)] == [2, 1]


async def test_duplicate_copies_the_current_version_under_a_new_name(sessionmaker):
    async with sessionmaker() as db:
        original = await mappings.create_mapping(db, shopify_spec(unique("dup-")))
        copy = await mappings.duplicate_mapping(db, original)
        again = await mappings.duplicate_mapping(db, original)
        await db.commit()
        assert copy.name == f"Copy of {original.name}" and again.name == f"Copy of {original.name} (2)"
        copied = await mappings.get_version(db, copy)
        assert (
            copied is not None
            and copied.version == 1
            and copied.spec["fields"]
            == (
                (await mappings.get_version(db, original)).spec["fields"]  # type: ignore[union-attr]
            )
        )


async def test_delete_is_refused_while_a_run_used_a_version(sessionmaker):
    async with sessionmaker() as db:
        used = await mappings.create_mapping(db, shopify_spec(unique("used-")))
        version = await mappings.get_version(db, used)
        assert version is not None
        db.add(
            SyncRun(
                kind="order",
                source=RunSource.UPLOAD,
                status=RunStatus.COMPLETED,
                mapping_version_id=version.id,
            )
        )
        unused = await mappings.create_mapping(db, shopify_spec(unique("unused-")))
        await db.commit()
        with pytest.raises(mappings.MappingsError, match="used by 1 run"):
            await mappings.delete_mapping(db, used)
        await mappings.delete_mapping(db, unused)
        await db.commit()
        assert await mappings.get_mapping(db, unused.id or 0) is None  # soft-deleted
        assert (await db.get(Mapping, unused.id)).deleted is True  # type: ignore[union-attr]
        listed = {s.mapping.id: s.runs for s in await mappings.list_mappings(db)}
        assert listed[used.id] == 1 and unused.id not in listed


async def test_export_import_round_trip_and_field_named_errors(sessionmaker):
    async with sessionmaker() as db:
        mapping = await mappings.create_mapping(db, shopify_spec(unique("export-")))
        version = await mappings.get_version(db, mapping)
        assert version is not None
        filename, text = mappings.export_json(version)
        assert filename.startswith("mapping-export-") and filename.endswith("-v1.json")
        imported = await mappings.import_mapping(db, text)
        await db.commit()
        copy = await mappings.get_version(db, imported)
        assert copy is not None
        assert Spec.model_validate(copy.spec).fields == mappings.spec_of(version).fields
        assert imported.name == f"{mapping.name} (2)"
    broken = json.loads(text)
    broken["fields"][2]["source"] = {"kind": "template", "template": "no fields"}
    broken["options"]["default_currency"] = "euro"
    with pytest.raises(mappings.MappingsError) as info:
        mappings.parse_spec_json(json.dumps(broken))
    assert "Field 3 (time)" in str(info.value) and "needs at least one {column}" in str(info.value)
    assert "Option default currency: must be a three-letter ISO currency code" in str(info.value)
    with pytest.raises(mappings.MappingsError, match="not valid JSON"):
        mappings.parse_spec_json("{nope")
    wrong_target = json.loads(text)
    wrong_target["fields"][0]["target"] = "colour"
    with pytest.raises(mappings.MappingsError, match="cannot send colour"):
        mappings.parse_spec_json(json.dumps(wrong_target))


# ---------------------------------------------------------------- service: preview


def test_preview_body_is_byte_for_byte_what_pipeline_and_envelope_produce():
    spec = shopify_spec()
    sample = mappings.sample_from_text(SHOPIFY_CSV)
    assert sample.columns[:3] == ["Name", "Email", "Financial Status"] and len(sample.rows) == 3
    result = mappings.preview(spec, sample.rows, now=NOW)
    expected = list(run_pipeline(spec, sample.rows, now=NOW))
    assert [r.result.row_ref for r in result.rows] == [1, 3]  # the first order spans rows 1-2
    for shown, built in zip(result.rows, expected, strict=True):
        body = ep.BULK_EVENTS.envelope_bytes([dumps(item) for item in built.items])
        assert shown.body == body
        assert orjson.loads(shown.pretty or "") == orjson.loads(body)
        assert body == dumps(ep.BULK_EVENTS.envelope(built.items))
    first = orjson.loads(result.rows[0].body or b"")["data"]["attributes"]["events-bulk-create"]["data"]
    assert [
        e["attributes"]["events"]["data"][0]["attributes"]["metric"]["data"]["attributes"]["name"]
        for e in first
    ] == [
        "Placed Order",
        "Ordered Product",
        "Ordered Product",
    ]
    assert result.counts == {"rows": 3, "results": 2, "ok": 3, "rejected": 0, "skipped": 0, "items": 5}
    second = result.rows[1].result
    assert [w.rule for w in second.warnings] == ["date_without_time"]


def test_preview_names_new_metrics_and_the_limit():
    spec = shopify_spec()
    rows = mappings.sample_from_text(SHOPIFY_CSV).rows
    known = mappings.preview(spec, rows, existing_metrics=["Placed Order", "Ordered Product"], now=NOW)
    assert known.new_metrics == [] and "new_metric" not in {i.rule for i in known.mapping_issues}
    crowded = [f"Metric {n}" for n in range(199)]
    full = mappings.preview(spec, rows, existing_metrics=crowded, now=NOW)
    assert full.new_metrics == ["Placed Order", "Ordered Product"]
    assert {"new_metric", "metric_limit"} <= {i.rule for i in full.mapping_issues}


def test_preview_uses_each_targets_envelope():
    profile = Spec.model_validate(
        {
            "name": "p",
            "target": {"kind": "profile", "list_id": "LIST1"},
            "fields": [{"source": {"kind": "column", "column": "Email"}, "target": "email"}],
        }
    )
    result = mappings.preview(profile, [(1, {"Email": "a@shop.test"})])
    body = orjson.loads(result.rows[0].body or b"")
    assert body["data"]["type"] == "profile-bulk-import-job"
    assert body["data"]["relationships"]["lists"]["data"] == [{"type": "list", "id": "LIST1"}]
    assert result.shape is not None and result.shape.path == "/api/profile-bulk-import-jobs"
    external_only = profile.model_copy(
        update={"fields": [profile.fields[0].model_copy(update={"target": "external_id"})]}
    )
    issues = mappings.preview(external_only, [(1, {"Email": "x1"})]).mapping_issues
    assert [i.rule for i in issues] == ["external_id_only"]


def test_studio_form_round_trips_a_spec_losslessly():
    for spec in (
        shopify_spec(),
        presets.ecommerce_event_mapping("Product Added"),
        presets.woocommerce_orders_mapping(),
    ):
        form = FormMultiDict(mapping_form_items(spec))
        assert spec_from_form(form).model_dump() == spec.model_dump()


def test_studio_form_errors_name_the_field():
    spec = shopify_spec()
    items = mapping_form_items(spec)
    items = [(k, "template" if k == "f-x0-source_kind" else v) for k, v in items]
    items = [(k, "nothing here" if k == "f-x0-source" else v) for k, v in items]
    with pytest.raises(FormErrors) as info:
        spec_from_form(FormMultiDict(items))
    assert info.value.messages == [
        "Field 1 (properties.OrderId) source: a template needs at least one {column}"
    ]


# ---------------------------------------------------------------- HTTP


async def _create(client, what: str = "order:Placed Order", **extra: str):
    await client.get("/mappings/")
    response = await post_form(
        client,
        "/mappings/",
        {"what": what, "source": "auto", "name": unique("m-"), **extra},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    return int(response.headers["location"].rsplit("/", 1)[-1])


async def _studio_form(client, mapping_id: int) -> list[tuple[str, str]]:
    """Read the studio page's form fields back, as the browser would post them."""
    page = (await client.get(f"/mappings/{mapping_id}")).text
    form = page[page.index('<form id="studio"') : page.index("</form>", page.index('<form id="studio"'))]
    items: list[tuple[str, str]] = []
    for tag in re.finditer(
        r"<(input|select|textarea)\b([^>]*)>(.*?)(?=<(?:input|select|textarea)\b|$)", form, re.S
    ):
        kind, attrs, rest = tag.groups()
        name = re.search(r'\bname="([^"]*)"', attrs)
        if not name:
            continue
        if kind == "input":
            typ = re.search(r'\btype="([^"]*)"', attrs)
            if typ and typ.group(1) == "checkbox" and "checked" not in attrs:
                continue
            value = re.search(r'\bvalue="([^"]*)"', attrs)
            items.append((name.group(1), _unescape(value.group(1)) if value else ""))
        elif kind == "select":
            chosen = re.search(r'<option value="([^"]*)"[^>]*selected', rest)
            items.append((name.group(1), _unescape(chosen.group(1)) if chosen else ""))
        else:
            items.append((name.group(1), _unescape(rest.split("</textarea>", 1)[0])))
    return items


def _unescape(text: str) -> str:
    return html.unescape(text)


async def test_operator_creates_from_a_sample_and_the_studio_preview_matches_the_pipeline(client, as_role):
    await as_role(Role.OPERATOR)
    mapping_id = await _create(client, sample_text=SHOPIFY_CSV)
    page = await client.get(f"/mappings/{mapping_id}")
    assert page.status_code == 200
    assert 'data-testid="json"' in page.text and "Lineitem sku" in page.text
    items = await _studio_form(client, mapping_id)
    # Change the currency option: the preview JSON follows.
    items = [(k, v) for k, v in items if k != "opt-default_currency"] + [("opt-default_currency", "cad")]
    spec = spec_from_form(FormMultiDict(items))
    assert spec.options.default_currency == "CAD"
    preview = await client.post(
        f"/mappings/{mapping_id}/preview",
        data=repeated_fields(items),
        headers={"x-csrftoken": client.cookies["kc_csrf"]},
    )
    assert preview.status_code == 200
    built = list(run_pipeline(spec, mappings.sample_from_text(SHOPIFY_CSV).rows))
    body = ep.BULK_EVENTS.envelope_bytes([dumps(item) for item in built[0].items])
    shown = re.search(r'<pre class="kc-json" data-testid="json">(.*?)</pre>', preview.text, re.S)
    assert shown is not None
    assert orjson.loads(_unescape(shown.group(1))) == orjson.loads(body)
    assert 'id="columns" hx-swap-oob="true"' in preview.text and "note-" in preview.text


async def test_save_duplicate_delete_and_audit_over_http(client, as_role, sessionmaker):
    await as_role(Role.OPERATOR)
    mapping_id = await _create(client, what="event:Viewed Product")
    items = await _studio_form(client, mapping_id)
    saved = await client.post(
        f"/mappings/{mapping_id}/versions",
        data=repeated_fields(items),
        headers={"x-csrftoken": client.cookies["kc_csrf"]},
    )
    assert saved.status_code == 200 and "Saved as version 2" in saved.text
    bad = [(k, "") if k == "name" else (k, v) for k, v in items]
    refused = await client.post(
        f"/mappings/{mapping_id}/versions",
        data=repeated_fields(bad),
        headers={"x-csrftoken": client.cookies["kc_csrf"]},
    )
    assert refused.status_code == 400 and "Not saved" in refused.text and "Name:" in refused.text
    duplicated = await post_form(client, f"/mappings/{mapping_id}/duplicate")
    copy_id = int(duplicated.headers["hx-redirect"].rsplit("/", 1)[-1])
    export = await client.get(f"/mappings/{mapping_id}/export")
    assert export.headers["content-disposition"].startswith('attachment; filename="mapping-')
    assert Spec.from_json(export.text).version == 2
    deleted = await post_form(client, f"/mappings/{copy_id}/delete")
    assert deleted.headers["hx-redirect"] == "/mappings"
    assert (await client.get(f"/mappings/{copy_id}")).status_code == 404
    async with sessionmaker() as db:
        actions = (await db.exec(select(AuditEvent.action).where(AuditEvent.target.like("%m-%")))).all()  # type: ignore[union-attr]
        versions = (
            await db.exec(select(MappingVersion).where(MappingVersion.mapping_id == mapping_id))
        ).all()
    assert {"mapping.create", "mapping.save", "mapping.duplicate", "mapping.delete"} <= set(actions)
    assert sorted(v.version for v in versions) == [1, 2]


async def test_import_over_http_reports_the_field_at_fault(client, as_role):
    await as_role(Role.OPERATOR)
    await client.get("/mappings/")
    good = shopify_spec(unique("imported-")).to_json()
    ok = await post_form(client, "/mappings/import", {"json": good}, follow_redirects=False)
    assert ok.status_code == 303
    broken = json.loads(good)
    del broken["target"]
    refused = await post_form(client, "/mappings/import", {"json": json.dumps(broken)})
    assert refused.status_code == 400 and "Not imported: Target: is missing" in refused.text


async def test_delete_guard_over_http(client, as_role, sessionmaker):
    await as_role(Role.OPERATOR)
    mapping_id = await _create(client)
    async with sessionmaker() as db:
        version = (await db.exec(select(MappingVersion).where(MappingVersion.mapping_id == mapping_id))).one()
        db.add(SyncRun(kind="order", status=RunStatus.COMPLETED, mapping_version_id=version.id))
        await db.commit()
    refused = await post_form(client, f"/mappings/{mapping_id}/delete")
    assert refused.status_code == 409 and "cannot be deleted" in refused.text
    index = await client.get("/mappings/")
    assert "Placed Order" in index.text


async def test_viewer_reads_and_previews_but_every_write_is_refused(client, as_role):
    await as_role(Role.OPERATOR)
    mapping_id = await _create(client, sample_text=SHOPIFY_CSV)
    items = await _studio_form(client, mapping_id)
    await as_role(Role.VIEWER)
    page = await client.get(f"/mappings/{mapping_id}")
    assert page.status_code == 200 and "saving needs the operator role" in page.text
    assert 'data-testid="save"' not in page.text
    token = {"x-csrftoken": client.cookies["kc_csrf"]}
    assert (
        await client.post(f"/mappings/{mapping_id}/preview", data=repeated_fields(items), headers=token)
    ).status_code == 200
    for url in (
        "/mappings/",
        "/mappings/import",
        f"/mappings/{mapping_id}/versions",
        f"/mappings/{mapping_id}/duplicate",
        f"/mappings/{mapping_id}/delete",
        "/mappings/metrics/refresh",
    ):
        response = await client.post(url, data=repeated_fields(items), headers=token)
        assert response.status_code == 403, url


async def test_metric_cache_feeds_the_studio(client, as_role, redis_client, sessionmaker):
    await as_role(Role.OPERATOR)
    mapping_id = await _create(client, sample_text=SHOPIFY_CSV)
    async with sessionmaker() as db:
        from services.accounts import get_account

        account = await get_account(db)
        await db.commit()
    await metric_cache.write(redis_client, account.id, ["Placed Order", "Viewed Product"])
    try:
        page = await client.get(f"/mappings/{mapping_id}")
        assert "Account metrics: <strong>2</strong> of 200" in page.text
        assert "Ordered Product is not a metric in the Klaviyo account yet" in page.text
        assert "Placed Order is not a metric" not in page.text
    finally:
        await redis_client.delete(metric_cache.cache_key(account.id))
    cache = await metric_cache.read(redis_client, account.id)
    assert cache == MetricCache(names=[], fetched_at=None, error=None, refreshing=False)


def test_new_spec_presets():
    headers = mappings.sample_from_text(SHOPIFY_CSV).columns
    assert mappings.new_spec("", TargetKind.ORDER, "Placed Order", "auto", headers).name.startswith("Shopify")
    refunded = mappings.new_spec("R", TargetKind.ORDER, "Refunded Order", "shopify_orders")
    assert refunded.options.order_metric == "Refunded Order" and refunded.options.line_metric is None
    spec_event = mappings.new_spec("", TargetKind.EVENT, "Added to Cart", "ecommerce_spec")
    assert spec_event.target.metric == "Added to Cart" and spec_event.fields[0].source.kind == "path"
    spec_order = mappings.new_spec("", TargetKind.ORDER, "Placed Order", "ecommerce_spec")
    assert (spec_order.options.order_metric, spec_order.options.line_metric) == (
        "Placed Order",
        "Ordered Product",
    )
    assert spec_order.options.line_items_path == "properties.products"
    with pytest.raises(mappings.MappingsError, match="order metrics as order mappings"):
        mappings.new_spec("", TargetKind.EVENT, "Placed Order", "ecommerce_spec")
    suggested = mappings.new_spec(
        "x", TargetKind.PROFILE, None, "auto", ["E-mail Address", "Phone", "First Name"]
    )
    assert suggested.targets() == ["email", "phone_number", "first_name"]
    for kind in TargetKind:
        metric = (
            "Viewed Product"
            if kind is TargetKind.EVENT
            else ("Placed Order" if kind is TargetKind.ORDER else None)
        )
        spec = mappings.new_spec("", kind, metric, "blank")
        mappings.check_runnable(spec)


async def test_samples_from_uploads_json_and_suggestions(client, as_role, sessionmaker):
    from models import Upload, UploadStatus

    await as_role(Role.OPERATOR)
    async with sessionmaker() as db:
        upload = Upload(
            filename="views.csv",
            stored_as="x",
            status=UploadStatus.READY,
            headers=["E-mail Address", "Viewed At", "Product Name", "Price", "Mobile"],
            preview=[
                {
                    "E-mail Address": "a@shop.test",
                    "Viewed At": "2024-05-01 10:00",
                    "Product Name": "Mug",
                    "Price": "9",
                    "Mobile": "+1 415 555 0100",
                }
            ],
            row_count=1,
        )
        db.add(upload)
        await db.commit()
    mapping_id = await _create(
        client, what="event:Viewed Product", source="blank", sample_upload=str(upload.id)
    )
    page = await client.get(f"/mappings/{mapping_id}")
    assert "views.csv (first 1 of 1 rows)" in page.text
    # Viewed Product's standard fields read "Email" and "ProductName": they adopt the upload's own headers.
    assert 'value="E-mail Address"' in page.text and 'value="Product Name"' in page.text
    assert "+ phone_number" in page.text  # "Mobile" is unmapped and means the phone: offered
    assert "the sample has no column &#39;Time&#39;" in page.text  # the preset's Time column is not there
    rule = await client.get(
        "/mappings/rule", params={"kind": "event", "column": "Price", "target": "properties.ItemPrice"}
    )
    assert 'value="Price"' in rule.text and 'value="number" selected' in rule.text

    spec_sample = json.dumps(
        [
            {
                "event": "Product Added",
                "messageId": "m-1",
                "timestamp": "2024-05-01T10:00:00Z",
                "context": {"traits": {"email": "ana@shop.test"}},
                "properties": {"product_id": "P1", "name": "Mug", "price": 9.5, "quantity": 2, "value": 19},
            }
        ]
    )
    sample = mappings.sample_from_text(spec_sample)
    assert "context.traits.email" in sample.columns and sample.examples("properties.price") == ["9.5"]
    spec = presets.ecommerce_event_mapping("Product Added")
    result = mappings.preview(spec, sample.rows, now=NOW)
    assert result.counts["items"] == 1 and not result.rows[0].result.errors
    notes = mappings.field_notes(spec, sample.rows[0][1])
    assert notes[0].value == '"ana@shop.test"'


def test_pasted_csv_problems_are_reported():
    broken = mappings.sample_from_text("Email,Email\na,b\n")
    assert broken.empty and "appears twice" in broken.problems[0]
    short = mappings.sample_from_text("Email,Total\na@shop.test\n")
    assert len(short.rows) == 1 and "treated as missing" in short.problems[0]
