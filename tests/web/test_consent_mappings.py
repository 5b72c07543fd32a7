"""Sample-driven mappings for consent and catalogs: suggestions the chosen kind accepts."""

from __future__ import annotations

from sqlmodel import select

from models import Mapping, MappingVersion, Role
from services import mappings
from sync.kind_targets import accepts
from sync.mapping import TargetKind
from sync.pipeline import Pipeline, run_pipeline
from tests.support.env import unique
from tests.support.web import post_form

CUSTOMERS_CSV = (
    "Customer ID,First Name,Last Name,Email,Accepts Email Marketing,Default Address City,"
    "Default Address Country Code,Phone,Total Spent\n"
    "1001,Ada,Lovelace,ada@shop.test,yes,London,GB,+447700900123,120.50\n"
    "1002,Alan,Turing,alan@shop.test,no,Wilmslow,GB,,0\n"
)
PRODUCTS_CSV = (
    "ID,Type,SKU,Name,Published,Short description,Description,Regular price,Categories,Image URL,Brand\n"
    "11,simple,TS-1,T-shirt,1,Soft,A soft shirt,19.99,Shirts,https://shop.test/ts.png,Acme\n"
)
SHOPIFY_VARIANTS_CSV = (
    "Handle,Variant ID,Title,Body (HTML),URL,Variant SKU,Variant Inventory Qty,Variant Inventory Policy,"
    "Variant Price,Image Src\n"
    "tee,41,Tee,Soft,https://shop.test/tee,TEE-S,4,deny,10.00,https://shop.test/tee.png\n"
    "tee,42,Tee,Soft,https://shop.test/tee,TEE-M,0,continue,10.00,https://shop.test/tee.png\n"
)


async def _spec_of(sessionmaker, mapping_id: int):
    async with sessionmaker() as db:
        version = (
            await db.exec(select(MappingVersion).where(MappingVersion.mapping_id == mapping_id))
        ).first()
        assert version is not None and await db.get(Mapping, mapping_id) is not None
        return mappings.spec_of(version)


async def _create(client, what: str, sample_text: str):
    await client.get("/mappings/")
    return await post_form(
        client,
        "/mappings/",
        {"what": what, "source": "auto", "name": unique("m-"), "sample_text": sample_text},
        follow_redirects=False,
    )


async def test_subscription_mapping_from_a_customers_sample_is_created(client, as_role, sessionmaker):
    await as_role(Role.OPERATOR)
    response = await _create(client, "subscription", CUSTOMERS_CSV)
    assert response.status_code == 303, response.text
    spec = await _spec_of(sessionmaker, int(response.headers["location"].rsplit("/", 1)[-1]))
    targets = dict(zip(spec.source_columns(), spec.targets(), strict=False))
    assert targets["Email"] == "email" and targets["Accepts Email Marketing"] == "consent.email"
    assert "first_name" not in spec.targets() and "location.city" not in spec.targets()


def test_catalog_suggestions_are_catalog_targets():
    headers = mappings.sample_from_text(PRODUCTS_CSV).columns
    spec = mappings.new_spec("", TargetKind.CATALOG_ITEM, None, "auto", headers)
    by_column = {rule.source.column: rule.target for rule in spec.fields}
    assert by_column["ID"] == "external_id" and by_column["Image URL"] == "image_full_url"
    assert by_column["Name"] == "title" and by_column["Regular price"] == "price"
    for target in spec.targets():
        assert not target.startswith(("item.", "properties.", "profile.")), target
    studio_hints = mappings.presets.suggest_targets(headers, TargetKind.CATALOG_ITEM)
    assert studio_hints["SKU"] is None or studio_hints["SKU"].target.startswith("custom_metadata.")
    assert studio_hints["Brand"] is not None and studio_hints["Brand"].target == "custom_metadata.brand"


def test_shopify_variant_inventory_policy_is_read():
    sample = mappings.sample_from_text(SHOPIFY_VARIANTS_CSV)
    spec = mappings.new_spec("", TargetKind.CATALOG_VARIANT, None, "auto", sample.columns)
    results = list(run_pipeline(spec, sample.rows))
    assert all(r.ok for r in results), [r.errors for r in results]
    policies = [r.items[0]["attributes"]["inventory_policy"] for r in results]
    assert policies == [1, 0]  # deny: hidden when out of stock; continue: always shown
    assert results[0].items[0]["attributes"]["sku"] == "TEE-S"


WIDE_HEADERS = [
    "Email", "Phone", "First Name", "Last Name", "Accepts Email Marketing", "Accepts SMS Marketing",
    "Default Address City", "Default Address Country Code", "Customer ID", "Created At", "Total",
    "Currency", "Order ID", "SKU", "Product Name", "Price", "Quantity", "ID", "Title", "Description",
    "URL", "Image URL", "Variant Inventory Qty", "Variant Inventory Policy", "Parent", "Name",
    "Categories", "Brand", "Tags",
]  # fmt: skip


def test_every_kind_builds_from_a_wide_sample():
    """Whatever the kind, the suggestions made from a sample are targets its builder accepts."""
    for kind in TargetKind:
        metric = "Placed Order" if kind in (TargetKind.EVENT, TargetKind.ORDER) else None
        spec = mappings.new_spec("", kind, metric, "auto", WIDE_HEADERS)
        Pipeline(spec)  # raises MappingError naming any target the kind cannot send
        for header, hint in mappings.presets.suggest_targets(WIDE_HEADERS, kind).items():
            if hint is not None:
                assert accepts(kind, hint.target), (kind, header, hint.target)
