"""Catalog items, variants and categories: compound ids, required fields, content hashes, SDK validation."""

from __future__ import annotations

from typing import Any

from sync.mapping import Mapping, MappingOptions, Split, Target, TargetKind, column
from sync.pipeline import run_pipeline
from sync.targets.catalog import content_hash, entry_id
from tests.sync.envelopes import catalog_job

ITEM_ROW = {
    "Id": "WINNIEPOOH",
    "Title": "Winnie the Pooh",
    "Description": "A bear",
    "Url": "http://www.example.com/path/to/product",
    "Price": "$9.99",
    "Image": "http://www.example.com/path/to/product/image.png",
    "Published": "yes",
    "Brand": "Kids Books",
}


def _item_mapping(mode: str = "create") -> Mapping:
    return Mapping(
        name="c",
        target=Target(kind=TargetKind.CATALOG_ITEM),
        options=MappingOptions(catalog_mode=mode),  # type: ignore[arg-type]
        fields=[
            column("Id", "external_id"),
            column("Title", "title"),
            column("Description", "description"),
            column("Url", "url"),
            column("Price", "price"),
            column("Image", "image_full_url"),
            column("Published", "published"),
            column("Brand", "custom_metadata.Brand"),
        ],
    )


def _items(mapping: Mapping, row: dict[str, str]) -> Any:
    (result,) = list(run_pipeline(mapping, [(1, row)]))
    return result


def test_catalog_item_create() -> None:
    result = _items(_item_mapping(), ITEM_ROW)
    assert result.ok, result.errors
    assert result.items == [
        {
            "type": "catalog-item",
            "attributes": {
                "external_id": "WINNIEPOOH",
                "title": "Winnie the Pooh",
                "description": "A bear",
                "url": "http://www.example.com/path/to/product",
                "price": 9.99,
                "image_full_url": "http://www.example.com/path/to/product/image.png",
                "published": True,
                "custom_metadata": {"Brand": "Kids Books"},
                "integration_type": "$custom",
                "catalog_type": "$default",
            },
        }
    ]
    catalog_job("catalog-item", result.items)
    assert entry_id(result.items[0]) == "$custom:::$default:::WINNIEPOOH"


def test_catalog_item_update_carries_id() -> None:
    result = _items(_item_mapping("update"), ITEM_ROW | {"Title": "", "Description": ""})
    assert result.ok, result.errors
    item = result.items[0]
    assert item["id"] == "$custom:::$default:::WINNIEPOOH"
    assert "external_id" not in item["attributes"]
    catalog_job("catalog-item-update", result.items)


def test_required_fields() -> None:
    result = _items(_item_mapping(), ITEM_ROW | {"Url": ""})
    assert [(e.rule, e.column) for e in result.errors] == [("missing_required", "url")]


def test_content_hash_changes_only_with_content() -> None:
    a = _items(_item_mapping(), ITEM_ROW).items[0]
    b = _items(_item_mapping(), dict(reversed(list(ITEM_ROW.items())))).items[0]
    c = _items(_item_mapping(), ITEM_ROW | {"Price": "10"}).items[0]
    assert content_hash(a) == content_hash(b) != content_hash(c)
    assert len(content_hash(a)) == 64


def test_variant_and_category() -> None:
    variant = Mapping(
        name="v",
        target=Target(kind=TargetKind.CATALOG_VARIANT),
        fields=[
            column("Id", "external_id"),
            column("Parent", "item_external_id"),
            column("Title", "title"),
            column("Description", "description"),
            column("Sku", "sku"),
            column("Stock", "inventory_quantity"),
            column("Policy", "inventory_policy"),
            column("Price", "price"),
            column("Url", "url"),
        ],
    )
    row = {"Id": "WP-S", "Parent": "WINNIEPOOH", "Title": "Small", "Description": "d", "Sku": "WP-S"}
    row |= {"Stock": "12", "Policy": "1", "Price": "9.99", "Url": "http://x.io/p"}
    result = _items(variant, row)
    assert result.ok, result.errors
    item = result.items[0]
    assert item["relationships"] == {
        "item": {"data": {"type": "catalog-item", "id": "$custom:::$default:::WINNIEPOOH"}}
    }
    assert item["attributes"]["inventory_quantity"] == 12 and item["attributes"]["inventory_policy"] == 1
    catalog_job("catalog-variant", result.items)

    category = Mapping(
        name="cat",
        target=Target(kind=TargetKind.CATALOG_CATEGORY),
        fields=[
            column("Id", "external_id"),
            column("Name", "name"),
            column("Items", "item_external_ids", Split()),
        ],
    )
    result = _items(category, {"Id": "fiction", "Name": "Fiction", "Items": "WINNIEPOOH, TALEOFTWO"})
    assert result.ok
    assert result.items[0]["relationships"]["items"]["data"][1] == {
        "type": "catalog-item",
        "id": "$custom:::$default:::TALEOFTWO",
    }
    catalog_job("catalog-category", result.items)
