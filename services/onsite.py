"""Onsite tracking: the stored snippet sets (one version per save), the form they come from, the
mappings they follow, the download, and "Try it" pages hosted by the sandbox simulator.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping as AnyMapping
from dataclasses import dataclass
from html import escape
from typing import Any

import httpx
from pydantic import ValidationError
from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from config.settings import Settings
from models import Account, Mapping, MappingVersion, OnsiteSnippetSet, User
from models.base import utcnow
from sync import onsite
from sync.mapping import ColumnSource, PathSource, TargetKind, parse_path
from sync.mapping import Mapping as Spec
from sync.onsite import BindingError, Finding, MetricBinding, OnsiteSpec, Snippet, Syntax

SANDBOX_PUBLIC_KEY = "SBX000"
ONSITE_METRICS_SERVER = ("Viewed Product", "Added to Cart", "Started Checkout")
CATALOG_KINDS = (TargetKind.CATALOG_ITEM.value, TargetKind.CATALOG_VARIANT.value)


class OnsiteError(ValueError):
    """The form or an action was refused; the message says what to change."""


@dataclass(frozen=True)
class Source:
    """A mapping (at one version) the snippets are checked against."""

    mapping: Mapping
    version: int
    spec: Spec


@dataclass(frozen=True)
class View:
    """Everything the page shows for one spec."""

    spec: OnsiteSpec
    snippets: list[Snippet]
    findings: list[Finding]
    public_key: str
    catalog: Source | None
    orders: Source | None
    header: list[str]


# ---------------------------------------------------------------- reading


async def latest(db: AsyncSession) -> OnsiteSnippetSet | None:
    """The newest saved snippet set."""
    query = select(OnsiteSnippetSet).order_by(col(OnsiteSnippetSet.version).desc()).limit(1)
    return (await db.exec(query)).first()


async def get_set(db: AsyncSession, version: int) -> OnsiteSnippetSet | None:
    """One saved version."""
    query = select(OnsiteSnippetSet).where(OnsiteSnippetSet.version == version)
    return (await db.exec(query)).first()


async def history(db: AsyncSession, limit: int = 20) -> list[OnsiteSnippetSet]:
    """Saved versions, newest first."""
    query = select(OnsiteSnippetSet).order_by(col(OnsiteSnippetSet.version).desc()).limit(limit)
    return list((await db.exec(query)).all())


async def mappings_of(db: AsyncSession, kinds: tuple[str, ...]) -> list[Mapping]:
    """Live mappings of these kinds, by name."""
    query = (
        select(Mapping)
        .where(col(Mapping.deleted).is_(False), col(Mapping.target_kind).in_(kinds))
        .order_by(col(Mapping.name))
    )
    return list((await db.exec(query)).all())


async def source_at(db: AsyncSession, mapping_id: int | None, version: int | None) -> Source | None:
    if not mapping_id:
        return None
    mapping = await db.get(Mapping, mapping_id)
    if mapping is None:
        return None
    wanted = version or mapping.current_version
    query = select(MappingVersion).where(
        MappingVersion.mapping_id == mapping.id, MappingVersion.version == wanted
    )
    row = (await db.exec(query)).first()
    if row is None:
        return None
    return Source(mapping, wanted, Spec.model_validate(row.spec))


def download_text(view: View) -> str:
    """The snippets as one file, headed by the version and the mapping versions they follow."""
    return onsite.download_text(view.snippets, view.header, view.spec)


def public_key(account: Account) -> str:
    """The company id the loader uses: the sandbox's, or the key saved on the Connection page."""
    if account.sandbox:
        return SANDBOX_PUBLIC_KEY
    if not account.public_key:
        raise OnsiteError(
            "The connected account has no public API key (site id): add it on the Connection page "
            "(Klaviyo: Settings > API keys, six characters)."
        )
    return account.public_key


def script_host(account: Account, settings: Settings) -> str:
    """Where klaviyo.js comes from: the sandbox simulator for the sandbox, Klaviyo otherwise."""
    return settings.sandbox_url if account.sandbox else onsite.SCRIPT_HOST


async def view(
    db: AsyncSession,
    account: Account,
    settings: Settings,
    spec: OnsiteSpec,
    catalog_id: int | None,
    order_id: int | None,
    saved: OnsiteSnippetSet | None = None,
) -> View:
    """Generate and check the snippets; a saved set pins the mapping versions it was saved with."""
    catalog = await source_at(db, catalog_id, saved.catalog_mapping_version if saved else None)
    orders = await source_at(db, order_id, saved.order_mapping_version if saved else None)
    key = public_key(account)
    snippets = onsite.generate(spec, key, script_host(account, settings))
    findings = onsite.check(spec, catalog.spec if catalog else None, orders.spec if orders else None)
    header = [f"Klaviyo onsite tracking snippets, {onsite.SYNTAX_LABELS[spec.syntax]}"]
    if saved:
        header.append(f"Snippet set version {saved.version}, saved {saved.created_at:%Y-%m-%d %H:%M} UTC")
    else:
        header.append("Unsaved draft")
    for label, source in (("Catalog mapping", catalog), ("Order mapping", orders)):
        if source:
            header.append(f"{label}: {source.mapping.name} (#{source.mapping.id}) version {source.version}")
    header.append(f"Public API key (company id): {key}")
    return View(spec, snippets, findings, key, catalog, orders, header)


# ---------------------------------------------------------------- writing


async def save(
    db: AsyncSession,
    spec: OnsiteSpec,
    catalog_id: int | None,
    order_id: int | None,
    user: User | None,
) -> OnsiteSnippetSet:
    """Store the spec as the next version, with the current versions of the chosen mappings."""
    catalog = await source_at(db, catalog_id, None)
    orders = await source_at(db, order_id, None)
    top = (await db.exec(select(func.max(OnsiteSnippetSet.version)))).one()
    row = OnsiteSnippetSet(
        version=int(top or 0) + 1,
        spec=spec.model_dump(mode="json"),
        catalog_mapping_id=catalog.mapping.id if catalog else None,
        catalog_mapping_version=catalog.version if catalog else None,
        order_mapping_id=orders.mapping.id if orders else None,
        order_mapping_version=orders.version if orders else None,
        created_by=user.id if user else None,
        created_at=utcnow(),
    )
    db.add(row)
    await db.flush()
    return row


def spec_of(row: OnsiteSnippetSet) -> OnsiteSpec:
    """The stored spec."""
    return OnsiteSpec.model_validate(row.spec)


# ---------------------------------------------------------------- the form


def parse_form(form: AnyMapping[str, Any]) -> tuple[OnsiteSpec, int | None, int | None]:
    """Read the page's form: syntax, legacy, identify.<field>, m.<metric>.enabled / .f.<property> /
    .items / .i.<item key>, catalog_mapping, order_mapping."""
    syntax = str(form.get("syntax") or "js")
    if syntax not in {s.value for s in Syntax}:
        raise OnsiteError(f"Unknown template syntax {syntax!r}.")
    identify = {
        name: str(form.get(f"identify.{name}", "")).strip()
        for name in onsite.IDENTIFY_FIELDS
        if str(form.get(f"identify.{name}", "")).strip()
    }
    metrics: dict[str, MetricBinding] = {}
    for index, metric in enumerate(onsite.ONSITE_METRICS):
        prefix = f"m{index}."
        fields = {
            name: str(form.get(f"{prefix}f.{name}", "")).strip()
            for name in onsite.metric_properties(metric)
            if str(form.get(f"{prefix}f.{name}", "")).strip()
        }
        items = {
            name: str(form.get(f"{prefix}i.{name}", "")).strip()
            for name in onsite.item_properties(metric)
            if str(form.get(f"{prefix}i.{name}", "")).strip()
        }
        metrics[metric] = MetricBinding(
            enabled=form.get(f"{prefix}enabled") in ("on", "1", "true"),
            fields=fields,
            items_path=str(form.get(f"{prefix}items", "")).strip(),
            item_fields=items,
        )
    try:
        spec = OnsiteSpec(
            syntax=Syntax(syntax),
            legacy=form.get("legacy") in ("on", "1", "true"),
            identify=identify,
            metrics=metrics,
        )
    except ValidationError as exc:
        raise OnsiteError(exc.errors()[0]["msg"]) from None
    return spec, _int(form.get("catalog_mapping")), _int(form.get("order_mapping"))


def _int(value: Any) -> int | None:
    text = str(value or "").strip()
    return int(text) if text.isdigit() else None


def validate(spec: OnsiteSpec) -> None:
    """Generate once to surface a bad binding as an OnsiteError naming the field."""
    try:
        onsite.generate(spec, SANDBOX_PUBLIC_KEY)
    except BindingError as exc:
        raise OnsiteError(str(exc)) from None


# ---------------------------------------------------------------- defaults from the mappings


def _store_name(source: str) -> str:
    """A CSV header or record path as a template variable name: 'Lineitem sku' -> lineitem_sku."""
    try:
        last = [p for p in parse_path(source) if isinstance(p, str)][-1]
    except (ValueError, IndexError):
        last = source
    name = re.sub(r"[^A-Za-z0-9_]+", "_", last.strip()).strip("_").lower()
    return name if name and not name[0].isdigit() else f"f_{name}"


def _field_source(spec: Spec, target: str) -> str | None:
    for rule in spec.fields:
        if rule.target == target and isinstance(rule.source, ColumnSource | PathSource):
            return rule.source.column if isinstance(rule.source, ColumnSource) else rule.source.path
    return None


_CATALOG_TO_VIEWED = {
    "external_id": "ProductID",
    "title": "ProductName",
    "url": "URL",
    "image_full_url": "ImageURL",
    "price": "Price",
}


def suggested(catalog: Spec | None, orders: Spec | None) -> OnsiteSpec:
    """A first spec whose variables follow the mappings' own field names (product.<field>,
    line.<field>), so ProductID starts from the catalog's external id."""
    viewed: dict[str, str] = {}
    if catalog is not None:
        for attribute, prop in _CATALOG_TO_VIEWED.items():
            source = _field_source(catalog, attribute)
            if source:
                viewed[prop] = f"product.{_store_name(source)}"
    line: dict[str, str] = {}
    if orders is not None:
        for key in onsite.item_properties("Started Checkout"):
            target = "item.Categories" if key == "ProductCategories" else f"item.{key}"
            source = _field_source(orders, target)
            if source:
                line[key] = _store_name(source)
    viewed.setdefault("ProductID", "product.id")
    added = {
        "$value": "cart.total",
        "AddedItemProductID": viewed["ProductID"],
        "CheckoutURL": "cart.checkout_url",
    }
    if "ProductName" in viewed:
        added["AddedItemProductName"] = viewed["ProductName"]
    checkout = {"$event_id": "cart.id", "$value": "cart.total", "CheckoutURL": "cart.checkout_url"}
    items = line or {"ProductID": "product_id", "ProductName": "title", "Quantity": "quantity"}
    return OnsiteSpec(
        identify={"email": "customer.email", "first_name": "customer.first_name"},
        metrics={
            "Viewed Product": MetricBinding(fields=viewed),
            "Added to Cart": MetricBinding(fields=added, items_path="cart.items", item_fields=items),
            "Started Checkout": MetricBinding(fields=checkout, items_path="cart.items", item_fields=items),
            "Viewed Category": MetricBinding(enabled=False),
            "Searched Site": MetricBinding(enabled=False),
            "Clicked Banner": MetricBinding(enabled=False),
        },
    )


# ---------------------------------------------------------------- Try it (sandbox)

_SAMPLE = {
    "ProductID": "SBX-TEE-1",
    "ProductName": 'Sandbox Tee "Classic" </script>',
    "SKU": "TEE-CLASSIC-M",
    "Categories": ["Apparel", "Tees"],
    "ImageURL": "https://shop.sandbox.test/img/tee.png",
    "URL": "https://shop.sandbox.test/products/tee",
    "Brand": "Sandbox Co",
    "Price": 19.5,
    "CompareAtPrice": 25.0,
    "Quantity": 2,
    "ItemPrice": 19.5,
    "RowTotal": 39.0,
    "$value": 39.0,
    "$event_id": "cart-1001",
    "CheckoutURL": "https://shop.sandbox.test/checkout",
}
DEMO_EMAIL = "onsite.demo@sandbox.test"


def _sample_for(prop: str) -> Any:
    bare = prop.removeprefix("AddedItem").removeprefix("Product") if prop not in _SAMPLE else prop
    for key in (prop, bare, f"Product{bare}"):
        if key in _SAMPLE:
            return _SAMPLE[key]
    if prop in ("ProductURL",):
        return _SAMPLE["URL"]
    if prop.endswith("Categories"):
        return _SAMPLE["Categories"]
    return f"sample {prop}"


def _put(store: Any, path: str, value: Any) -> None:
    """Set ``value`` at a store path, creating objects and lists on the way (conflicts are skipped)."""
    parts = parse_path(onsite.store_path(path))
    node = store
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        fresh: Any = [] if not last and isinstance(parts[i + 1], int) else {}
        if isinstance(part, int):
            if not isinstance(node, list):
                return
            node.extend([None] * (part + 1 - len(node)))
        elif not isinstance(node, dict):
            return
        if last:
            node[part] = value
            return
        if not isinstance(node[part] if isinstance(part, int) else node.get(part), dict | list):
            node[part] = fresh
        node = node[part]


def sample_store(spec: OnsiteSpec) -> dict[str, Any]:
    """Page variables for the demo: a sample value at every bound path, two cart lines."""
    store: dict[str, Any] = {}
    identify = {
        "email": DEMO_EMAIL,
        "first_name": "Onsite",
        "last_name": "Demo",
        "phone_number": "+15005550006",
    }
    for name, path in spec.identify.items():
        if path and not _literal(path):
            _put(store, path, identify.get(name, f"sample {name}"))
    for binding in spec.metrics.values():
        for prop, path in binding.fields.items():
            if path and not _literal(path):
                _put(store, path, _sample_for(prop))
        if binding.items_path and not _literal(binding.items_path):
            lines = []
            for n in (1, 2):
                line: dict[str, Any] = {}
                for key, field in binding.item_fields.items():
                    if field and not _literal(field):
                        value = _sample_for(key)
                        _put(line, field, f"{value}-{n}" if key in ("ProductID", "SKU") else value)
                lines.append(line)
            _put(store, binding.items_path, lines)
    return store


def _literal(binding: str) -> bool:
    return binding.strip()[:1] in "\"'[{-0123456789" or binding.strip() in ("true", "false", "null")


DEMO_PAGES = {
    "product": ("Product page", ("viewed_product", "viewed_item")),
    "cart": ("Cart", ("added_to_cart",)),
    "checkout": ("Checkout", ("started_checkout",)),
}


def _plain_js(spec: OnsiteSpec) -> OnsiteSpec:
    """The spec in plain JavaScript: template filters dropped (the demo's variables already hold
    the values the filters would produce)."""

    def bare(fields: dict[str, str]) -> dict[str, str]:
        return {k: v if _literal(v) else onsite.store_path(v) for k, v in fields.items()}

    metrics = {
        name: b.model_copy(
            update={
                "fields": bare(b.fields),
                "item_fields": bare(b.item_fields),
                "items_path": onsite.store_path(b.items_path),
            }
        )
        for name, b in spec.metrics.items()
    }
    return spec.model_copy(update={"syntax": Syntax.JS, "identify": bare(spec.identify), "metrics": metrics})


def _script_json(value: Any) -> str:
    return json.dumps(value).replace("<", "\\u003c")


def demo_pages(spec: OnsiteSpec, sandbox_url: str) -> dict[str, str]:
    """Three store pages running the snippets in plain JavaScript against the sandbox."""
    js_spec = _plain_js(spec)
    snippets = {s.key: s.code for s in onsite.generate(js_spec, SANDBOX_PUBLIC_KEY, sandbox_url)}
    store = sample_store(js_spec)
    # Page variables as the store would print them; '<' escaped so a value cannot end the script.
    variables = "\n".join(f"var {name} = {_script_json(value)};" for name, value in store.items())
    shown = escape(json.dumps(store, indent=2, ensure_ascii=False))
    pages = {}
    nav = " · ".join(f'<a href="{key}" id="go-{key}">{title}</a>' for key, (title, _) in DEMO_PAGES.items())
    for key, (title, keys) in DEMO_PAGES.items():
        parts = [snippets.get(k, "") for k in ("proxy", "identify", *keys)]
        body = "\n".join(p for p in parts if p)
        pages[key] = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)} · Sandbox store (Try it)</title></head>
<body>
<h1 id="page-title">{escape(title)}</h1>
<p>Demo store page served by the Klaviyo sandbox, running the generated onsite snippets. {nav}</p>
<p>Calls made by klaviyo.js: <output id="kl-status">waiting</output></p>
<pre id="kl-log"></pre>
<h2>Page variables</h2>
<pre id="store-data">{shown}</pre>
<script>{variables}</script>
{body}
<script>
  (function poll() {{
    var log = window.__klaviyoSandboxLog || [];
    document.getElementById("kl-log").textContent = log.map(function (e) {{
      return e.call + " -> " + e.status; }}).join("\\n");
    document.getElementById("kl-status").textContent = log.length + " call(s)";
    setTimeout(poll, 200);
  }})();
</script>
{snippets["loader"]}
</body></html>
"""
    return pages


async def publish_demo(spec: OnsiteSpec, settings: Settings) -> str:
    """Upload the demo pages to the sandbox simulator; the URL of the product page."""
    pages = demo_pages(spec, settings.sandbox_url)
    try:
        async with httpx.AsyncClient(base_url=settings.sandbox_url, timeout=5) as client:
            answer = await client.post("/__sim/onsite/pages", json={"pages": pages})
            answer.raise_for_status()
    except httpx.HTTPError as exc:
        raise OnsiteError(
            f"The sandbox simulator at {settings.sandbox_url} did not take the demo pages ({exc}); "
            "start it with `make simulator` (or `make dev`)."
        ) from None
    return str(answer.json()["urls"]["product"])


@dataclass(frozen=True)
class Activity:
    """What the sandbox received from onsite snippets."""

    events: list[dict[str, Any]]
    profiles: list[dict[str, Any]]
    error: str | None = None


async def sandbox_activity(settings: Settings, limit: int = 20) -> Activity:
    """The latest onsite events and the identified profiles the sandbox holds."""
    try:
        async with httpx.AsyncClient(base_url=settings.sandbox_url, timeout=5) as client:
            events = (await client.get("/__sim/events", params={"account": "SBX000"})).json()["data"]
            profiles = (await client.get("/__sim/profiles", params={"account": "SBX000"})).json()["data"]
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        return Activity([], [], f"The sandbox simulator at {settings.sandbox_url} did not answer ({exc}).")
    onsite_metrics = {*onsite.ONSITE_METRICS, "Active on Site"}
    shown = [
        {**e, "props": json.dumps(e.get("properties") or {}, ensure_ascii=False)}
        for e in events
        if e.get("metric") in onsite_metrics
    ][-limit:][::-1]
    seen = [
        p
        for p in profiles
        if (p.get("properties") or {}).get("$viewed_items") or p.get("email") == DEMO_EMAIL
    ]
    return Activity(shown, seen)
