"""The ecommerce spec's documented example events and what Klaviyo's integration guide (seed 003)
says each must become: metric, properties, value, currency, time and unique_id per event."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

_DATA = json.loads(
    (Path(__file__).parent.parent / "sync" / "data" / "ecommerce_spec_events.json").read_text()
)
EXAMPLES: dict[str, dict[str, Any]] = {name: call for name, call in _DATA.items() if not name.startswith("_")}
PROFILE = {"email": "ann@shop.test", "external_id": "user-1"}
ORDER_ID = "50314b8e9bcf000000000000"

_MONOPOLY_ITEM = {
    "ProductID": "507f1f77bcf86cd799439011", "SKU": "45790-32", "ProductName": "Monopoly: 3rd Edition",
    "Quantity": 1, "ItemPrice": 19, "RowTotal": 19, "ProductURL": "https://www.example.com/product/path",
    "ImageURL": "https://www.example.com/product/path.jpg", "Categories": ["Games"],
}  # fmt: skip
_UNO_ITEM = {
    "ProductID": "505bd76785ebb509fc183733", "SKU": "46493-32", "ProductName": "Uno Card Game", "Quantity": 2,
    "ItemPrice": 3, "RowTotal": 6, "Categories": ["Games"],
}  # fmt: skip
_ORDER_PROPERTIES = {
    "OrderId": ORDER_ID, "DiscountCode": "hasbros", "DiscountValue": 2.5, "ShippingTotal": 3, "TaxTotal": 2,
    "Affiliation": "Google Store", "Items": [_MONOPOLY_ITEM, _UNO_ITEM],
    "ItemNames": ["Monopoly: 3rd Edition", "Uno Card Game"], "Categories": ["Games"],
}  # fmt: skip


def _cart_item(item: dict[str, Any]) -> dict[str, Any]:
    """A cart's Items entry: the guide names an item's categories ProductCategories in carts."""
    out = {k: v for k, v in item.items() if k != "Categories"}
    out["ProductCategories"] = item["Categories"]
    return out


def _ordered_product(item: dict[str, Any]) -> dict[str, Any]:
    out = {"OrderId": ORDER_ID}
    out.update({k: v for k, v in item.items() if k not in ("ItemPrice", "RowTotal")})
    return out


def expected(event: str) -> list[dict[str, Any]]:
    """The events (metric name, then the event attributes the guide prescribes) one call becomes."""
    time = EXAMPLES[event]["timestamp"].replace("Z", "+00:00")
    one = {"time": time, "unique_id": EXAMPLES[event]["messageId"]}
    monopoly_cart = _cart_item(_MONOPOLY_ITEM)
    # The spec's Cart Viewed example gives no quantities: a row total is the price once.
    viewed_cart = [
        {k: v for k, v in _cart_item(item).items() if k != "Quantity"} | {"RowTotal": item["ItemPrice"]}
        for item in (_MONOPOLY_ITEM, _UNO_ITEM)
    ]
    found: dict[str, list[dict[str, Any]]] = {
        "Products Searched": [{"metric": "Searched Site", "properties": {"SearchTerm": "blue roses"}, **one}],
        "Product List Viewed": [
            {
                "metric": "Viewed Category",
                "properties": {"CategoryName": "Deals", "CategoryID": "hot_deals_1"},
                **one,
            }
        ],
        "Promotion Clicked": [
            {
                "metric": "Clicked Banner",
                "properties": {
                    "BannerTitle": "75% store-wide shoe sale",
                    "PromotionID": "promo_1",
                    "Creative": "top_banner_2",
                    "Position": "home_banner_top",
                },  # fmt: skip
                **one,
            }
        ],
        "Product Viewed": [
            {
                "metric": "Viewed Product",
                "properties": {
                    "ProductName": "Monopoly: 3rd Edition",
                    "ProductID": "507f1f77bcf86cd799439011",
                    "SKU": "G-32",
                    "ImageURL": "https://www.example.com/product/path.jpg",
                    "URL": "https://www.example.com/product/path",
                    "Brand": "Hasbro",
                    "Price": 18.99,
                    "Categories": ["Games"],
                },  # fmt: skip
                **one,
            }
        ],
        "Product Added": [
            {
                "metric": "Added to Cart",
                "properties": {
                    "AddedItemProductName": "Monopoly: 3rd Edition",
                    "AddedItemProductID": "507f1f77bcf86cd799439011",
                    "AddedItemSKU": "G-32",
                    "AddedItemImageURL": "https://www.example.com/product/path.jpg",
                    "AddedItemURL": "https://www.example.com/product/path",
                    "AddedItemPrice": 18.99,
                    "AddedItemQuantity": 1,
                    "AddedItemCategories": ["Games"],
                    "CartID": "skdjsidjsdkdj29j",
                },  # fmt: skip
                **one,
            }
        ],
        "Product Removed": [
            {
                "metric": "Removed from Cart",
                "properties": {
                    "RemovedItemProductName": "Monopoly: 3rd Edition",
                    "RemovedItemProductID": "507f1f77bcf86cd799439011",
                    "RemovedItemSKU": "G-32",
                    "RemovedItemImageURL": "https://www.example.com/product/path.jpg",
                    "RemovedItemURL": "https://www.example.com/product/path",
                    "RemovedItemPrice": 18.99,
                    "RemovedItemQuantity": 1,
                    "RemovedItemCategories": ["Games"],
                    "CartID": "skdjsidjsdkdj29j",
                },  # fmt: skip
                **one,
            }
        ],
        "Cart Viewed": [
            {
                "metric": "Viewed Cart",
                "properties": {
                    "Items": viewed_cart,
                    "ItemNames": ["Monopoly: 3rd Edition", "Uno Card Game"],
                    "Categories": ["Games"],
                    "CartID": "skdjsidjsdkdj29j",
                },  # fmt: skip
                **one,
            }
        ],
        "Checkout Started": [
            {
                "metric": "Started Checkout",
                "properties": {
                    "Items": [monopoly_cart, _cart_item(_UNO_ITEM)],
                    "ItemNames": ["Monopoly: 3rd Edition", "Uno Card Game"],
                    "Categories": ["Games"],
                },
                "time": time,
                # The cart's id and the event's UNIX time: a returning shopper's next checkout counts.
                "unique_id": f"{ORDER_ID}_1796033220",
                "value": 30,  # the cart's value, before revenue (25)
                "value_currency": "USD",
            }
        ],
        "Order Completed": [
            {
                "metric": "Placed Order",
                "properties": _ORDER_PROPERTIES | {"Subtotal": 22.5},
                "time": time,
                "unique_id": ORDER_ID,
                "value": 27.5,
                "value_currency": "USD",
            },
            *(
                {
                    "metric": "Ordered Product",
                    "properties": _ordered_product(item),
                    "time": time,
                    "unique_id": f"{ORDER_ID}_{item['SKU']}",
                    "value": item["RowTotal"],
                    "value_currency": "USD",
                }
                for item in (_MONOPOLY_ITEM, _UNO_ITEM)
            ),
        ],
        "Order Updated": [
            {
                "metric": "Updated Order",
                "properties": _ORDER_PROPERTIES
                | {"Items": [_MONOPOLY_ITEM], "ItemNames": ["Monopoly: 3rd Edition"]},
                "time": time,
                "unique_id": f"{ORDER_ID}_1796036400",
                "value": 27.5,
                "value_currency": "USD",
            }
        ],
        "Order Refunded": [
            {
                "metric": "Refunded Order",
                "properties": {
                    k: v
                    for k, v in _ORDER_PROPERTIES.items()
                    if k in ("OrderId", "Items", "ItemNames", "Categories")
                },
                "time": time,
                "unique_id": ORDER_ID,  # the Placed Order's, so CLV nets the refund out
                "value": 27.5,
                "value_currency": "USD",
            }
        ],
        "Order Cancelled": [
            {
                "metric": "Canceled Order",
                "properties": _ORDER_PROPERTIES,
                "time": time,
                "unique_id": ORDER_ID,
                "value": 27.5,
                "value_currency": "USD",
            }
        ],
    }
    return copy.deepcopy(found[event])
