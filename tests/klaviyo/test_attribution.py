"""Refusals of a bulk job land on their rows whatever the pointer's form (klaviyo.attribution)."""

from __future__ import annotations

from klaviyo.attribution import attribute, identity_keys
from klaviyo.batching import RowRejection
from klaviyo.jobs import ROW_UNKNOWN, UNCONFIRMED, JobResult, job_rejections
from klaviyo.sender import BatchOutcome
from klaviyo.serialization import dumps

PROFILES = [
    {"type": "profile", "attributes": {"email": "ana@shop.test"}},
    {"type": "profile", "attributes": {"email": "Bo@Shop.test", "phone_number": "+4791234567"}},
    {"type": "profile", "attributes": {"external_id": "C-3"}},
]
ROWS = [10, 11, 12]
KEYS = [identity_keys(p) for p in PROFILES]


def _error(pointer: str | None, payload: dict | None) -> dict:
    attrs = {"code": "invalid", "title": "Invalid", "detail": "bad", "source": {}}
    if pointer is not None:
        attrs["source"] = {"pointer": pointer}
    if payload is not None:
        attrs["original_payload"] = payload
    return {"type": "import-error", "id": "e1", "attributes": attrs}


def test_absolute_relative_and_missing_pointers_find_the_same_row() -> None:
    payload = {"email": "bo@shop.test", "phone_number": "+47 912 34 567"}
    for pointer in (
        "/data/attributes/profiles/data/1/attributes/email",  # absolute
        "/1/attributes/email",  # relative to the items array
        "/data/attributes/email",  # relative to the item: no index
        None,
    ):
        found = attribute([_error(pointer, payload)], ROWS, KEYS)
        assert [r.row_ref for r in found.rejected] == [11], pointer
        assert found.unmatched == []


def test_the_payload_outweighs_a_pointer_that_names_another_item() -> None:
    found = attribute([_error("/data/attributes/profiles/data/0", {"external_id": "C-3"})], ROWS, KEYS)
    assert [r.row_ref for r in found.rejected] == [12]


def test_without_payload_or_index_the_refusal_names_no_row() -> None:
    found = attribute([_error("/data/attributes/email", None), _error(None, {"email": "x@y.z"})], ROWS, KEYS)
    assert found.rejected == [] and len(found.unmatched) == 2


def test_catalog_errors_match_by_pointer_and_by_catalog_id() -> None:
    items = [
        {"type": "catalog-item", "id": "$custom:::$default:::SKU-1"},
        {"type": "catalog-item", "id": "x"},
    ]
    keys = [identity_keys(item) for item in items]
    errors = [
        {"code": "not_found", "detail": "gone", "source": {"pointer": "/data/attributes/items/data/1"}},
        {"code": "not_found", "detail": "gone", "source": {}, "original_payload": {"external_id": "SKU-1"}},
    ]
    found = attribute(errors, [5, 6], keys)
    assert sorted(r.row_ref for r in found.rejected) == [5, 6]
    assert identity_keys({"attributes": {"email": " A@B.C "}}) == identity_keys({"email": "a@b.c"})
    assert dumps(items[0])  # items travel serialized; keys are taken before they are let go


def test_a_job_whose_counts_do_not_add_up_confirms_nothing() -> None:
    outcome = BatchOutcome(seq=0, accepted=ROWS.copy())
    result = JobResult("J1", "complete", total=0, completed=0, failed=0)
    refused = job_rejections(outcome, result, ROWS)
    assert [(r.row_ref, r.code) for r in refused] == [(10, UNCONFIRMED), (11, UNCONFIRMED), (12, UNCONFIRMED)]
    assert "0 total, 0 completed and 0 failed for 3 sent" in refused[0].detail


def test_failures_the_job_does_not_explain_come_off_the_applied_count() -> None:
    outcome = BatchOutcome(seq=0, accepted=ROWS.copy())
    named = RowRejection(10, "invalid", "bad")
    result = JobResult("J1", "complete", total=3, completed=1, failed=2, rejected=[named])
    refused = job_rejections(outcome, result, ROWS)
    assert refused[0] == named
    assert (refused[1].row_ref, refused[1].code, refused[1].count) == (0, ROW_UNKNOWN, 1)
    outcome.accepted = [11, 12]
    assert outcome.applied == 1 == result.completed


def test_a_catalog_error_without_pointer_is_matched_by_the_id_its_detail_names() -> None:
    items = [
        {"type": "catalog-item", "attributes": {"external_id": "SKU-1", "title": "Mug"}},
        {"type": "catalog-item", "attributes": {"external_id": "SKU-10", "title": "Cup"}},
    ]
    keys = [identity_keys(item) for item in items]
    error = {"code": "duplicate", "detail": "Catalog item '$custom:::$default:::SKU-10' already exists"}
    found = attribute([{**error, "source": {"pointer": "/data"}}], [7, 8], keys)
    assert [r.row_ref for r in found.rejected] == [8]
    vague = {"code": "duplicate", "detail": "Catalog item already exists", "source": {}}
    assert attribute([vague], [7, 8], keys).unmatched == [("duplicate", "Catalog item already exists")]
