"""What the send confirmation says before a real run starts: how many rows and events it sends, and
whether this file was already sent (to Klaviyo, twice, is rarely what anyone wants)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models import Mapping, MappingVersion, SyncRun, Upload
from models.run import RunStatus
from services.accounts import get_account


@dataclass
class SendCheck:
    """The facts the confirmation shows."""

    upload: Upload
    mapping: Mapping | None  # None: the records are routed by event name, each through its event's mapping
    sandbox: bool
    # A completed dry run of this file with this mapping: its count of events (items) is exact.
    dry_run: SyncRun | None = None
    # Real runs of this file that were not cancelled before sending anything, newest first.
    earlier: list[SyncRun] = field(default_factory=list)

    @property
    def items(self) -> int | None:
        return int(self.dry_run.summary.get("items", 0)) if self.dry_run else None


async def check(db: AsyncSession, upload_id: int, mapping_id: int | None) -> SendCheck | None:
    """The confirmation's facts, or None when the upload or mapping does not exist (``mapping_id``
    None: a send routed by event name)."""
    upload = await db.get(Upload, upload_id)
    if upload is None:
        return None
    mapping = await db.get(Mapping, mapping_id) if mapping_id is not None else None
    dry = None
    if mapping_id is not None:
        if mapping is None or mapping.deleted:
            return None
        versions = select(MappingVersion.id).where(col(MappingVersion.mapping_id) == mapping_id)
        dry = (
            await db.exec(
                select(SyncRun)
                .where(
                    col(SyncRun.upload_id) == upload_id,
                    col(SyncRun.dry_run).is_(True),
                    col(SyncRun.status) == RunStatus.COMPLETED,
                    col(SyncRun.mapping_version_id).in_(versions),
                )
                .order_by(col(SyncRun.id).desc())
                .limit(1)
            )
        ).first()
    earlier = (
        await db.exec(
            select(SyncRun)
            .where(
                col(SyncRun.upload_id) == upload_id,
                col(SyncRun.dry_run).is_(False),
                col(SyncRun.parent_run_id).is_(None),  # a retry is part of the run it retries
                (col(SyncRun.status) != RunStatus.CANCELLED) | (col(SyncRun.items_sent) > 0),
            )
            .order_by(col(SyncRun.id).desc())
            .limit(5)
        )
    ).all()
    account = await get_account(db)
    return SendCheck(upload, mapping, account.sandbox, dry, list(earlier))
