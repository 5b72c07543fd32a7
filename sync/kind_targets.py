"""Which targets each mapping kind accepts, and export headers that mean a target of that kind.

Header suggestions must only offer what the kind's builder accepts (a subscription takes no
``first_name``, a catalog item no ``item.SKU``); the names here come from the common Shopify and
WooCommerce products and customers exports. Headers are compared normalised: lower case, letters
and digits only ("Variant Inventory Qty" -> "variantinventoryqty").
"""

from __future__ import annotations

import re

from sync.mapping import BooleanCast, NumberCast, Split, TargetKind, Transform
from sync.targets import catalog, events, lists, profiles, subscriptions

_EVENT_PREFIXES = ("properties.", "profile.")
_ACCEPTED: dict[TargetKind, tuple[frozenset[str], tuple[str, ...]]] = {
    TargetKind.EVENT: (events.ALLOWED, _EVENT_PREFIXES),
    TargetKind.ORDER: (events.ALLOWED, (*_EVENT_PREFIXES, "item.")),
    TargetKind.PROFILE: (profiles.ALLOWED, ("properties.",)),
    TargetKind.SUBSCRIPTION: (subscriptions.ALLOWED, ()),
    TargetKind.LIST_MEMBERSHIP: (lists.ALLOWED, ()),
    TargetKind.CATALOG_ITEM: (catalog.ITEM_FIELDS, ("custom_metadata.",)),
    TargetKind.CATALOG_VARIANT: (catalog.VARIANT_FIELDS, ("custom_metadata.",)),
    TargetKind.CATALOG_CATEGORY: (catalog.CATEGORY_FIELDS | {"item_external_ids"}, ()),
}
_NON_ALNUM = re.compile(r"[^a-z0-9]")

CATALOG_KINDS = (TargetKind.CATALOG_ITEM, TargetKind.CATALOG_VARIANT, TargetKind.CATALOG_CATEGORY)


def accepts(kind: TargetKind, target: str) -> bool:
    """True when a ``kind`` mapping can send ``target``."""
    allowed, prefixes = _ACCEPTED[kind]
    return target in allowed or (bool(prefixes) and target.startswith(prefixes))


def normalise(header: str) -> str:
    """A header as suggestions compare it: lower case, letters and digits only."""
    return _NON_ALNUM.sub("", header.lower())


def _table(
    entries: list[tuple[tuple[str, ...], str, tuple[Transform, ...]]],
) -> dict[str, tuple[str, tuple[Transform, ...]]]:
    return {alias: (target, transforms) for aliases, target, transforms in entries for alias in aliases}


_IMAGE = ("image", "imageurl", "imagesrc", "productimage", "featuredimage", "variantimage")
_PRICE = ("price", "variantprice", "regularprice", "saleprice", "unitprice")
_URL = ("url", "producturl", "permalink", "link")

# Catalog headers (Shopify products export: Handle, Title, Body (HTML), Variant SKU, Variant Price,
# Variant Inventory Qty, Variant Inventory Policy, Image Src; WooCommerce: ID, SKU, Name,
# Description, Regular price, Stock, Images, Parent). Anything else becomes custom metadata.
CATALOG: dict[TargetKind, dict[str, tuple[str, tuple[Transform, ...]]]] = {
    TargetKind.CATALOG_ITEM: _table(
        [
            (("id", "productid", "handle", "externalid", "itemid"), "external_id", ()),
            (("title", "name", "productname", "producttitle"), "title", ()),
            (
                ("description", "bodyhtml", "body", "shortdescription", "productdescription"),
                "description",
                (),
            ),
            (_URL, "url", ()),
            (_PRICE, "price", (NumberCast(),)),
            (_IMAGE, "image_full_url", ()),
            (("images", "imageurls", "gallery"), "images", (Split(),)),
            (("thumbnail", "thumbnailurl", "imagethumbnailurl"), "image_thumbnail_url", ()),
            (("published", "ispublished"), "published", (BooleanCast(),)),
        ]
    ),
    TargetKind.CATALOG_VARIANT: _table(
        [
            (("id", "variantid", "externalid"), "external_id", ()),
            (("productid", "parent", "parentid", "handle", "itemexternalid"), "item_external_id", ()),
            (("sku", "variantsku"), "sku", ()),
            (("title", "name", "varianttitle", "variantname"), "title", ()),
            (("description", "bodyhtml", "body", "shortdescription"), "description", ()),
            (_URL, "url", ()),
            (_PRICE, "price", (NumberCast(),)),
            (_IMAGE, "image_full_url", ()),
            (("images",), "images", (Split(),)),
            (
                ("variantinventoryqty", "inventoryquantity", "inventory", "stock", "quantity", "qty"),
                "inventory_quantity",
                (NumberCast(),),
            ),
            (("variantinventorypolicy", "inventorypolicy"), "inventory_policy", ()),
            (("published", "ispublished"), "published", (BooleanCast(),)),
        ]
    ),
    TargetKind.CATALOG_CATEGORY: _table(
        [
            (("id", "categoryid", "handle", "externalid", "slug"), "external_id", ()),
            (("name", "title", "category", "categoryname"), "name", ()),
        ]
    ),
}

# Customers exports (Shopify: Customer ID, Accepts Email Marketing, Default Address City ...;
# WooCommerce: billing_city, billing_postcode ...): profile and consent targets.
CUSTOMERS = _table(
    [
        (("defaultaddresscity", "billingcity", "shippingcity"), "location.city", ()),
        (
            ("defaultaddresscountrycode", "defaultaddresscountry", "billingcountry", "shippingcountry"),
            "location.country",
            (),
        ),
        (("defaultaddresszip", "billingpostcode", "shippingpostcode"), "location.zip", ()),
        (
            ("defaultaddressprovincecode", "province", "provincecode", "state", "region", "billingstate"),
            "location.region",
            (),
        ),
        (
            ("address1", "defaultaddressaddress1", "billingaddress1", "street", "address"),
            "location.address1",
            (),
        ),
        (("address2", "defaultaddressaddress2", "billingaddress2"), "location.address2", ()),
        (("company", "defaultaddresscompany", "billingcompany", "organization"), "organization", ()),
        (("defaultaddressphone",), "phone_number", ()),
        (("useremail",), "email", ()),
        (
            (
                "acceptsemailmarketing",
                "acceptsmarketing",
                "emailmarketingconsent",
                "emailconsent",
                "emailoptin",
                "marketingoptin",
                "optin",
                "subscribed",
                "newsletter",
            ),
            "consent.email",
            (BooleanCast(),),
        ),
        (
            ("acceptssmsmarketing", "smsmarketingconsent", "smsconsent", "smsoptin"),
            "consent.sms",
            (BooleanCast(),),
        ),
        (("consentedat", "acceptsmarketingupdatedat", "optindate", "subscribedat"), "consented_at", ()),
    ]
)


def lookup(header: str, kind: TargetKind) -> tuple[str, tuple[Transform, ...]] | None:
    """A target this kind's exports mean by ``header`` (catalog and customers names), or None."""
    key = normalise(header)
    if kind in CATALOG_KINDS:
        found = CATALOG[kind].get(key)
        if found is None and kind is not TargetKind.CATALOG_CATEGORY:
            return (f"custom_metadata.{_metadata_name(header)}", ())
        return found
    return CUSTOMERS.get(key)


def _metadata_name(header: str) -> str:
    """``Product Category`` -> ``product_category``: a custom metadata key without dots."""
    return re.sub(r"[^a-z0-9]+", "_", header.lower()).strip("_") or "value"
