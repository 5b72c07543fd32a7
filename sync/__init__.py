"""From source rows to Klaviyo payloads: readers, mapping, transforms, payload builders.

Plain Python shared by the web app (preview, dry run) and the workers (sending); no web or
database imports. The flow, and the module that owns each step:

    readers.read_csv(path) / read_json(text)      -> (row_number, row dict) pairs
    mapping.Mapping                              -> the versioned spec (pydantic, JSON round-trip)
    pipeline.Pipeline(mapping).run(rows)         -> RowResult(row_ref, items, errors, warnings, rows)
    pipeline.dry_run(mapping, rows, ...)         -> DryRunSummary (counts, errors by rule, new metrics)

Items are the JSON-ready resource objects of docs/contracts.md; ``klaviyo.batching`` wraps them.
``compiler`` turns a mapping into closures once, ``targets/`` holds one builder per Klaviyo target,
``validation`` checks items and mappings, ``presets`` offers standard metrics, source presets and
header suggestions. Every finding is an ``issues.Issue`` with a rule code, column and message.
"""
