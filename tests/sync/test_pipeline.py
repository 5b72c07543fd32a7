"""The pipeline: per-row results, rejected rows, skipped rows, dry-run summary, preview == worker."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from klaviyo.serialization import dumps
from sync.mapping import Mapping, MappingOptions, NumberCast, Target, TargetKind, column
from sync.pipeline import Pipeline, dry_run, run_pipeline
from sync.presets import shopify_orders_mapping
from sync.readers import read_csv
from tests.sync.seed_order import order_mapping, seed_rows

NOW = datetime(2026, 11, 24, tzinfo=UTC)


def _mapping() -> Mapping:
    return Mapping(
        name="m",
        target=Target(kind=TargetKind.EVENT, metric="Ordered Product"),
        options=MappingOptions(default_currency="USD"),
        fields=[
            column("Email", "email"),
            column("When", "time"),
            column("Total", "value"),
            column("Paid", "properties.Paid", skip_row_when_empty=True),
            column("first_name", "properties.first_name"),
        ],
    )


ROWS = [
    (1, {"Email": "a@x.com", "When": "2024-01-02 10:00", "Total": "5", "Paid": "y"}),
    (2, {"Email": "bad", "When": "2024-01-02 10:00", "Total": "abc", "Paid": "y"}),
    (3, {"Email": "c@x.com", "When": "2024-01-02", "Total": "5", "Paid": ""}),
    (4, {"Email": "d@x.com", "When": "2024-01-02", "Total": "7", "Paid": "y"}),
    (5, {"Email": "e@x.com", "When": "1970-01-02 10:00", "Total": "7", "Paid": "y"}),
    (6, {"Email": "", "When": "2024-01-02 10:00", "Total": "7", "Paid": "y"}),
]


def test_per_row_results() -> None:
    results = list(run_pipeline(_mapping(), ROWS, now=NOW))
    assert [(r.row_ref, r.ok, len(r.items), r.skipped) for r in results] == [
        (1, True, 1, False),
        (2, False, 0, False),
        (3, False, 0, True),
        (4, True, 1, False),
        (5, False, 0, False),
        (6, False, 0, False),
    ]
    assert [(e.rule, e.column) for e in results[1].errors] == [
        ("invalid_email", "Email"),
        ("not_a_number", "Total"),
    ]
    assert [w.rule for w in results[3].warnings] == ["date_without_time"]
    assert [e.rule for e in results[4].errors] == ["time_out_of_range"]
    assert [e.rule for e in results[5].errors] == ["missing_profile_identifier"]


def test_dry_run_summary() -> None:
    summary = dry_run(_mapping(), ROWS, existing_metrics=["Placed Order"], preview_rows=2, now=NOW)
    assert (summary.rows, summary.rows_ok, summary.rows_rejected, summary.rows_skipped, summary.items) == (
        6,
        2,
        3,
        1,
        2,
    )
    assert {rule: t.examples for rule, t in summary.errors.items()} == {
        "invalid_email": [2],
        "not_a_number": [2],
        "time_out_of_range": [5],
        "missing_profile_identifier": [6],
    }
    assert summary.warnings["date_without_time"].count == 2
    assert summary.new_metrics == ["Ordered Product"]
    assert [i.rule for i in summary.mapping_issues] == ["property_name_clash"]
    assert len(summary.preview) == 2
    data = summary.as_dict()
    assert data["errors"][0]["rule"] in summary.errors and data["new_metrics"] == ["Ordered Product"]
    dumps(data)


def test_dry_run_for_orders_counts_source_rows() -> None:
    summary = dry_run(order_mapping(), seed_rows(), existing_metrics=["Placed Order", "Ordered Product"])
    assert (summary.rows, summary.rows_ok, summary.items, summary.new_metrics) == (2, 2, 3, [])


def test_preview_and_worker_see_identical_bytes(tmp_path: Path) -> None:
    path = tmp_path / "e.csv"
    path.write_text(
        "Email,When,Total,Paid,first_name\n"
        + "\n".join(f"u{i}@x.com,2024-01-02 10:{i:02d},{i},y," for i in range(50))
    )
    preview = [
        dumps(item) for r in dry_run(_mapping(), read_csv(path), preview_rows=50).preview for item in r.items
    ]
    worker = [dumps(item) for r in Pipeline(_mapping()).run(read_csv(path)) for item in r.items]
    assert preview == worker and len(worker) == 50


def test_metric_names() -> None:
    assert Pipeline(_mapping()).metric_names() == ["Ordered Product"]
    assert Pipeline(shopify_orders_mapping()).metric_names() == ["Placed Order", "Ordered Product"]
    assert Pipeline(shopify_orders_mapping("Refunded Order", line_metric=None)).metric_names() == [
        "Refunded Order"
    ]


def test_unicode_headers_and_values_end_to_end(tmp_path: Path) -> None:
    from tests.sync.envelopes import events_job

    path = tmp_path / "ünï.csv"
    path.write_text(
        "E-Mail-Adresse;Größe;商品;Kommentar\n"
        'JÖRG@Bücher.de;1.234,5;茶碗 🍵;"שלום, ""world"""\n'
        "zoë@example.org;  ;;\n",
        encoding="utf-8-sig",
    )
    mapping = Mapping(
        name="u",
        target=Target(kind=TargetKind.EVENT, metric="Bestellt 🛒"),
        fields=[
            column("E-Mail-Adresse", "email"),
            column("Größe", "properties.Größe", NumberCast()),
            column("商品", "properties.商品"),
            column("Kommentar", "properties.Kommentar"),
        ],
    )
    results = list(run_pipeline(mapping, read_csv(path)))
    assert all(r.ok for r in results)
    first = results[0].items[0]["attributes"]
    assert first["profile"]["data"]["attributes"] == {"email": "jörg@bücher.de"}
    assert first["events"]["data"][0]["attributes"]["properties"] == {
        "Größe": 1234.5,
        "商品": "茶碗 🍵",
        "Kommentar": 'שלום, "world"',
    }
    assert results[1].items[0]["attributes"]["events"]["data"][0]["attributes"]["properties"] == {}
    events_job([item for r in results for item in r.items])
