"""Match the items a bulk job refused to the rows they came from, whatever form Klaviyo's pointer takes.

Klaviyo's spec types an import error's ``source.pointer`` as a string and leaves its form open
(ErrorSource, openapi/stable/apis/get_errors_for_bulk_import_profiles_job.json in klaviyo/openapi);
each import error also carries ``original_payload``, the profile as sent. So a refusal is matched:

1. by the identifiers in ``original_payload`` (email, phone number, external id, id / catalog id)
   against the batch's items, when it has any and they match an item (the pointer's index breaks ties);
   a catalog job error, which has no payload, by the compound catalog id its detail names;
2. else by the item index in the pointer, absolute (``/data/attributes/profiles/data/3/...``) or
   relative to the items array (``/3/...``);
3. else not at all: the caller counts it as "refused by Klaviyo, row unknown".
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from klaviyo.batching import RowRejection
from klaviyo.errors import item_index
from klaviyo.serialization import loads

Keys = frozenset[str]
_NOT_DIGITS = re.compile(r"[^\d+]")
_CATALOG_ID = re.compile(r"\$[A-Za-z_]+:::\$[A-Za-z_]+:::[^\s'\"]+")


def identity_keys(resource: Any) -> Keys:
    """The identifiers of a profile or catalog resource (or of its bare attributes), normalised."""
    if not isinstance(resource, Mapping):
        return frozenset()
    attrs = resource.get("attributes")
    if not isinstance(attrs, Mapping):
        attrs = resource
    keys: set[str] = set()
    email = attrs.get("email")
    if isinstance(email, str) and email.strip():
        keys.add("email:" + email.strip().lower())
    phone = attrs.get("phone_number")
    if isinstance(phone, str) and phone.strip():
        keys.add("phone:" + _NOT_DIGITS.sub("", phone))
    external = attrs.get("external_id")
    if isinstance(external, (str, int)) and str(external):
        keys.add(f"external_id:{external}")
    ident = resource.get("id")
    if isinstance(ident, str) and ident:
        keys.add("id:" + ident)
        if ":::" in ident:
            # Catalog ids are "$custom:::$default:::<external_id>".
            keys.add("external_id:" + ident.rsplit(":::", 1)[1])
    return frozenset(keys)


def item_keys(encoded: bytes) -> Keys:
    """Identity keys of one serialized item (kept while its job settles; the item itself is not)."""
    try:
        return identity_keys(loads(encoded))
    except ValueError:
        return frozenset()


@dataclass
class Attribution:
    """Refusals matched to rows, and those that match none (their code and detail)."""

    rejected: list[RowRejection] = field(default_factory=list)
    unmatched: list[tuple[str, str]] = field(default_factory=list)

    @property
    def rows(self) -> set[int]:
        return {r.row_ref for r in self.rejected}


def _fields(error: Any) -> Mapping[str, Any]:
    """An import-error resource keeps its fields under ``attributes``; a catalog job error does not."""
    if not isinstance(error, Mapping):
        return {}
    attrs = error.get("attributes")
    return attrs if isinstance(attrs, Mapping) else error


def _by_payload(payload: Keys, keys: Sequence[Keys], hint: int | None, claimed: set[int]) -> int | None:
    best: list[int] = []
    score = 0
    for i, mine in enumerate(keys):
        shared = len(mine & payload)
        if shared > score:
            best, score = [i], shared
        elif shared and shared == score:
            best.append(i)
    if not best:
        return None
    if hint in best:
        return hint
    # Two items with the same identifiers (one entry twice in a batch): one refusal each, the later
    # first, since a job applies the first and refuses the repeat (a duplicate create).
    return next((i for i in reversed(best) if i not in claimed), best[-1])


def attribute(errors: Sequence[Any], row_refs: Sequence[int], keys: Sequence[Keys] | None) -> Attribution:
    """Match each refusal of a job to its row (see the module docstring for the order of evidence)."""
    out = Attribution()
    claimed: set[int] = set()
    usable_keys = keys if keys is not None and len(keys) == len(row_refs) else None
    for error in errors:
        attrs = _fields(error)
        source = attrs.get("source")
        pointer = source.get("pointer") if isinstance(source, Mapping) else None
        pointer = str(pointer) if pointer else None
        index = item_index(pointer)
        if index is not None and not 0 <= index < len(row_refs):
            index = None
        payload = identity_keys(attrs.get("original_payload"))
        if not payload and index is None:
            # Catalog job errors carry no original_payload (APIJobErrorPayload), but their detail
            # names the entry by its compound id ("$custom:::$default:::SKU-1").
            named = _CATALOG_ID.findall(str(attrs.get("detail") or ""))
            payload = frozenset().union(*(identity_keys({"id": ident}) for ident in named))
        if payload and usable_keys is not None:
            found = _by_payload(payload, usable_keys, index, claimed)
            if found is not None:
                index = found
        code = str(attrs.get("code") or "invalid")
        detail = str(attrs.get("detail") or attrs.get("title") or "rejected by Klaviyo")
        if index is None:
            out.unmatched.append((code, detail))
            continue
        claimed.add(index)
        out.rejected.append(RowRejection(row_refs[index], code, detail, pointer))
    return out
