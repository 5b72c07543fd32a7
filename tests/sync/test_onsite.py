"""Onsite snippets: valid JavaScript in every template syntax, store values escaped, seeds reproduced.

Liquid, Handlebars and Twig are rendered by their real engines (npm, package.json), Jinja by
jinja2; every <script> of the result is parsed with acorn and run against a recording klaviyo.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jinja2
import pytest

from sync.mapping import Mapping, Target, TargetKind, column
from sync.onsite import (
    HANDLEBARS_JSON_HELPER,
    BindingError,
    MetricBinding,
    OnsiteSpec,
    Syntax,
    check,
    generate,
    metric_properties,
)

ROOT = Path(__file__).resolve().parents[2]
HARNESS = ROOT / "tests" / "support" / "onsite_js.mjs"
SEEDS = Path(__file__).parent / "data" / "onsite"

# Store values that break naive snippets: quotes, an early </script>, template tags, unicode.
TRICKY = (
    "He said \"hi\" & 'bye' </script><script>alert(1)</script> {{ 7*7 }} {% raw %} Ünï 商品 😀 \u2028 end"
)


def node(cases: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Run the cases through the Node harness; results by case id."""
    if shutil.which("node") is None or not (ROOT / "node_modules" / "acorn").is_dir():
        pytest.fail("node and the npm dev packages are needed: run `npm ci` (make test does)")
    done = subprocess.run(
        ["node", str(HARNESS)],
        input=json.dumps({"cases": cases}),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    return {r["id"]: r for r in json.loads(done.stdout)["results"]}


STORE = {
    "customer": {"email": "shopper@sandbox.test", "first_name": TRICKY, "last_name": "O'Brien"},
    "product": {
        "id": "SKU-1 </script>",
        "title": TRICKY,
        "sku": 'WINNIE"POOH',
        "tags": ["Fiction", "</script>", "Ünï"],
        "image": "https://shop.test/a.png?x=<b>",
        "url": "https://shop.test/p/1",
        "vendor": "Kids' Books",
        "price": 9.99,
        "compare_at": 14.99,
    },
    "cart": {
        "token": "cart-77",
        "total": 29.98,
        "checkout_url": "https://shop.test/checkout",
        "lines": [
            {"product_id": "1111", "sku": "W", "title": TRICKY, "quantity": 1, "price": 9.99},
            {"product_id": "1112", "sku": "T", "title": "A Tale </script>", "quantity": 2, "price": 10.0},
        ],
    },
}


def store_spec(syntax: Syntax) -> OnsiteSpec:
    line = {
        "ProductID": "product_id",
        "SKU": "sku",
        "ProductName": "title",
        "Quantity": "quantity",
        "ItemPrice": "price",
    }
    cart = {"$value": "cart.total", "CheckoutURL": "cart.checkout_url"}
    return OnsiteSpec(
        syntax=syntax,
        identify={
            "email": "customer.email",
            "first_name": "customer.first_name",
            "last_name": "customer.last_name",
        },
        metrics={
            "Viewed Product": MetricBinding(
                fields={
                    "ProductName": "product.title",
                    "ProductID": "product.id",
                    "SKU": "product.sku",
                    "Categories": "product.tags",
                    "ImageURL": "product.image",
                    "URL": "product.url",
                    "Brand": "product.vendor",
                    "Price": "product.price",
                    "CompareAtPrice": "product.compare_at",
                }
            ),
            "Added to Cart": MetricBinding(
                fields={**cart, "AddedItemProductName": "product.title", "AddedItemProductID": "product.id"},
                items_path="cart.lines",
                item_fields=line,
            ),
            "Started Checkout": MetricBinding(
                fields={**cart, "$event_id": "cart.token"}, items_path="cart.lines", item_fields=line
            ),
            "Searched Site": MetricBinding(fields={"SearchTerm": "product.title", "ReturnedResults": "3"}),
        },
    )


def page(syntax: Syntax) -> str:
    snippets = generate(store_spec(syntax), "ABC123")
    return "\n".join(s.code for s in snippets)


def rendered_case(syntax: Syntax) -> dict[str, Any]:
    html = page(syntax)
    case: dict[str, Any] = {"id": syntax.value, "engine": "html", "template": html, "context": STORE}
    if syntax is Syntax.JS:
        case["globals"] = STORE
    elif syntax is Syntax.JINJA:
        # The store's own engine, autoescaping on as Flask and Django-style setups have it.
        case["template"] = jinja2.Environment(autoescape=True).from_string(html).render(STORE)
    else:
        case["engine"] = syntax.value
        case["helper"] = HANDLEBARS_JSON_HELPER
    return case


@pytest.fixture(scope="module")
def rendered() -> dict[str, dict[str, Any]]:
    return node([rendered_case(syntax) for syntax in Syntax])


def expected_lines() -> list[dict[str, Any]]:
    return [
        {
            "ProductID": ln["product_id"],
            "SKU": ln["sku"],
            "ProductName": ln["title"],
            "Quantity": ln["quantity"],
            "ItemPrice": ln["price"],
        }
        for ln in STORE["cart"]["lines"]
    ]


@pytest.mark.parametrize("syntax", list(Syntax))
def test_each_syntax_renders_javascript_that_carries_store_values_unchanged(rendered, syntax):
    result = rendered[syntax.value]
    assert result["errors"] == [], result.get("html", "")[:3000]
    # An unescaped </script> would close a script early and leave a stray opening tag.
    assert result["scripts"] == result["opened"] == 8
    calls = {(c[0], c[1] if c[0] == "track" else ""): c for c in result["calls"]}
    product, cart = STORE["product"], STORE["cart"]
    assert calls[("identify", "")][1] == {
        "email": "shopper@sandbox.test",
        "first_name": TRICKY,
        "last_name": "O'Brien",
    }
    assert calls[("track", "Viewed Product")][2] == {
        "ProductName": TRICKY,
        "ProductID": "SKU-1 </script>",
        "SKU": 'WINNIE"POOH',
        "Categories": ["Fiction", "</script>", "Ünï"],
        "ImageURL": "https://shop.test/a.png?x=<b>",
        "URL": "https://shop.test/p/1",
        "Brand": "Kids' Books",
        "Price": 9.99,
        "CompareAtPrice": 14.99,
    }
    assert calls[("trackViewedItem", "")][1] == {
        "Title": TRICKY,
        "ItemId": "SKU-1 </script>",
        "Categories": ["Fiction", "</script>", "Ünï"],
        "ImageUrl": "https://shop.test/a.png?x=<b>",
        "Url": "https://shop.test/p/1",
        "Metadata": {"Brand": "Kids' Books", "Price": 9.99, "CompareAtPrice": 14.99},
    }
    added = calls[("track", "Added to Cart")][2]
    assert added == {
        "$value": 29.98,
        "AddedItemProductName": TRICKY,
        "AddedItemProductID": product["id"],
        "ItemNames": [TRICKY, "A Tale </script>"],
        "CheckoutURL": cart["checkout_url"],
        "Items": expected_lines(),
    }
    checkout = calls[("track", "Started Checkout")][2]
    assert re.fullmatch(r"cart-77_\d{10}", checkout.pop("$event_id"))
    assert checkout == {
        "$value": 29.98,
        "ItemNames": [TRICKY, "A Tale </script>"],
        "CheckoutURL": cart["checkout_url"],
        "Items": expected_lines(),
    }
    assert calls[("track", "Searched Site")][2] == {"SearchTerm": TRICKY, "ReturnedResults": 3}


@pytest.mark.parametrize("syntax", list(Syntax))
def test_literal_values_survive_every_template_engine(syntax):
    spec = OnsiteSpec(
        syntax=syntax,
        metrics={
            "Clicked Banner": MetricBinding(
                fields={
                    "BannerTitle": json.dumps(TRICKY),
                    "SourceURL": '"https://shop.test/?a={{b}}&c={%d%}"',
                    "DestinationURL": '["</script>", {"k": "{{x}}"}]',
                }
            )
        },
    )
    html = "\n".join(s.code for s in generate(spec, "ABC123"))
    case = rendered_case(syntax) | {"id": "lit", "template": html}
    if syntax is Syntax.JINJA:
        case["template"] = jinja2.Environment(autoescape=True).from_string(html).render({})
    result = node([case])["lit"]
    assert result["errors"] == []
    assert result["calls"] == [
        [
            "track",
            "Clicked Banner",
            {
                "SourceURL": "https://shop.test/?a={{b}}&c={%d%}",
                "DestinationURL": ["</script>", {"k": "{{x}}"}],
                "BannerTitle": TRICKY,
            },
        ]
    ]


# ---------------------------------------------------------------- the seeds' examples


def ast(cases: dict[str, str]) -> dict[str, Any]:
    results = node([{"id": key, "engine": "ast", "template": code} for key, code in cases.items()])
    return {key: r.get("ast", r.get("errors")) for key, r in results.items()}


def script_body(html: str) -> str:
    match = re.search(r"<script[^>]*>(.*)</script>", html, re.S)
    assert match, html
    return match.group(1)


ADDED_ITEMS = (
    '[{"ProductID": "1111", "SKU": "WINNIEPOOH", "ProductName": "Winnie the Pooh", "Quantity": 1, '
    '"ItemPrice": 9.99, "RowTotal": 9.99, "ProductURL": "http://www.example.com/path/to/product", '
    '"ImageURL": "http://www.example.com/path/to/product/image.png", "ProductCategories": '
    '["Fiction", "Children"]}, {"ProductID": "1112", "SKU": "TALEOFTWO", "ProductName": '
    '"A Tale of Two Cities", "Quantity": 1, "ItemPrice": 19.99, "RowTotal": 19.99, "ProductURL": '
    '"http://www.example.com/path/to/product2", "ImageURL": '
    '"http://www.example.com/path/to/product/image2.png", "ProductCategories": ["Fiction", "Classics"]}]'
)


def guide_spec() -> OnsiteSpec:
    """Bindings as seed 003 writes them: item.<Property> on the product page, literals elsewhere."""
    viewed = {name: f"item.{name}" for name in metric_properties("Viewed Product")}
    return OnsiteSpec(
        metrics={
            "Viewed Product": MetricBinding(fields=viewed),
            "Added to Cart": MetricBinding(
                fields={
                    "$value": "29.98",
                    "AddedItemProductName": '"A Tale of Two Cities"',
                    "AddedItemProductID": '"1112"',
                    "AddedItemSKU": '"TALEOFTWO"',
                    "AddedItemCategories": '["Fiction", "Classics", "Children"]',
                    "AddedItemImageURL": '"http://www.example.com/path/to/product/image2.png"',
                    "AddedItemURL": '"http://www.example.com/path/to/product2"',
                    "AddedItemPrice": "19.99",
                    "AddedItemQuantity": "1",
                    "ItemNames": '["Winnie the Pooh", "A Tale of Two Cities"]',
                    "CheckoutURL": '"http://www.example.com/path/to/checkout"',
                    "Items": ADDED_ITEMS,
                }
            ),
            "Started Checkout": MetricBinding(
                fields={
                    "$event_id": '"1000123_1387299423"',
                    "$value": "29.98",
                    "ItemNames": '["Winnie the Pooh", "A Tale of Two Cities"]',
                    "CheckoutURL": '"http://www.example.com/path/to/checkout"',
                    "Categories": '["Fiction", "Children", "Classics"]',
                    "Items": ADDED_ITEMS,
                }
            ),
            "Viewed Category": MetricBinding(
                fields={
                    "CategoryName": '"Fantasy Books"',
                    "CategoryID": '"01"',
                    "ImageURL": '"http://www.example.com/path/to/category/hero/image.png"',
                    "URL": '"http://www.example.com/path/to/category"',
                }
            ),
            "Searched Site": MetricBinding(
                fields={
                    "SearchTerm": '"Fantasty Boks"',
                    "SearchTerm (autocorrected)": '"Fantasy Books"',
                    "ReturnedResults": "54",
                }
            ),
            "Clicked Banner": MetricBinding(
                fields={
                    "SourceURL": '"https://www.example.com/home"',
                    "DestinationURL": '"https://www.example.com/black-friday-deals"',
                    "BannerTitle": '"Check out these awesome Black Friday sales!"',
                }
            ),
        },
    )


def test_the_guides_snippets_are_reproduced_when_bound_as_in_the_guide():
    generated = {s.key: s.code for s in generate(guide_spec(), "ABC123")}
    keys = [
        "viewed_product",
        "viewed_item",
        "added_to_cart",
        "started_checkout",
        "viewed_category",
        "searched_site",
        "clicked_banner",
        "proxy",
    ]
    cases = {}
    for key in keys:
        seed = (SEEDS / f"003_{key}.html").read_text()
        cases[f"seed:{key}"] = seed if key == "proxy" else script_body(seed)
        cases[f"ours:{key}"] = script_body(generated[key])
    trees = ast(cases)
    for key in keys:
        assert isinstance(trees[f"seed:{key}"], dict), trees[f"seed:{key}"]
        assert trees[f"ours:{key}"] == trees[f"seed:{key}"], key
    seed_loader = (SEEDS / "003_loader.html").read_text()
    src = re.search(r"src='([^']+)'", seed_loader)
    assert src and f'src="{src.group(1).replace("PUBLIC_API_KEY", "ABC123")}"' in generated["loader"]
    assert 'async=""' in generated["loader"]


def test_legacy_learnq_reproduces_the_older_guide_on_request():
    literal = {
        "ProductName": '"Winnie the Pooh"',
        "ProductID": '"1111"',
        "SKU": '"WINNIEPOOH"',
        "Categories": '["Fiction", "Children"]',
        "ImageURL": '"http://www.example.com/path/to/product/image.png"',
        "URL": '"http://www.example.com/path/to/product"',
        "Brand": '"Kids Books"',
        "Price": "9.99",
        "CompareAtPrice": "14.99",
    }
    spec = OnsiteSpec(legacy=True, metrics={"Viewed Product": MetricBinding(fields=literal)})
    generated = {s.key: s.code for s in generate(spec, "ABC123")}
    assert "proxy" not in generated
    assert "klaviyo." not in generated["viewed_product"] + generated["viewed_item"]
    cases = {}
    for key in ("viewed_product", "viewed_item"):
        cases[f"seed:{key}"] = script_body((SEEDS / f"001_{key}.html").read_text())
        cases[f"ours:{key}"] = script_body(generated[key])
    trees = ast(cases)
    assert trees["ours:viewed_product"] == trees["seed:viewed_product"]
    # The older guide's snippet relies on the Viewed Product snippet's `var _learnq` above it.
    ours = trees["ours:viewed_item"]
    assert ours["body"][-1] == trees["seed:viewed_item"]["body"][-1]


def test_legacy_identify_uses_the_track_api_names():
    spec = OnsiteSpec(legacy=True, identify={"email": "customer.email", "external_id": "customer.id"})
    code = {s.key: s.code for s in generate(spec, "ABC123")}["identify"]
    assert '_learnq.push(["identify", {' in code
    assert '"$email": customer.email' in code and '"$id": customer.id' in code


# ---------------------------------------------------------------- bindings and the loader


def test_a_binding_that_is_neither_a_path_nor_json_says_so():
    spec = OnsiteSpec(metrics={"Viewed Product": MetricBinding(fields={"ProductID": "product.id; alert(1)"})})
    with pytest.raises(BindingError, match=r"Viewed Product ProductID: 'product.id; alert\(1\)' is not"):
        generate(spec, "ABC123")
    spec = OnsiteSpec(metrics={"Viewed Product": MetricBinding(fields={"Price": '"9.99'})})
    with pytest.raises(BindingError, match="starts like a JSON value but is not one"):
        generate(spec, "ABC123")
    spec = OnsiteSpec(
        syntax=Syntax.HANDLEBARS, metrics={"Viewed Product": MetricBinding(fields={"SKU": "p.skus[0]"})}
    )
    with pytest.raises(BindingError, match="Handlebars paths cannot use"):
        generate(spec, "ABC123")


def test_the_loader_needs_a_six_character_public_key():
    with pytest.raises(BindingError, match="not six letters or digits"):
        generate(OnsiteSpec(), "pk_live_secret")
    (loader,) = [s for s in generate(OnsiteSpec(), "SBX000", "http://127.0.0.1:8100") if s.key == "loader"]
    assert 'src="http://127.0.0.1:8100/onsite/js/SBX000/klaviyo.js"' in loader.code


# ---------------------------------------------------------------- consistency warnings


def catalog(id_column: str) -> Mapping:
    return Mapping(
        name="Products",
        target=Target(kind=TargetKind.CATALOG_ITEM),
        fields=[column(id_column, "external_id"), column("Title", "title")],
    )


def orders(product_column: str) -> Mapping:
    return Mapping(
        name="Orders",
        target=Target(kind=TargetKind.ORDER),
        fields=[column("Order", "unique_id"), column(product_column, "item.ProductID")],
    )


def messages(spec: OnsiteSpec, *args: Any) -> dict[tuple[str, str], str]:
    return {(f.metric, f.field): f.message for f in check(spec, *args)}


def test_a_consistent_setup_has_no_warning():
    assert messages(store_spec(Syntax.JS), catalog("id"), orders("product_id")) == {}


def test_product_id_from_another_field_than_the_catalogs_external_id_is_flagged():
    found = messages(store_spec(Syntax.JS), catalog("Handle"), orders("product_id"))
    assert set(found) == {("Viewed Product", "ProductID"), ("Added to Cart", "AddedItemProductID")}
    assert "takes external_id from 'Handle'" in found[("Viewed Product", "ProductID")]
    assert "Recently Viewed Items will not match" in found[("Viewed Product", "ProductID")]
    found = messages(store_spec(Syntax.JS), catalog("id"), orders("Lineitem sku"))
    assert (
        "fills Placed Order's ProductID from 'Lineitem sku'" in found[("Started Checkout", "Items.ProductID")]
    )
    assert "No catalog mapping" in messages(store_spec(Syntax.JS))[("Viewed Product", "ProductID")]


def test_checkout_without_cart_id_and_time_event_id_is_flagged():
    spec = store_spec(Syntax.JS)
    checkout = spec.metrics["Started Checkout"]
    fields = {k: v for k, v in checkout.fields.items() if k != "$event_id"}
    missing = spec.model_copy(
        update={"metrics": {"Started Checkout": checkout.model_copy(update={"fields": fields})}}
    )
    assert "no $event_id" in messages(missing, catalog("id"))[("Started Checkout", "$event_id")]
    fixed = {**fields, "$event_id": '"1000123"'}
    constant = spec.model_copy(
        update={"metrics": {"Started Checkout": checkout.model_copy(update={"fields": fixed})}}
    )
    assert "fixed value" in messages(constant, catalog("id"))[("Started Checkout", "$event_id")]


def test_missing_value_on_cart_events_is_flagged():
    spec = store_spec(Syntax.JS)
    metrics = {
        name: b.model_copy(update={"fields": {k: v for k, v in b.fields.items() if k != "$value"}})
        for name, b in spec.metrics.items()
    }
    found = messages(spec.model_copy(update={"metrics": metrics}), catalog("id"), orders("product_id"))
    assert set(found) == {("Added to Cart", "$value"), ("Started Checkout", "$value")}
    assert "revenue" in found[("Added to Cart", "$value")]


def test_no_identify_is_flagged():
    spec = store_spec(Syntax.JS).model_copy(update={"identify": {"first_name": "customer.first_name"}})
    found = messages(spec, catalog("id"), orders("product_id"))
    assert list(found) == [("identify", "email")]
    assert "anonymous browsers" in found[("identify", "email")]


def test_onsite_events_carry_what_the_server_side_presets_send_for_the_same_data():
    """The guide's events, sent by the snippets, equal the properties the server-side presets build
    from the same data (tests/sync/test_presets.py reproduces them from a flat CSV)."""
    server = json.loads((Path(__file__).parent / "data" / "seed_onsite_events.json").read_text())["events"]
    html = "\n".join(s.code for s in generate(guide_spec(), "ABC123"))
    item = server["Viewed Product"]
    result = node([{"id": "guide", "engine": "html", "template": html, "globals": {"item": item}}])["guide"]
    assert result["errors"] == []
    sent = {call[1]: call[2] for call in result["calls"] if call[0] == "track"}
    for metric, properties in server.items():
        # The flat CSV of the server-side test has no line items; the guide's are checked apart.
        items = sent[metric].pop("Items", None)
        assert sent[metric] == properties, metric
        assert items in (None, json.loads(ADDED_ITEMS))


def test_template_bindings_may_end_with_filters_that_run_before_the_json_output():
    store = {"product": {"id": "1111", "price_cents": 1999, "title": "winnie </script>"}}
    fields = {"ProductID": "product.id", "Price": "product.price_cents | divided_by: 100.0"}
    liquid = OnsiteSpec(syntax=Syntax.LIQUID, metrics={"Viewed Product": MetricBinding(fields=fields)})
    jinja_fields = {
        "ProductID": "product.id",
        "ProductName": "product.title | upper",
        "Price": "product.price_cents / 100",
    }
    twig_fields = {
        "ProductID": "product.id",
        "ProductName": "product.title|upper",
        "Price": "product.price_cents|round(0)",
    }
    with pytest.raises(BindingError, match="is not a variable path"):
        generate(
            OnsiteSpec(syntax=Syntax.JINJA, metrics={"Viewed Product": MetricBinding(fields=jinja_fields)}),
            "ABC123",
        )
    jinja_fields["Price"] = "product.price_cents | round(0)"
    jinja = OnsiteSpec(syntax=Syntax.JINJA, metrics={"Viewed Product": MetricBinding(fields=jinja_fields)})
    twig = OnsiteSpec(syntax=Syntax.TWIG, metrics={"Viewed Product": MetricBinding(fields=twig_fields)})

    def html(spec: OnsiteSpec) -> str:
        return "\n".join(s.code for s in generate(spec, "ABC123") if s.key == "viewed_product")

    cases = [
        {"id": "liquid", "engine": "liquid", "template": html(liquid), "context": store},
        {"id": "twig", "engine": "twig", "template": html(twig), "context": store},
        {
            "id": "jinja",
            "engine": "html",
            "template": jinja2.Environment(autoescape=True).from_string(html(jinja)).render(store),
        },
    ]
    results = node(cases)
    sent = {key: r["calls"][0][2] for key, r in results.items()}
    assert sent["liquid"] == {"ProductID": "1111", "Price": 19.99}
    assert (
        sent["jinja"]
        == sent["twig"]
        == {"ProductName": "WINNIE </SCRIPT>", "ProductID": "1111", "Price": 1999}
    )


def test_filters_are_refused_where_they_cannot_work_or_could_break_the_template():
    for syntax in (Syntax.JS, Syntax.HANDLEBARS):
        spec = OnsiteSpec(
            syntax=syntax, metrics={"Viewed Product": MetricBinding(fields={"Price": "p.price | round"})}
        )
        with pytest.raises(BindingError, match="filters .* work in Liquid, Jinja and Twig"):
            generate(spec, "ABC123")
    for bad in ("p.price | x }}{{ evil", "p.price | default: '{%'", "p.price |"):
        spec = OnsiteSpec(
            syntax=Syntax.LIQUID, metrics={"Viewed Product": MetricBinding(fields={"Price": bad})}
        )
        with pytest.raises(BindingError, match="is not a filter chain"):
            generate(spec, "ABC123")
