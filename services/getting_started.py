"""The Overview's getting-started checklist: each step of a first sync, done or not, and where it
happens, read from what the database already holds (no separate progress to keep in step)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models import ConnectionStatus, Mapping, SyncRun, Upload, UploadStatus
from models.run import RunSource, RunStatus
from services.accounts import get_account


@dataclass(frozen=True)
class Step:
    """One step: what to do, whether it is done, the link that does it and what it says."""

    key: str
    title: str
    done: bool
    href: str
    action: str
    note: str


async def steps(db: AsyncSession) -> list[Step]:
    """The five steps of a first sync, in order."""
    account = await get_account(db)
    connected = account.status == ConnectionStatus.OK
    upload = (
        await db.exec(
            select(Upload)
            .where(col(Upload.status) == UploadStatus.READY)
            .order_by(col(Upload.id).desc())
            .limit(1)
        )
    ).first()
    live_mappings = select(Mapping).where(col(Mapping.deleted).is_(False))
    mapping = (await db.exec(live_mappings.order_by(col(Mapping.id)).limit(1))).first()
    dry = await _last_run(db, dry_run=True)
    sent = await _last_run(db, dry_run=False)
    upload_href = f"/uploads/{upload.id}" if upload else "/uploads"
    mapping_href = f"/mappings/?sample_upload={upload.id}" if upload else "/mappings/"
    where = "the sandbox (the built-in simulator)" if account.sandbox else "your Klaviyo account"
    return [
        Step(
            "connect",
            "Connect Klaviyo",
            connected,
            "/connection",
            "Test the connection" if account.sandbox else "Test your key",
            f"Runs send to {where}. Paste a private API key to send to Klaviyo, or keep the sandbox "
            "to try everything first; either way, test it.",
        ),
        Step(
            "upload",
            "Upload a file",
            upload is not None,
            upload_href if upload else "/uploads",
            "See your upload" if upload else "Upload a CSV",
            "A CSV export of orders, customers, products or events, with a header row.",
        ),
        Step(
            "mapping",
            "Create a mapping",
            mapping is not None,
            f"/mappings/{mapping.id}" if mapping else mapping_href,
            "Open your mapping" if mapping else "Create a mapping",
            "Say what each column becomes in Klaviyo; the preview shows the payloads before "
            "anything is sent.",
        ),
        Step(
            "dry_run",
            "Do a dry run",
            dry is not None,
            f"/runs/{dry.id}" if dry else f"{upload_href}#start-run",
            "See the dry run" if dry else "Start a dry run",
            "Reads every row and checks it against the mapping without sending anything.",
        ),
        Step(
            "send",
            "Send",
            sent is not None,
            f"/runs/{sent.id}" if sent else (f"/runs/{dry.id}" if dry else f"{upload_href}#start-run"),
            "See the run" if sent else "Send it",
            "Send the rows for real; every outcome is recorded on the run's page.",
        ),
    ]


async def _last_run(db: AsyncSession, *, dry_run: bool) -> SyncRun | None:
    query = (
        select(SyncRun)
        .where(
            col(SyncRun.dry_run).is_(dry_run),
            col(SyncRun.source) == RunSource.UPLOAD,
            col(SyncRun.status) == RunStatus.COMPLETED,
        )
        .order_by(col(SyncRun.id).desc())
        .limit(1)
    )
    return (await db.exec(query)).first()
