"""Value maps: listed source values -> target values, with presets for common translations."""

from __future__ import annotations

from typing import Any

import pycountry

from sync import transforms as tf
from sync.issues import Issue, RuleError
from sync.mapping import MapValues, Transform

# Shopify's variant inventory policy -> Klaviyo's: 1 hides an out-of-stock variant from product
# feeds and blocks ("deny": not sold when out of stock), 0 shows it whatever its stock ("continue").
INVENTORY_POLICY: dict[str, Any] = {"deny": 1, "continue": 0}
PRESETS: dict[str, str] = {
    "yes_no": "yes / no -> true / false",
    "inventory_policy": "continue / deny -> Klaviyo's inventory policy (0 / 1)",
    "country_code": "country names -> ISO codes (Germany -> DE)",
}


def _country(text: str) -> str:
    try:
        return str(pycountry.countries.lookup(text).alpha_2)
    except LookupError:
        raise RuleError("unknown_country", f"{text!r} is not a country name or code") from None


def _preset(name: str, text: str) -> Any:
    if name == "yes_no":
        return tf.to_boolean(text)
    if name == "inventory_policy":
        if text.lower() in INVENTORY_POLICY:
            return INVENTORY_POLICY[text.lower()]
        if text in ("0", "1", "2"):
            return int(text)
        raise RuleError(
            "invalid_inventory_policy", f"{text!r} is not an inventory policy (continue, deny, 0, 1 or 2)"
        )
    return _country(text)


def implicit(target: str, specs: list[Transform]) -> list[Transform]:
    """``specs`` with the value map a target always needs put first (Shopify's policy words)."""
    if target == "inventory_policy" and not any(isinstance(s, MapValues) for s in specs):
        return [MapValues(preset="inventory_policy"), *specs]
    return specs


def compile_map(spec: MapValues) -> Any:
    """A transform step: the listed value's target, else the preset's answer, else the default."""
    table = {str(k).strip().lower(): v for k, v in spec.values.items()}
    default, keep, preset = spec.default, spec.keep_unlisted, spec.preset

    def one(value: Any) -> Any:
        text = value.strip() if isinstance(value, str) else str(value)
        key = text.lower()
        if key in table:
            return table[key]
        if preset is not None:
            try:
                return _preset(preset, text)
            except RuleError:
                if default is None:
                    raise
        if default is not None:
            return default
        if keep:
            return value
        listed = ", ".join(repr(k) for k in list(spec.values)[:5])
        raise RuleError("unmapped_value", f"{text!r} is not one of the mapped values ({listed})")

    def step(value: Any, warnings: list[Issue]) -> Any:
        if type(value) is list:
            return [one(item) for item in value]
        return one(value)

    return step
