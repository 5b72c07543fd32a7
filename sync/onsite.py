"""Onsite tracking snippets (klaviyo.js) generated from the same property names as the server side.

The operator binds each property of an onsite metric to a variable of the store's page
(``product.id`` -> ProductID) or to a JSON literal; the generator writes copy-ready snippets in
the store's template syntax, with every store value escaped by that syntax's JSON filter so a
quote, ``</script>`` or any unicode in a product name cannot break the page.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sync.mapping import ColumnSource, Mapping, PathSource, TemplateSource, parse_path
from sync.presets import STANDARD_METRICS

SCRIPT_HOST = "https://static.klaviyo.com"
PUBLIC_KEY_RE = re.compile(r"^[A-Za-z0-9]{6}$")
ONSITE_METRICS = (
    "Viewed Product",
    "Added to Cart",
    "Started Checkout",
    "Viewed Category",
    "Searched Site",
    "Clicked Banner",
)
OPTIONAL_METRICS = frozenset({"Viewed Category", "Searched Site", "Clicked Banner"})
IDENTIFY_FIELDS = ("email", "phone_number", "external_id", "first_name", "last_name")
# The legacy Track API (_learnq) names profile fields with a $ prefix; $id is the external id.
_LEGACY_IDENTIFY = {
    "email": "$email",
    "phone_number": "$phone_number",
    "external_id": "$id",
    "first_name": "$first_name",
    "last_name": "$last_name",
}
# Leading special properties per metric (seed 003 puts them first); the rest come from the presets.
_SPECIAL = {"Added to Cart": ("$value",), "Started Checkout": ("$event_id", "$value")}
_WITH_ITEMS = frozenset({"Added to Cart", "Started Checkout"})
# Store paths: identifiers joined by dots, with [n] indexes (no calls, no operators).
_PATH_RE = re.compile(r"^[A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*|\[\d+\])*$")
# Template filters after a path: | name, | name: args (Liquid), | name(args) (Jinja, Twig); nothing
# that could close or open a template tag.
_FILTERS_RE = re.compile(r"^(?:\s*\|\s*[A-Za-z_]\w*\s*(?:\([^{}%#\n|]*\)|:[^{}%#\n|]+)?\s*)+$")
# Characters a string literal must not carry raw: '<' ends a script ('</script>', '<!--');
# braces could open a template tag ('{{', '{%'); U+2028/9 end a line in old JS engines.
_UNSAFE_IN_STRINGS = {"<": "\\u003c", ">": "\\u003e", "{": "\\u007b", "}": "\\u007d"}
_UNSAFE_IN_STRINGS.update({"\u2028": "\\u2028", "\u2029": "\\u2029", "&": "\\u0026"})
_UNSAFE_RE = re.compile("[<>{}&\u2028\u2029]")

# The Handlebars helper the snippets call ({{{json value}}}): Handlebars has no JSON output of its
# own, and its {{ }} HTML-escapes, which is wrong inside a script. Register it once on the server.
HANDLEBARS_JSON_HELPER = (
    "Handlebars.registerHelper('json', function (value) {\n"
    "  var text = JSON.stringify(value === undefined ? null : value);\n"
    "  return text.replace(/</g, '\\\\u003c').replace(/>/g, '\\\\u003e')"
    ".replace(/\\u2028/g, '\\\\u2028').replace(/\\u2029/g, '\\\\u2029');\n"
    "});"
)

# Seed 003: the klaviyo object proxy, for pages that call klaviyo before klaviyo.js has loaded.
PROXY_SNIPPET = """!(function () {
  if (!window.klaviyo) {
    window._klOnsite = window._klOnsite || []
    try {
      window.klaviyo = new Proxy(
        {},
        {
          get: function (n, i) {
            return 'push' === i ?
                function () {
                  var n
                  ;(n = window._klOnsite).push.apply(n, arguments)
                }
              : function () {
                  for (
                    var n = arguments.length, o = new Array(n), w = 0;
                    w < n;
                    w++
                  )
                    o[w] = arguments[w]
                  var t =
                      'function' == typeof o[o.length - 1] ? o.pop() : void 0,
                    e = new Promise(function (n) {
                      window._klOnsite.push(
                        [i].concat(o, [
                          function (i) {
                            ;(t && t(i), n(i))
                          }
                        ])
                      )
                    })
                  return e
                }
          }
        }
      )
    } catch (n) {
      ;((window.klaviyo = window.klaviyo || []),
        (window.klaviyo.push = function () {
          var n
          ;(n = window._klOnsite).push.apply(n, arguments)
        }))
    }
  }
})()"""


class Syntax(StrEnum):
    """How store values are written into the snippet."""

    JS = "js"
    LIQUID = "liquid"
    JINJA = "jinja"
    TWIG = "twig"
    HANDLEBARS = "handlebars"


SYNTAX_LABELS = {
    Syntax.JS: "Plain JavaScript (page variables)",
    Syntax.LIQUID: "Liquid (Shopify)",
    Syntax.JINJA: "Jinja",
    Syntax.TWIG: "Twig",
    Syntax.HANDLEBARS: "Handlebars",
}


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MetricBinding(_Spec):
    """Where each property of one onsite metric comes from on the store's page.

    ``fields`` maps a property (``ProductID``, ``$value``) to a store path or a JSON literal;
    ``items_path`` names the cart's list of lines and ``item_fields`` each line's fields (paths
    relative to one line) for ``Items``; ``ItemNames`` is derived from the lines when not bound.
    """

    enabled: bool = True
    fields: dict[str, str] = Field(default_factory=dict)
    items_path: str = ""
    item_fields: dict[str, str] = Field(default_factory=dict)


class OnsiteSpec(_Spec):
    """Everything the generator needs besides the account's public key."""

    syntax: Syntax = Syntax.JS
    legacy: bool = False
    identify: dict[str, str] = Field(default_factory=dict)
    metrics: dict[str, MetricBinding] = Field(default_factory=dict)

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, value: dict[str, MetricBinding]) -> dict[str, MetricBinding]:
        unknown = [name for name in value if name not in ONSITE_METRICS]
        if unknown:
            raise ValueError(f"unknown onsite metric {unknown[0]!r}; known: {', '.join(ONSITE_METRICS)}")
        return value


class BindingError(ValueError):
    """A binding that is neither a store path nor a JSON literal; the message names the field."""


@dataclass(frozen=True, slots=True)
class Snippet:
    """One copy-ready snippet: where it goes and its text."""

    key: str
    title: str
    placement: str
    code: str


@dataclass(frozen=True, slots=True)
class Finding:
    """A consistency warning: which metric and property, and why it matters."""

    metric: str
    field: str
    message: str


def metric_properties(metric: str) -> tuple[str, ...]:
    """The properties of an onsite metric: its special $ properties, then the server preset's."""
    return (*_SPECIAL.get(metric, ()), *STANDARD_METRICS[metric].properties)


def item_properties(metric: str) -> tuple[str, ...]:
    """The keys of one ``Items`` entry, as the server-side preset writes them."""
    return STANDARD_METRICS[metric].item_properties if metric in _WITH_ITEMS else ()


# ---------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class _Value:
    literal: bool
    text: str  # the store path, or the JS text of the literal


def js_literal(value: Any) -> str:
    """A JSON value as JavaScript text safe inside a <script> and inside any template syntax."""
    if isinstance(value, dict):
        if not value:
            return "{}"
        return "{" + ", ".join(f"{js_literal(str(k))}: {js_literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(js_literal(v) for v in value) + "]"
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        return _UNSAFE_RE.sub(lambda m: _UNSAFE_IN_STRINGS[m.group(0)], text)
    return json.dumps(value)


def split_filters(binding: str) -> tuple[str, str]:
    """A template binding as (variable path, filter chain): 'p.price | divided_by: 100' ->
    ('p.price', ' | divided_by: 100')."""
    path, bar, rest = binding.partition("|")
    return path.strip(), (bar + rest) if bar else ""


def store_path(binding: str) -> str:
    """The variable a binding reads, without its template filters."""
    return split_filters(binding.strip())[0]


def parse_binding(raw: str, syntax: Syntax, where: str) -> _Value | None:
    """A binding as a store path or a literal (None when empty); BindingError says what is wrong."""
    text = raw.strip()
    if not text:
        return None
    if text[0] in "\"'[{-0123456789" or text in ("true", "false", "null"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BindingError(
                f"{where}: {text!r} starts like a JSON value but is not one ({exc.msg} at {exc.pos + 1}); "
                'write text in double quotes, e.g. "Kids Books"'
            ) from None
        return _Value(True, js_literal(value))
    path, filters = split_filters(text)
    if filters:
        if syntax not in (Syntax.LIQUID, Syntax.JINJA, Syntax.TWIG):
            raise BindingError(
                f"{where}: {text!r}: filters ('|') work in Liquid, Jinja and Twig bindings; "
                "in plain JavaScript and Handlebars bind the variable itself"
            )
        if not _FILTERS_RE.match(filters):
            raise BindingError(
                f"{where}: {filters.strip()!r} is not a filter chain such as | divided_by: 100.0 or "
                "| round(2); braces, % and # are not allowed in a binding"
            )
    if not _PATH_RE.match(path):
        raise BindingError(
            f"{where}: {text!r} is not a variable path; use names joined by dots, e.g. product.id "
            "or cart.items[0].sku, or a JSON value in double quotes"
        )
    if syntax is not Syntax.JS and "$" in path:
        raise BindingError(f"{where}: {text!r}: template variables cannot contain '$'")
    if syntax is Syntax.HANDLEBARS and "[" in path:
        raise BindingError(f"{where}: {text!r}: Handlebars paths cannot use [n]; bind a named field")
    return _Value(False, text)


def _expr(value: _Value, syntax: Syntax) -> str:
    """The JavaScript source text that yields the value when the store renders the template."""
    if value.literal or syntax is Syntax.JS:
        return value.text
    path = value.text
    # '<' can only occur inside a JSON string: ending the string there and concatenating the rest
    # leaves no '</script>' or '<!--' and needs no backslash, which template engines read
    # differently (liquidjs unescapes it, Shopify's Liquid does not).
    if syntax is Syntax.LIQUID:
        return "{{ " + path + " | json | replace: '<', '<\" + \"' }}"
    if syntax is Syntax.JINJA:
        return "{{ " + path + "|tojson }}"
    if syntax is Syntax.TWIG:
        return "{{ " + path + "|json_encode|replace({'<': '<\" + \"'})|raw }}"
    return "{{{json " + path + "}}}"


def _line_path(field: str, syntax: Syntax) -> str:
    return f"this.{field}" if syntax is Syntax.HANDLEBARS else f"line.{field}"


def _loop(items: str, body: str, syntax: Syntax) -> str:
    """A JS array with ``body`` once per cart line (``line`` in the body is the current line)."""
    if syntax is Syntax.JS:
        return f"{items}.map(function (line) {{ return {body}; }})"
    if syntax is Syntax.LIQUID:
        return (
            f"[{{% for line in {items} %}}{body}{{% unless forloop.last %}}, {{% endunless %}}{{% endfor %}}]"
        )
    if syntax in (Syntax.JINJA, Syntax.TWIG):
        return f"[{{% for line in {items} %}}{body}{{% if not loop.last %}}, {{% endif %}}{{% endfor %}}]"
    return f"[{{{{#each {items}}}}}{body}{{{{#unless @last}}}}, {{{{/unless}}}}{{{{/each}}}}]"


# ---------------------------------------------------------------- generation


def _call(spec: OnsiteSpec, method: str, *args: str) -> str:
    if spec.legacy:
        return f"_learnq.push([{', '.join([js_literal(method), *args])}]);"
    return f"klaviyo.{method}({', '.join(args)});"


def _object(pairs: list[tuple[str, str]], indent: str) -> str:
    if not pairs:
        return "{}"
    inner = ",\n".join(f"{indent}  {js_literal(key)}: {text}" for key, text in pairs)
    return "{\n" + inner + "\n" + indent + "}"


def _script(body: str) -> str:
    return '<script type="text/javascript">\n' + body + "\n</script>"


def loader_snippet(public_key: str, script_host: str = SCRIPT_HOST) -> str:
    """The Active on Site script tag with the account's public key (company id)."""
    if not PUBLIC_KEY_RE.match(public_key or ""):
        raise BindingError(
            f"the public API key {public_key!r} is not six letters or digits; "
            "copy it from Klaviyo's Settings > API keys"
        )
    src = f"{script_host.rstrip('/')}/onsite/js/{public_key}/klaviyo.js"
    return f'<script type="text/javascript" async="" src="{src}"></script>'


def identify_snippet(spec: OnsiteSpec) -> str | None:
    """identify() with the bound profile fields, only when the page knows an email or phone."""
    values = _bound(spec.identify, IDENTIFY_FIELDS, spec.syntax, "identify")
    if not values:
        return None
    keys = _LEGACY_IDENTIFY if spec.legacy else {name: name for name in IDENTIFY_FIELDS}
    pairs = [(keys[name], _expr(value, spec.syntax)) for name, value in values.items()]
    call = _call(spec, "identify", _object(pairs, "    "))
    guard = next((v for n, v in values.items() if n in ("email", "phone_number", "external_id")), None)
    lines = ["  var _learnq = _learnq || [];"] if spec.legacy else []
    if guard is not None and not guard.literal:
        # Identify only a known shopper: an empty email would make an empty profile.
        test = _guard(guard.text, spec.syntax)
        lines += [f"  if ({test}) {{", f"    {call}", "  }"]
    else:
        lines.append(f"  {call}")
    return _script("\n".join(lines))


def _guard(path: str, syntax: Syntax) -> str:
    if syntax is Syntax.JS:
        # typeof keeps a page without the variable at all from throwing.
        root = re.split(r"[.\[]", path, maxsplit=1)[0]
        return f"typeof {root} !== 'undefined' && {path}"
    return _expr(_Value(False, path), syntax)


def _bound(fields: dict[str, str], names: tuple[str, ...], syntax: Syntax, where: str) -> dict[str, _Value]:
    out: dict[str, _Value] = {}
    unknown = [name for name in fields if name not in names]
    if unknown:
        raise BindingError(f"{where}: {unknown[0]!r} is not a property here; known: {', '.join(names)}")
    for name in names:
        value = parse_binding(fields.get(name, ""), syntax, f"{where} {name}")
        if value is not None:
            out[name] = value
    return out


def _items(metric: str, binding: MetricBinding, syntax: Syntax) -> tuple[str | None, str | None]:
    """(Items, ItemNames) JS texts built from the cart lines, when the lines are bound."""
    keys = item_properties(metric)
    fields = _bound(binding.item_fields, keys, syntax, f"{metric} Items")
    items = parse_binding(binding.items_path, syntax, f"{metric} cart lines")
    if items is None or items.literal or not fields:
        return None, None
    line = {
        name: _expr(_Value(False, _line_path(v.text, syntax)), syntax) if not v.literal else v.text
        for name, v in fields.items()
    }
    # Spaces keep the object's braces apart from the template tags' ({{{json x}}} }).
    body = "{ " + ", ".join(f"{js_literal(name)}: {text}" for name, text in line.items()) + " }"
    names = line.get("ProductName")
    return _loop(items.text, body, syntax), _loop(items.text, names, syntax) if names else None


def metric_snippets(spec: OnsiteSpec, metric: str) -> list[Snippet]:
    """The snippet(s) of one metric (Viewed Product adds trackViewedItem below it)."""
    binding = spec.metrics.get(metric, MetricBinding())
    syntax = spec.syntax
    props = metric_properties(metric)
    values = _bound(binding.fields, props, syntax, metric)
    texts = {name: _expr(value, syntax) for name, value in values.items()}
    if metric in _WITH_ITEMS:
        items, names = _items(metric, binding, syntax)
        if "Items" not in texts and items:
            texts["Items"] = items
        if "ItemNames" not in texts and names:
            texts["ItemNames"] = names
    if "$event_id" in values and not values["$event_id"].literal:
        # Seed 003: cart id + the UNIX time, so a shopper who returns to checkout counts again.
        texts["$event_id"] = texts["$event_id"] + ' + "_" + Math.floor(Date.now() / 1000)'
    pairs = [(name, texts[name]) for name in props if name in texts]
    prefix = ["  var _learnq = _learnq || [];"] if spec.legacy else []
    if metric == "Viewed Product":
        view = prefix + [
            f"  var item = {_object(pairs, '  ')};",
            "  " + _call(spec, "track", js_literal(metric), "item"),
        ]
        out = [Snippet("viewed_product", metric, "product page", _script("\n".join(view)))]
        out.append(
            Snippet(
                "viewed_item",
                "Recently Viewed Items",
                "product page, below Viewed Product",
                _script(_viewed_item(spec)),
            )
        )
        return out
    body = prefix + ["  " + _call(spec, "track", js_literal(metric), _object(pairs, "  "))]
    key = metric.lower().replace(" ", "_")
    return [Snippet(key, metric, PLACEMENTS[metric], _script("\n".join(body)))]


PLACEMENTS = {
    "Added to Cart": "after an item is added to the cart (cart page or add-to-cart handler)",
    "Started Checkout": "checkout page, once the shopper is identified",
    "Viewed Category": "category page",
    "Searched Site": "search results page",
    "Clicked Banner": "the banner's click handler",
}


def _viewed_item(spec: OnsiteSpec) -> str:
    # Seed 003 reads the item object the Viewed Product snippet just built.
    meta = _object(
        [("Brand", "item.Brand"), ("Price", "item.Price"), ("CompareAtPrice", "item.CompareAtPrice")], "    "
    )
    pairs = [
        ("Title", "item.ProductName"),
        ("ItemId", "item.ProductID"),
        ("Categories", "item.Categories"),
        ("ImageUrl", "item.ImageURL"),
        ("Url", "item.URL"),
        ("Metadata", meta),
    ]
    return "  " + _call(spec, "trackViewedItem", _object(pairs, "  "))


def generate(spec: OnsiteSpec, public_key: str, script_host: str = SCRIPT_HOST) -> list[Snippet]:
    """Every snippet in page order: loader, proxy (not for legacy), identify, enabled metrics."""
    out = [
        Snippet(
            "loader",
            "Active on Site (klaviyo.js)",
            "every page, end of the footer",
            loader_snippet(public_key, script_host),
        )
    ]
    if not spec.legacy:
        out.append(
            Snippet("proxy", "klaviyo object", "every page, before any klaviyo call", _script(PROXY_SNIPPET))
        )
    identify = identify_snippet(spec)
    if identify:
        out.append(
            Snippet("identify", "identify", "every page, as soon as an email or phone is known", identify)
        )
    for metric in ONSITE_METRICS:
        binding = spec.metrics.get(metric)
        if binding is None or not binding.enabled:
            continue
        out.extend(metric_snippets(spec, metric))
    return out


def download_text(snippets: list[Snippet], header: list[str], spec: OnsiteSpec) -> str:
    """All snippets as one file, each under an HTML comment naming where it goes."""
    lines = [f"<!-- {text.replace('--', '- -')} -->" for text in header]
    if spec.syntax is Syntax.HANDLEBARS:
        lines.append("<!-- Register this helper once on the server:\n" + HANDLEBARS_JSON_HELPER + "\n-->")
    for snippet in snippets:
        lines += ["", f"<!-- {snippet.title}: {snippet.placement} -->", snippet.code]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- consistency


def _last_name(path: str) -> str:
    parts = [p for p in parse_path(store_path(path)) if isinstance(p, str)]
    return re.sub(r"[^a-z0-9]", "", parts[-1].lower()) if parts else ""


def _source_field(mapping: Mapping, target: str) -> str | None:
    for rule in mapping.fields:
        if rule.target != target:
            continue
        src = rule.source
        if isinstance(src, ColumnSource):
            return src.column
        if isinstance(src, PathSource):
            return src.path
        if isinstance(src, TemplateSource):
            return src.template
    return None


def _same_field(store_path: str, source: str) -> bool:
    try:
        return _last_name(store_path) == _last_name(source)
    except ValueError:
        return re.sub(r"[^a-z0-9]", "", source.lower()) == _last_name(store_path)


def check(spec: OnsiteSpec, catalog: Mapping | None = None, orders: Mapping | None = None) -> list[Finding]:
    """Warnings for snippets whose data will not line up with the catalog and server-side events."""
    out: list[Finding] = []
    enabled = {m: b for m, b in spec.metrics.items() if b.enabled}
    known = {k: v for k, v in spec.identify.items() if v.strip()}
    if not enabled:
        out.append(Finding("", "", "No onsite metric is enabled: only Active on Site will be tracked."))
    if not any(name in known for name in ("email", "phone_number", "external_id")):
        out.append(
            Finding(
                "identify",
                "email",
                (
                    "identify is never called: Klaviyo does not track anonymous browsers, so every onsite "
                    "event is dropped until the shopper is identified by a form or an email click. "
                    "Bind the customer's "
                    "email or phone so the page identifies a signed-in shopper before tracking."
                ),
            )
        )
    catalog_id = _source_field(catalog, "external_id") if catalog else None
    order_id = _source_field(orders, "item.ProductID") if orders else None
    for metric, binding in enabled.items():
        product = {"Viewed Product": "ProductID", "Added to Cart": "AddedItemProductID"}.get(metric)
        if product:
            out.extend(_product_id(metric, product, binding.fields.get(product, ""), catalog, catalog_id))
        if metric in _WITH_ITEMS:
            line_id = binding.item_fields.get("ProductID", "").strip()
            if line_id and order_id and not line_id.startswith('"') and not _same_field(line_id, order_id):
                out.append(
                    Finding(
                        metric,
                        "Items.ProductID",
                        (
                            f"Items ProductID comes from the line's {line_id!r}, but the order mapping "
                            f"{orders.name if orders else ''!r} fills Placed Order's ProductID from "
                            f"{order_id!r}: abandoned-cart emails and product recommendations "
                            "will not match ordered products."
                        ),
                    )
                )
            if not binding.fields.get("$value", "").strip():
                out.append(
                    Finding(
                        metric,
                        "$value",
                        (
                            f"{metric} has no $value: revenue reports and flow filters on the cart value see "
                            "nothing; bind it to the cart total."
                        ),
                    )
                )
    checkout = enabled.get("Started Checkout")
    if checkout is not None:
        event_id = checkout.fields.get("$event_id", "").strip()
        if not event_id:
            out.append(
                Finding(
                    "Started Checkout",
                    "$event_id",
                    (
                        "Started Checkout has no $event_id: bind it to the cart id (the snippet adds "
                        "the time), "
                        "so Klaviyo keeps one event per checkout visit instead of one per second."
                    ),
                )
            )
        elif event_id[0] in "\"'0123456789-":
            out.append(
                Finding(
                    "Started Checkout",
                    "$event_id",
                    (
                        "Started Checkout's $event_id is a fixed value: Klaviyo keeps only the first "
                        "event with "
                        "it, so a shopper returning to checkout is not tracked again. Bind it to the cart id."
                    ),
                )
            )
    return out


def _product_id(
    metric: str, name: str, binding: str, catalog: Mapping | None, catalog_id: str | None
) -> list[Finding]:
    binding = binding.strip()
    if not binding:
        return [
            Finding(
                metric,
                name,
                (
                    f"{name} is not bound: Viewed Product and Recently Viewed Items cannot be matched to the "
                    "catalog, so browse-abandonment emails show no product."
                ),
            )
        ]
    if catalog is None:
        return [
            Finding(
                metric,
                name,
                (
                    "No catalog mapping to compare with: make sure this is the id the catalog feed uses as "
                    "external_id, or recommendations will not match."
                ),
            )
        ]
    if catalog_id is None:
        return [Finding(metric, name, f"The catalog mapping {catalog.name!r} maps no external_id.")]
    if binding[0] in "\"'0123456789-" or not _same_field(binding, catalog_id):
        return [
            Finding(
                metric,
                name,
                (
                    f"{name} comes from {binding!r}, but the catalog mapping {catalog.name!r} takes "
                    f"external_id from {catalog_id!r}: recommendations and Recently Viewed Items "
                    "will not match catalog items."
                ),
            )
        ]
    return []
