"""Helpers shared by the target builders: target checks, stable row hashes, catalog ids."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from collections.abc import Mapping as RowMapping
from typing import Any

import orjson

from sync.issues import MappingError

__all__ = [
    "Item",
    "MappingError",
    "catalog_id",
    "check_targets",
    "row_hash",
    "split_target",
]

Item = dict[str, Any]


def split_target(target: str) -> tuple[str, ...]:
    """``properties.BillingAddress.City`` -> ("properties", "BillingAddress", "City")."""
    return tuple(target.split("."))


def check_targets(
    targets: Iterable[str], allowed: frozenset[str], prefixes: tuple[str, ...], kind: str
) -> None:
    """Raise MappingError naming every target the builder cannot place."""
    unknown = [t for t in targets if t not in allowed and not t.startswith(prefixes)]
    if unknown:
        names = ", ".join(sorted(allowed)) + (
            ", " + ", ".join(p + "<name>" for p in prefixes) if prefixes else ""
        )
        raise MappingError(f"{kind} mappings cannot send {', '.join(unknown)}; allowed targets: {names}")


def row_hash(row: RowMapping[str, Any], salt: str = "") -> str:
    """A stable id for a row that has no key of its own (same content, same id)."""
    data = orjson.dumps(row, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str)
    return hashlib.blake2b(
        data, digest_size=16, person=b"klaviyo-sync-row", key=salt.encode()[:64]
    ).hexdigest()


def catalog_id(external_id: str) -> str:
    """Klaviyo's compound catalog id for a custom catalog entry."""
    return f"$custom:::$default:::{external_id}"
