"""Before a subscription import: rows that would resubscribe someone who opted out in Klaviyo after
the consent time the row gives (the consent ledger knows who did)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from config.settings import Settings
from models import Mapping, MappingVersion, Upload
from models.base import aware
from services import consent
from sync.compiler import compile_mapping
from sync.consent import parse_when
from sync.issues import SkipRow
from sync.mapping import Mapping as MappingSpec
from sync.readers import CsvReader

# The check reads the file on the page's request: past this many rows it stops and says so.
MAX_ROWS = 200_000
EXAMPLES = 10


@dataclass(frozen=True)
class Resubscribe:
    """One row that would undo a later opt-out."""

    row: int
    email: str
    consented_at: datetime
    kind: str
    opted_out_at: datetime


@dataclass(frozen=True)
class Warning:
    """A subscription mapping's rows that would resubscribe people who said no in Klaviyo."""

    mapping: str
    count: int
    examples: list[Resubscribe]
    partial: bool


def _rows(path: Path, upload: Upload, spec: MappingSpec) -> tuple[list[tuple[int, str, datetime]], bool]:
    compiled = compile_mapping(spec)
    found: list[tuple[int, str, datetime]] = []
    with CsvReader(path, encoding=upload.encoding, delimiter=upload.delimiter) as reader:
        for number, row in reader:
            if number > MAX_ROWS:
                return found, True
            try:
                values = compiled.resolve(row, [], [])
            except SkipRow:  # a row the mapping skips is the run's to report
                continue
            email, when = values.get("email"), parse_when(values.get("consented_at"))
            if isinstance(email, str) and email and when is not None:
                found.append((number, email, when))
    return found, False


async def resubscribe_warnings(
    db: AsyncSession, settings: Settings, upload: Upload, choices: list[dict[str, Any]]
) -> list[Warning]:
    """For each usable subscription mapping among ``choices``: the rows whose email opted out in
    Klaviyo (unsubscribe, spam complaint, bounce) after the row's ``consented_at``."""
    wanted = [c for c in choices if c.get("kind") == "subscription" and not c.get("missing")]
    if not wanted or not upload.stored_as:
        return []
    path = Path(settings.upload_dir) / upload.stored_as
    if not path.exists():
        return []
    warnings = []
    for choice in wanted:
        query = (
            select(MappingVersion)
            .join(Mapping, col(Mapping.id) == col(MappingVersion.mapping_id))
            .where(Mapping.id == choice["id"], col(MappingVersion.version) == col(Mapping.current_version))
        )
        version = (await db.exec(query)).first()
        if version is None:
            continue
        spec = MappingSpec.model_validate(version.spec)
        rows, partial = await asyncio.to_thread(_rows, path, upload, spec)
        opted_out = await consent.latest_opt_outs(db, (email for _, email, _ in rows))
        hits = []
        for number, email, when in rows:
            change = opted_out.get(email.strip().lower())
            occurred = aware(change.occurred_at) if change else None
            if change is not None and occurred is not None and occurred > when:
                hits.append(Resubscribe(number, email, when, change.kind, occurred))
        if hits:
            warnings.append(Warning(str(choice["name"]), len(hits), hits[:EXAMPLES], partial))
    return warnings
