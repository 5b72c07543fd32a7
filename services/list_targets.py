"""Envelope parts of the list membership and subscription targets (registered in services/targets.py)."""

from __future__ import annotations

from typing import Any

from models import SyncRun
from sync.mapping import Mapping as MappingSpec

CUSTOM_SOURCE_MAX = 200


def list_id(run: SyncRun, spec: MappingSpec) -> str | None:
    """The list a run works on: chosen when the run started, else the mapping's own."""
    return str(run.options.get("list_id") or spec.target.list_id or "").strip() or None


def list_path(run: SyncRun, spec: MappingSpec) -> dict[str, str]:
    """``{"id": list}`` for /api/lists/{id}/relationships/profiles.

    services.lists refuses to start a membership run without a list; "-" makes Klaviyo answer 404.
    """
    return {"id": list_id(run, spec) or "-"}


def subscribe_list(run: SyncRun, spec: MappingSpec) -> dict[str, Any] | None:
    """The subscription job's ``list`` relationship; none means the account's default consent only."""
    chosen = list_id(run, spec)
    return {"list": {"data": {"type": "list", "id": chosen}}} if chosen else None


def subscribe_options(run: SyncRun, spec: MappingSpec) -> dict[str, Any] | None:
    """Job attributes: ``historical_import`` (the mapping's mode: rows carry consented_at) and the source."""
    options: dict[str, Any] = {}
    if spec.options.historical_import:
        options["historical_import"] = True
    source = str(run.options.get("custom_source") or "").strip()
    if source:
        options["custom_source"] = source[:CUSTOM_SOURCE_MAX]
    return options or None
