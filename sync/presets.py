"""Presets: Klaviyo's standard metrics, ready mappings for common sources, and header suggestions."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial

from sync import kind_targets
from sync.mapping import (
    ColumnSource,
    DateParse,
    FieldRule,
    IntegerCast,
    MapObjects,
    Mapping,
    MappingOptions,
    NumberCast,
    PathSource,
    Split,
    Target,
    TargetKind,
    TemplateSource,
    Transform,
    column,
)

# ---------------------------------------------------------------- standard metrics


@dataclass(frozen=True, slots=True)
class MetricPreset:
    """A metric from Klaviyo's integration guides with the property names they use."""

    name: str
    properties: tuple[str, ...]
    description: str
    kind: TargetKind = TargetKind.EVENT
    item_properties: tuple[str, ...] = ()


ITEM_PROPERTIES = (
    "ProductID", "SKU", "ProductName", "Quantity", "ItemPrice", "RowTotal", "ProductURL", "ImageURL",
    "Categories", "Brand",
)  # fmt: skip
_ORDER_PROPERTIES = (
    "OrderId", "Categories", "ItemNames", "Brands", "DiscountCode", "DiscountValue", "Items",
    "BillingAddress", "ShippingAddress",
)  # fmt: skip
_CART_ITEM_PROPERTIES = (
    "ProductID", "SKU", "ProductName", "Quantity", "ItemPrice", "RowTotal", "ProductURL", "ImageURL",
    "ProductCategories",
)  # fmt: skip

STANDARD_METRICS: dict[str, MetricPreset] = {
    preset.name: preset
    for preset in (
        MetricPreset(
            "Viewed Product",
            (
                "ProductName",
                "ProductID",
                "SKU",
                "Categories",
                "ImageURL",
                "URL",
                "Brand",
                "Price",
                "CompareAtPrice",
            ),
            "someone viewed a product page (browse abandonment)",
        ),
        MetricPreset(
            "Added to Cart",
            (
                "AddedItemProductName",
                "AddedItemProductID",
                "AddedItemSKU",
                "AddedItemCategories",
                "AddedItemImageURL",
                "AddedItemURL",
                "AddedItemPrice",
                "AddedItemQuantity",
                "ItemNames",
                "CheckoutURL",
                "Items",
            ),  # fmt: skip
            "an item was added to the cart; value is the cart total",
            item_properties=_CART_ITEM_PROPERTIES,
        ),
        MetricPreset(
            "Started Checkout",
            ("ItemNames", "CheckoutURL", "Categories", "Items"),
            "someone reached checkout (abandoned checkout); unique_id is cart id + time",
            item_properties=_CART_ITEM_PROPERTIES,
        ),
        MetricPreset(
            "Placed Order",
            _ORDER_PROPERTIES,
            "one event per order; value is the order total",
            TargetKind.ORDER,
            ITEM_PROPERTIES,
        ),
        MetricPreset(
            "Ordered Product",
            (
                "OrderId",
                "ProductID",
                "SKU",
                "ProductName",
                "Quantity",
                "ProductURL",
                "ImageURL",
                "Categories",
                "ProductBrand",
            ),  # fmt: skip
            "one event per order line; value is the line total; unique_id <OrderId>_<SKU>",
        ),
        MetricPreset(
            "Fulfilled Order",
            _ORDER_PROPERTIES,
            "the order was sent; reuses the order's unique_id",
            TargetKind.ORDER,
            ITEM_PROPERTIES,
        ),
        MetricPreset(
            "Canceled Order",
            (*_ORDER_PROPERTIES, "Reason"),
            "the order was canceled; reuses the order's unique_id so CLV can net it out",
            TargetKind.ORDER,
            ITEM_PROPERTIES,
        ),
        MetricPreset(
            "Refunded Order",
            (*_ORDER_PROPERTIES, "Reason"),
            "the order was refunded; reuses the order's unique_id so CLV can net it out",
            TargetKind.ORDER,
            ITEM_PROPERTIES,
        ),
        MetricPreset(
            "Viewed Category", ("CategoryName", "CategoryID", "ImageURL", "URL"), "a category page view"
        ),
        MetricPreset(
            "Searched Site", ("SearchTerm", "SearchTerm (autocorrected)", "ReturnedResults"), "a site search"
        ),
        MetricPreset("Clicked Banner", ("SourceURL", "DestinationURL", "BannerTitle"), "a banner click"),
        MetricPreset(
            "Received Article Share",
            ("SharerName", "SharerEmail", "Name", "URL", "ImageURL"),
            "sent per recipient of a shared article (server side)",
        ),
        MetricPreset(
            "Referred by Friend",
            ("ReferrerName", "ReferrerEmail", "ReferrerCode"),
            "sent per referred friend (server side)",
        ),
    )
}


def metric_preset(name: str) -> MetricPreset:
    """A standard metric by name (KeyError lists the known names)."""
    try:
        return STANDARD_METRICS[name]
    except KeyError:
        raise KeyError(f"unknown metric preset {name!r}; known: {', '.join(STANDARD_METRICS)}") from None


_NUMERIC_PROPERTIES = frozenset(
    {"Price", "CompareAtPrice", "ItemPrice", "RowTotal", "AddedItemPrice", "DiscountValue", "ReturnedResults"}
)
_INTEGER_PROPERTIES = frozenset({"Quantity", "AddedItemQuantity"})
_LIST_PROPERTIES = frozenset(
    {"Categories", "AddedItemCategories", "RemovedItemCategories", "ProductCategories", "ItemNames", "Brands"}
)


def _property_transforms(name: str) -> list[Transform]:
    if name in _NUMERIC_PROPERTIES:
        return [NumberCast()]
    if name in _INTEGER_PROPERTIES:
        return [IntegerCast()]
    if name in _LIST_PROPERTIES:
        return [Split()]
    return []


def standard_event_mapping(
    metric: str,
    *,
    email_column: str = "Email",
    time_column: str | None = "Time",
    value_column: str | None = None,
    unique_id: str | None = None,
    columns: dict[str, str] | None = None,
    options: MappingOptions | None = None,
) -> Mapping:
    """A flat-CSV event mapping for a standard metric: each property from a column of the same name
    (or ``columns[property]``); ``unique_id`` is a column or a ``{A}_{B}`` template."""
    preset = metric_preset(metric)
    names = columns or {
        name: name for name in preset.properties if name not in ("Items", "BillingAddress", "ShippingAddress")
    }
    rules = [column(email_column, "email")]
    if time_column:
        rules.append(column(time_column, "time"))
    if value_column:
        rules.append(column(value_column, "value"))
    if unique_id:
        source = TemplateSource(template=unique_id) if "{" in unique_id else ColumnSource(column=unique_id)
        rules.append(FieldRule(source=source, target="unique_id"))
    for name, source_column in names.items():
        rules.append(column(source_column, f"properties.{name}", *_property_transforms(name)))
    return Mapping(
        name=f"{metric} (CSV)",
        target=Target(kind=TargetKind.EVENT, metric=metric),
        options=options or MappingOptions(),
        fields=rules,
    )


# ---------------------------------------------------------------- ecommerce tracking spec (seed 002)

# The common ecommerce event spec (Segment / RudderStack track calls) -> Klaviyo metric names. Order
# events are order mappings: Order Completed also sends one Ordered Product per product.
ECOMMERCE_EVENTS = {
    "Products Searched": "Searched Site",
    "Product List Viewed": "Viewed Category",
    "Category Viewed": "Viewed Category",
    "Promotion Clicked": "Clicked Banner",
    "Product Viewed": "Viewed Product",
    "Product Clicked": "Viewed Product",
    "Product Added": "Added to Cart",
    "Product Removed": "Removed from Cart",
    "Cart Viewed": "Viewed Cart",
    "Checkout Started": "Started Checkout",
    "Order Completed": "Placed Order",
    "Order Updated": "Updated Order",
    "Order Refunded": "Refunded Order",
    "Order Cancelled": "Canceled Order",
}
ORDER_EVENTS = frozenset({"Order Completed", "Order Updated", "Order Refunded", "Order Cancelled"})

# Where the spec keeps the person, the time and the money, in order of preference.
SPEC_EMAIL = "context.traits.email | traits.email | properties.email"
SPEC_PHONE = "context.traits.phone | traits.phone | properties.phone"
SPEC_TIME = "timestamp | originalTimestamp | sentAt"
# The guide's value is "the total monetary value of the event". For orders that is the spec's total
# (what the customer paid: after discounts, with shipping and tax), else revenue, else value; for a
# cart (the guide's cart total) the spec's value (the cart's worth, discounts applied), else total,
# else revenue.
SPEC_VALUE = "properties.total | properties.revenue | properties.value"
SPEC_CART_VALUE = "properties.value | properties.total | properties.revenue"

_VIEWED = {
    "name": "ProductName",
    "product_id": "ProductID",
    "sku": "SKU",
    "image_url": "ImageURL",
    "url": "URL",
    "brand": "Brand",
    "price": "Price",
    "compare_at_price": "CompareAtPrice",
    "categories | properties.category": "Categories",
}
_ADDED = {
    "name": "AddedItemProductName",
    "product_id": "AddedItemProductID",
    "sku": "AddedItemSKU",
    "image_url": "AddedItemImageURL",
    "url": "AddedItemURL",
    "price": "AddedItemPrice",
    "quantity": "AddedItemQuantity",
    "categories | properties.category": "AddedItemCategories",
    "item_names": "ItemNames",
    "checkout_url": "CheckoutURL",
}
_REMOVED = {
    "name": "RemovedItemProductName",
    "product_id": "RemovedItemProductID",
    "sku": "RemovedItemSKU",
    "image_url": "RemovedItemImageURL",
    "url": "RemovedItemURL",
    "price": "RemovedItemPrice",
    "quantity": "RemovedItemQuantity",
    "categories | properties.category": "RemovedItemCategories",
    "item_names": "ItemNames",
    "checkout_url": "CheckoutURL",
}
_CART = {"categories": "Categories", "item_names": "ItemNames", "checkout_url": "CheckoutURL"}
_SIMPLE = {
    "Searched Site": {"query": "SearchTerm", "results": "ReturnedResults"},
    "Viewed Category": {
        "category": "CategoryName",
        "list_id": "CategoryID",
        "image_url": "ImageURL",
        "url": "URL",
    },
    "Clicked Banner": {
        "name": "BannerTitle",
        "promotion_id": "PromotionID",
        "creative": "Creative",
        "position": "Position",
        "url": "DestinationURL",
    },
}
_CART_PROPERTIES = {
    "Viewed Product": _VIEWED,
    "Added to Cart": _ADDED,
    "Removed from Cart": _REMOVED,
    "Viewed Cart": _CART,
    "Started Checkout": _CART,
}
_SPEC_ITEM_KEYS = {
    "product_id": "ProductID",
    "sku": "SKU",
    "name": "ProductName",
    "quantity": "Quantity",
    "price": "ItemPrice",
    "total": "RowTotal",
    "url": "ProductURL",
    "image_url": "ImageURL",
    "category": "ProductCategories",
    "categories": "ProductCategories",
}
# Order line fields: the guide's Items keys for Placed Order (Brand becomes ProductBrand on the
# Ordered Product events, as in the guide).
_SPEC_LINE_FIELDS: tuple[tuple[str, str, tuple[Transform, ...]], ...] = (
    ("line.product_id", "item.ProductID", ()),
    ("line.sku", "item.SKU", ()),
    ("line.name", "item.ProductName", ()),
    ("line.quantity", "item.Quantity", (IntegerCast(),)),
    ("line.price", "item.ItemPrice", (NumberCast(),)),
    ("line.total", "item.RowTotal", (NumberCast(),)),
    ("line.url", "item.ProductURL", ()),
    ("line.image_url", "item.ImageURL", ()),
    ("line.categories | line.category", "item.Categories", (Split(),)),
    ("line.brand", "item.Brand", ()),
    ("line.variant", "item.Variant", ()),
)
_SPEC_ORDER_FIELDS: tuple[tuple[str, str, tuple[Transform, ...]], ...] = (
    ("properties.coupon", "properties.DiscountCode", ()),
    ("properties.discount", "properties.DiscountValue", (NumberCast(),)),
    ("properties.subtotal", "properties.Subtotal", (NumberCast(),)),
    ("properties.shipping", "properties.ShippingTotal", (NumberCast(),)),
    ("properties.tax", "properties.TaxTotal", (NumberCast(),)),
    ("properties.affiliation", "properties.Affiliation", ()),
)
SPEC_CHECKOUT_ID = (
    "{properties.cart_id | properties.checkout_id | properties.order_id}_{" + SPEC_TIME + ":unix}"
)


def _spec_rule(path: str, target: str, *transforms: Transform, required: bool = False) -> FieldRule:
    return FieldRule(
        source=PathSource(path=path), target=target, transforms=list(transforms), required=required
    )


def _spec_profile() -> list[FieldRule]:
    """The person: context.traits (email, phone, names) and userId as the external id. anonymousId
    names a browser, which Klaviyo cannot match server-side, so it is not read."""
    return [
        _spec_rule(SPEC_EMAIL, "email"),
        _spec_rule(SPEC_PHONE, "phone_number"),
        _spec_rule("userId", "external_id"),
        _spec_rule("context.traits.first_name | context.traits.firstName", "profile.first_name"),
        _spec_rule("context.traits.last_name | context.traits.lastName", "profile.last_name"),
        _spec_rule(SPEC_TIME, "time"),
    ]


def ecommerce_event_mapping(source_event: str) -> Mapping:
    """Mapping for JSON track calls of the ecommerce spec (``{"event", "properties", "userId",
    "context": {"traits"}, "timestamp", "messageId"}``) to the matching Klaviyo metric, with the
    property names and value rules of Klaviyo's integration guide.

    The profile comes from ``context.traits`` (email, phone) and ``userId`` (external_id); value is
    ``total``, else ``revenue``, else ``value``, with ``currency``; the time is ``timestamp``, else
    ``originalTimestamp``, else ``sentAt``. Order Completed is Placed Order plus one Ordered Product
    per product (unique ids ``<order_id>`` and ``<order_id>_<sku>``, as the CSV order presets);
    refunds and cancellations reuse the order's id; Started Checkout's id is the cart id and the
    event's UNIX time; other events use ``messageId``.
    """
    if source_event not in ECOMMERCE_EVENTS:
        raise KeyError(f"unknown ecommerce event {source_event!r}; known: {', '.join(ECOMMERCE_EVENTS)}")
    metric = ECOMMERCE_EVENTS[source_event]
    if source_event in ORDER_EVENTS:
        return _spec_order_mapping(source_event, metric)
    rules = _spec_profile()
    if metric == "Started Checkout":
        rules.append(FieldRule(source=TemplateSource(template=SPEC_CHECKOUT_ID), target="unique_id"))
    else:
        rules.append(_spec_rule("messageId", "unique_id"))
    if metric in _SIMPLE:
        for key, name in _SIMPLE[metric].items():
            transforms = [IntegerCast()] if name == "ReturnedResults" else []
            rules.append(_spec_rule(f"properties.{key}", f"properties.{name}", *transforms))
    else:
        if metric != "Viewed Product":
            rules.append(_spec_rule(SPEC_CART_VALUE, "value"))
            rules.append(_spec_rule("properties.currency", "value_currency"))
            rules.append(
                _spec_rule(
                    "properties.products",
                    "properties.Items",
                    MapObjects(
                        keys=_SPEC_ITEM_KEYS,
                        numbers=["ItemPrice", "RowTotal", "Quantity"],
                        lists=["ProductCategories"],
                    ),
                )
            )
        for key, name in _CART_PROPERTIES[metric].items():
            rules.append(_spec_rule(f"properties.{key}", f"properties.{name}", *_property_transforms(name)))
        if metric in ("Added to Cart", "Removed from Cart", "Viewed Cart"):
            rules.append(_spec_rule("properties.cart_id", "properties.CartID"))
    return Mapping(
        name=f"Ecommerce spec: {source_event} -> {metric}",
        target=Target(kind=TargetKind.EVENT, metric=metric),
        options=MappingOptions(backfill=False),
        fields=rules,
    )


def _spec_order_mapping(source_event: str, metric: str) -> Mapping:
    rules = _spec_profile()
    rules.append(_spec_rule("properties.order_id", "properties.OrderId", required=True))
    rules.append(_spec_rule(SPEC_VALUE, "value"))
    rules.append(_spec_rule("properties.currency", "value_currency"))
    for path, target, transforms in _SPEC_ORDER_FIELDS:
        rules.append(_spec_rule(path, target, *transforms))
    if source_event in ("Order Refunded", "Order Cancelled"):
        rules.append(_spec_rule("properties.reason", "properties.Reason"))
    if source_event == "Order Updated":
        # Every update is its own event; the order id alone would keep only the first one.
        template = "{properties.order_id}_{" + SPEC_TIME + ":unix}"
        rules.append(FieldRule(source=TemplateSource(template=template), target="unique_id"))
    for path, target, transforms in _SPEC_LINE_FIELDS:
        rules.append(_spec_rule(path, target, *transforms))
    line_metric = "Ordered Product" if source_event == "Order Completed" else None
    return Mapping(
        name=f"Ecommerce spec: {source_event} -> {metric}" + (" + Ordered Product" if line_metric else ""),
        target=Target(kind=TargetKind.ORDER),
        options=MappingOptions(
            backfill=False,
            order_metric=metric,
            line_metric=line_metric,
            line_items_path="properties.products",
        ),
        fields=rules,
    )


def route_key(name: str) -> str:
    """How event names are compared when routing: case-insensitive, runs of spaces as one."""
    return " ".join(name.split()).casefold()


# ---------------------------------------------------------------- order exports

SHOPIFY_SIGNATURE = frozenset({"Name", "Financial Status", "Lineitem name", "Lineitem sku"})
WOOCOMMERCE_SIGNATURE = frozenset({"Order Number", "Order Date", "Item Name", "Email (Billing)"})


def shopify_orders_mapping(
    metric: str = "Placed Order",
    *,
    line_metric: str | None = "Ordered Product",
    timezone: str = "UTC",
    backfill: bool = True,
) -> Mapping:
    """Shopify's orders export (Orders > Export, CSV): one row per line item, order columns such as
    Total, Currency and Financial Status only on an order's first row, ``Name`` is the order number.

    For Fulfilled / Canceled / Refunded Order pass ``metric`` and ``line_metric=None``: the event
    time then comes from ``Fulfilled at`` / ``Cancelled at`` and orders without it are skipped.
    """
    time_column = {"Fulfilled Order": "Fulfilled at", "Canceled Order": "Cancelled at"}.get(
        metric, "Created at"
    )
    rules = [
        column("Name", "properties.OrderId", required=True),
        column("Email", "email"),
        column(time_column, "time", skip_row_when_empty=time_column != "Created at"),
        column("Total", "value", NumberCast()),
        column("Currency", "value_currency"),
        column("Subtotal", "properties.Subtotal", NumberCast()),
        column("Shipping", "properties.ShippingTotal", NumberCast()),
        column("Taxes", "properties.TaxTotal", NumberCast()),
        column("Discount Code", "properties.DiscountCode"),
        column("Discount Amount", "properties.DiscountValue", NumberCast()),
        column("Financial Status", "properties.FinancialStatus"),
        column("Fulfillment Status", "properties.FulfillmentStatus"),
        column("Shipping Method", "properties.ShippingMethod"),
        column("Source", "properties.SourceName"),
        column("Lineitem sku", "item.SKU"),
        column("Lineitem name", "item.ProductName"),
        column("Lineitem quantity", "item.Quantity", IntegerCast()),
        column("Lineitem price", "item.ItemPrice", NumberCast()),
        column("Vendor", "item.Brand"),
    ]
    for side in ("Billing", "Shipping"):
        for source_name, key in (
            ("Name", "Name"),
            ("Company", "Company"),
            ("Address1", "Address1"),
            ("Address2", "Address2"),
            ("City", "City"),
            ("Zip", "Zip"),
            ("Province", "RegionCode"),
            ("Country", "CountryCode"),
            ("Phone", "Phone"),
        ):
            rules.append(column(f"{side} {source_name}", f"properties.{side}Address.{key}"))
    if metric in ("Canceled Order", "Refunded Order"):
        rules.append(column("Refunded Amount", "properties.RefundedAmount", NumberCast()))
    return Mapping(
        name=f"Shopify orders export -> {metric}",
        target=Target(kind=TargetKind.ORDER),
        options=MappingOptions(
            backfill=backfill, default_timezone=timezone, order_metric=metric, line_metric=line_metric
        ),
        fields=rules,
    )


def woocommerce_orders_mapping(
    metric: str = "Placed Order",
    *,
    line_metric: str | None = "Ordered Product",
    currency: str = "USD",
    timezone: str = "UTC",
    backfill: bool = True,
) -> Mapping:
    """WooCommerce orders export (Advanced Order Export's default "one row per product" layout):
    order columns repeat on every row; the export has no currency column, so pass the store's."""
    rules = [
        column("Order Number", "properties.OrderId", required=True),
        column("Email (Billing)", "email"),
        column("Order Date", "time"),
        column("Order Total Amount", "value", NumberCast()),
        column("Order Subtotal Amount", "properties.Subtotal", NumberCast()),
        column("Order Shipping Amount", "properties.ShippingTotal", NumberCast()),
        column("Order Status", "properties.OrderStatus"),
        column("Payment Method Title", "properties.PaymentMethod"),
        column("Shipping Method Title", "properties.ShippingMethod"),
        column("Coupon Code", "properties.DiscountCode"),
        column("Cart Discount Amount", "properties.DiscountValue", NumberCast()),
        column("First Name (Billing)", "properties.BillingAddress.FirstName"),
        column("Last Name (Billing)", "properties.BillingAddress.LastName"),
        column("Company (Billing)", "properties.BillingAddress.Company"),
        column("Address 1&2 (Billing)", "properties.BillingAddress.Address1"),
        column("City (Billing)", "properties.BillingAddress.City"),
        column("State Code (Billing)", "properties.BillingAddress.RegionCode"),
        column("Postcode (Billing)", "properties.BillingAddress.Zip"),
        column("Country Code (Billing)", "properties.BillingAddress.CountryCode"),
        column("Phone (Billing)", "properties.BillingAddress.Phone"),
        column("SKU", "item.SKU"),
        column("Item Name", "item.ProductName"),
        column("Quantity (- Refund)", "item.Quantity", IntegerCast()),
        column("Item Cost", "item.ItemPrice", NumberCast()),
    ]
    return Mapping(
        name=f"WooCommerce orders export -> {metric}",
        target=Target(kind=TargetKind.ORDER),
        options=MappingOptions(
            backfill=backfill,
            default_currency=currency,
            default_timezone=timezone,
            order_metric=metric,
            line_metric=line_metric,
        ),
        fields=rules,
    )


@dataclass(frozen=True, slots=True)
class SourcePreset:
    """A ready mapping for a known source, listed for the mapping editor."""

    key: str
    title: str
    build: Callable[[], Mapping]


SOURCE_PRESETS: dict[str, SourcePreset] = {
    preset.key: preset
    for preset in (
        SourcePreset(
            "shopify_orders", "Shopify orders export (CSV): Placed + Ordered Product", shopify_orders_mapping
        ),
        SourcePreset(
            "shopify_fulfilled",
            "Shopify orders export (CSV): Fulfilled Order",
            lambda: shopify_orders_mapping("Fulfilled Order", line_metric=None),
        ),
        SourcePreset(
            "shopify_canceled",
            "Shopify orders export (CSV): Canceled Order",
            lambda: shopify_orders_mapping("Canceled Order", line_metric=None),
        ),
        SourcePreset(
            "woocommerce_orders",
            "WooCommerce orders export (CSV): Placed + Ordered Product",
            woocommerce_orders_mapping,
        ),
        *(
            SourcePreset(
                f"ecommerce_spec:{event}",
                f"Ecommerce tracking spec (JSON): {event} -> {metric}"
                + (" + Ordered Product" if event == "Order Completed" else ""),
                partial(ecommerce_event_mapping, event),
            )
            for event, metric in ECOMMERCE_EVENTS.items()
        ),
    )
}


def detect_source(headers: Iterable[str]) -> str | None:
    """Name of the source preset whose export the headers look like ("shopify_orders", ...)."""
    have = set(headers)
    if have >= SHOPIFY_SIGNATURE:
        return "shopify_orders"
    if have >= WOOCOMMERCE_SIGNATURE:
        return "woocommerce_orders"
    return None


# ---------------------------------------------------------------- header suggestions


@dataclass(frozen=True, slots=True)
class Suggestion:
    """A likely target for a source header, with the transforms it usually needs."""

    target: str
    transforms: list[Transform] = field(default_factory=list)


# Normalised header (lower case, letters and digits only) -> (target, transforms). "item." targets
# become "properties." for event mappings.
_SYNONYMS: list[tuple[tuple[str, ...], str, tuple[Transform, ...]]] = [
    (
        ("email", "emailaddress", "customeremail", "billingemail", "emailbilling", "useremail", "mail"),
        "email",
        (),
    ),
    (
        (
            "phone",
            "phonenumber",
            "mobile",
            "mobilephone",
            "cell",
            "cellphone",
            "telephone",
            "tel",
            "smsphone",
            "billingphone",
            "phonebilling",
            "mobilenumber",
        ),
        "phone_number",
        (),
    ),  # fmt: skip
    (("externalid", "customerid", "userid", "clientid", "memberid"), "external_id", ()),
    (("firstname", "givenname", "firstnamebilling", "billingfirstname"), "first_name", ()),
    (("lastname", "surname", "familyname", "lastnamebilling", "billinglastname"), "last_name", ()),
    (
        (
            "createdat",
            "orderdate",
            "date",
            "timestamp",
            "time",
            "datetime",
            "processedat",
            "paidat",
            "eventtime",
            "purchasedate",
        ),
        "time",
        (DateParse(),),
    ),  # fmt: skip
    (
        ("total", "ordertotal", "ordertotalamount", "grandtotal", "totalprice", "amount", "revenue", "value"),
        "value",
        (NumberCast(),),
    ),
    (("currency", "currencycode", "ordercurrency"), "value_currency", ()),
    (("eventid", "uniqueid", "messageid"), "unique_id", ()),
    (("orderid", "ordernumber", "orderno", "order", "ordername"), "properties.OrderId", ()),
    (("lineitemsku", "sku", "productsku", "variantsku", "itemsku"), "item.SKU", ()),
    (("lineitemname", "productname", "itemname", "product", "producttitle"), "item.ProductName", ()),
    (
        ("lineitemquantity", "quantity", "qty", "quantityrefund", "itemquantity"),
        "item.Quantity",
        (IntegerCast(),),
    ),
    (("lineitemprice", "price", "itemprice", "unitprice", "itemcost"), "item.ItemPrice", (NumberCast(),)),
    (("linetotal", "rowtotal", "lineitemtotal", "itemtotal"), "item.RowTotal", (NumberCast(),)),
    (("productid", "lineitemproductid", "itemid"), "item.ProductID", ()),
    (("vendor", "brand", "manufacturer"), "item.Brand", ()),
    (("categories", "category", "producttype", "collection"), "item.Categories", (Split(),)),
    (("productimage", "imageurl", "image"), "item.ImageURL", ()),
    (("producturl", "url"), "item.ProductURL", ()),
    (("discountcode", "couponcode", "coupon", "promocode"), "properties.DiscountCode", ()),
    (
        ("discountamount", "discount", "discountvalue", "cartdiscountamount"),
        "properties.DiscountValue",
        (NumberCast(),),
    ),
    (("city", "billingcity", "citybilling"), "location.city", ()),
    (("country", "billingcountry", "countrycode"), "location.country", ()),
    (("zip", "postcode", "postalcode", "zipcode", "billingzip"), "location.zip", ()),
]
_LOOKUP = {alias: (target, transforms) for aliases, target, transforms in _SYNONYMS for alias in aliases}
_NON_ALNUM = re.compile(r"[^a-z0-9]")
_PROFILE_ONLY = ("first_name", "last_name", "location.")
_LINE_TARGETS = ("item.", "properties.OrderId", "properties.Discount")


def suggest_targets(
    headers: Iterable[str], kind: TargetKind = TargetKind.EVENT
) -> dict[str, Suggestion | None]:
    """Likely targets per header: "Email Address" -> email, "Lineitem sku" -> SKU, "Phone" -> phone_number.

    Targets are phrased for ``kind``: order mappings get ``item.SKU``, event mappings
    ``properties.SKU``, profile mappings profile attributes. Each target is suggested once.
    """
    headers = list(headers)
    shopify = detect_source(headers) == "shopify_orders"
    used: set[str] = set()
    out: dict[str, Suggestion | None] = {}
    for header in headers:
        key = _NON_ALNUM.sub("", header.lower())
        if shopify and header == "Name":
            key = "ordername"  # in Shopify exports "Name" is the order number (#1001), not a person
        # Names of the kind's own exports first (catalog fields, customers' consent and address).
        found = kind_targets.lookup(header, kind)
        if found is None and kind not in kind_targets.CATALOG_KINDS:
            found = _LOOKUP.get(key)
        suggestion = None
        if found:
            target = _phrase(found[0], kind)
            if target and target not in used and kind_targets.accepts(kind, target):
                used.add(target)
                suggestion = Suggestion(target, list(found[1]))
        out[header] = suggestion
    return out


def _phrase(target: str, kind: TargetKind) -> str | None:
    if kind is TargetKind.PROFILE:
        if target.startswith(_LINE_TARGETS) or target in ("time", "value", "value_currency", "unique_id"):
            return None
        return target
    if target.startswith(_PROFILE_ONLY):
        return "profile." + target if kind in (TargetKind.EVENT, TargetKind.ORDER) else target
    if kind is TargetKind.EVENT and target.startswith("item."):
        return "properties." + target.removeprefix("item.")
    return target


def suggest_mapping(
    headers: Iterable[str], kind: TargetKind = TargetKind.EVENT, metric: str | None = None
) -> Mapping | None:
    """A draft mapping from header suggestions (None when nothing matched)."""
    rules = [
        column(header, s.target, *s.transforms) for header, s in suggest_targets(headers, kind).items() if s
    ]
    if not rules:
        return None
    return Mapping(name="Suggested mapping", target=Target(kind=kind, metric=metric), fields=rules)
