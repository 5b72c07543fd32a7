"""Onsite tracking page: snippets shown as text, warnings that say why, versions pinned to the
mapping versions they were saved with, downloads, and roles."""

from __future__ import annotations

import re
from typing import Any

from models import Role
from sync.mapping import Mapping as Spec
from sync.mapping import Target, TargetKind, column
from sync.onsite import ONSITE_METRICS, OnsiteSpec, Syntax, item_properties
from tests.conftest import unique
from tests.support.runs import add_version, make_mapping
from tests.support.web import post_form


def catalog_spec(id_column: str) -> Spec:
    return Spec(
        name=unique("Products "),
        target=Target(kind=TargetKind.CATALOG_ITEM),
        fields=[column(id_column, "external_id"), column("Title", "title"), column("URL", "url")],
    )


def form_for(spec: OnsiteSpec, catalog_id: int | None = None, action: str = "save") -> dict[str, str]:
    """The page's form fields for a spec, as the browser posts them."""
    data = {"syntax": spec.syntax.value, "action": action, "catalog_mapping": str(catalog_id or "")}
    data.update({f"identify.{k}": v for k, v in spec.identify.items()})
    for i, metric in enumerate(ONSITE_METRICS):
        binding = spec.metrics.get(metric)
        if binding is None:
            continue
        if binding.enabled:
            data[f"m{i}.enabled"] = "on"
        data.update({f"m{i}.f.{k}": v for k, v in binding.fields.items()})
        if item_properties(metric):
            data[f"m{i}.items"] = binding.items_path
            data.update({f"m{i}.i.{k}": v for k, v in binding.item_fields.items()})
    return data


def shop_spec() -> OnsiteSpec:
    from services.onsite import suggested

    spec = suggested(None, None)
    viewed = spec.metrics["Viewed Product"].model_copy(
        update={"fields": {"ProductID": "product.id", "ProductName": "product.title"}}
    )
    return spec.model_copy(update={"metrics": {**spec.metrics, "Viewed Product": viewed}})


def code_blocks(html: str) -> dict[str, str]:
    return dict(re.findall(r'<code data-testid="snippet-([a-z_]+)">(.*?)</code>', html, re.S))


async def test_the_page_is_in_the_navigation_and_shows_snippets_only_as_text(client, as_role):
    await as_role(Role.OPERATOR)
    page = await client.get("/onsite")
    assert page.status_code == 200
    assert '<a href="/onsite"' in page.text and "Onsite tracking" in page.text
    blocks = code_blocks(page.text)
    assert {"loader", "proxy", "identify", "viewed_product", "viewed_item"} <= set(blocks)
    assert "&lt;script" in blocks["loader"] and "klaviyo.identify(" in blocks["identify"]
    # The console runs none of it: its only scripts are its own static files, and no inline style.
    scripts = re.findall(r"<script\b[^>]*>", page.text)
    assert scripts == [
        '<script src="/static/vendor/htmx.min.js" defer>',
        '<script src="/static/app.js" defer>',
    ]
    assert "style=" not in page.text


async def test_a_saved_version_keeps_the_catalog_mapping_version_it_was_checked_against(
    client, as_role, sessionmaker
):
    await as_role(Role.OPERATOR)
    await client.get("/onsite")
    catalog = await make_mapping(sessionmaker, catalog_spec("Handle"))
    saved = await post_form(client, "/onsite/", form_for(shop_spec(), catalog.id), follow_redirects=False)
    assert saved.status_code == 303
    page = await client.get("/onsite")
    version = int(re.search(r"<strong>Version (\d+)</strong>", page.text).group(1))
    warnings = re.search(r'data-testid="onsite-warnings">(.*?)</section>', page.text, re.S).group(1)
    assert "ProductID comes from &#39;product.id&#39;" in warnings
    assert "takes external_id from &#39;Handle&#39;" in warnings
    assert "Recently Viewed Items will not match" in warnings

    # The catalog mapping moves on; the saved version still shows (and downloads) what it was checked with.
    await add_version(sessionmaker, catalog.id, catalog_spec("id"))
    old = await client.get("/onsite", params={"version": version})
    assert (
        f"{catalog.name}</a> version 1" in old.text and "takes external_id from &#39;Handle&#39;" in old.text
    )
    download = await client.get("/onsite/download", params={"version": version})
    assert download.status_code == 200
    assert (
        download.headers["content-disposition"] == f'attachment; filename="klaviyo-onsite-v{version}-js.html"'
    )
    assert f"Snippet set version {version}" in download.text
    assert f"Catalog mapping: {catalog.name} (#{catalog.id}) version 1" in download.text
    assert 'klaviyo.track("Viewed Product", item);' in download.text
    assert '"ProductID": product.id' in download.text

    # Saved again, it follows the catalog mapping's new version, and the warning is gone.
    await post_form(client, "/onsite/", form_for(shop_spec(), catalog.id), follow_redirects=False)
    page = await client.get("/onsite")
    assert f"<strong>Version {version + 1}</strong>" in page.text
    assert f"{catalog.name}</a> version 2" in page.text
    assert "takes external_id from" not in page.text


async def test_liquid_syntax_and_preview_do_not_save(client, as_role):
    await as_role(Role.OPERATOR)
    await client.get("/onsite")
    before = re.search(r"<strong>Version (\d+)</strong>", (await client.get("/onsite")).text)
    spec = shop_spec().model_copy(update={"syntax": Syntax.LIQUID})
    page = await post_form(client, "/onsite/", form_for(spec, action="preview"))
    assert page.status_code == 200
    assert "draft" in page.text
    blocks = code_blocks(page.text)
    assert "{{ product.id | json | replace: &#39;&lt;&#39;" in blocks["viewed_product"]
    after = re.search(r"<strong>Version (\d+)</strong>", (await client.get("/onsite")).text)
    assert (before and before.group(1)) == (after and after.group(1))


async def test_a_bad_binding_is_refused_naming_the_field(client, as_role):
    await as_role(Role.OPERATOR)
    await client.get("/onsite")
    data: dict[str, Any] = form_for(shop_spec())
    data["m0.f.SKU"] = "product.sku; fetch('//evil')"
    answer = await post_form(client, "/onsite/", data)
    assert answer.status_code == 400
    assert (
        "Viewed Product SKU: &#34;product.sku; fetch(&#39;//evil&#39;)&#34; is not a variable path"
        in answer.text
    )
    assert 'value="product.sku; fetch(&#39;//evil&#39;)"' in answer.text
    assert 'data-testid="snippets"' not in answer.text


async def test_viewers_read_but_cannot_save_or_try(client, as_role):
    await as_role(Role.VIEWER)
    page = await client.get("/onsite")
    assert page.status_code == 200 and 'data-testid="save"' not in page.text
    assert (await post_form(client, "/onsite/", form_for(shop_spec()))).status_code == 403
    assert (await post_form(client, "/onsite/try", {"version": "1"})).status_code == 403
