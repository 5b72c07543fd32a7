"""Job: read an uploaded file once and record its encoding, columns, rows, preview and problems."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import structlog

from models import Upload
from services.uploads import analyse_file

log = structlog.get_logger(__name__)


async def analyse_upload(ctx: dict[str, Any], upload_id: int) -> dict[str, Any]:
    """Analyse the stored file and set the upload ready or invalid; safe to run twice."""
    settings = ctx["settings"]
    async with ctx["sessionmaker"]() as db:
        upload = await db.get(Upload, upload_id)
        if upload is None:
            return {"status": "missing"}
        path = Path(settings.upload_dir) / upload.stored_as
        # CPU-bound reading in a thread, so this worker's heartbeat and other jobs keep going.
        analysis = await asyncio.to_thread(analyse_file, path, upload.filename)
        analysis.apply(upload)
        db.add(upload)
        await db.commit()
        log.info(
            "upload analysed", upload_id=upload_id, status=analysis.status.value, rows=analysis.row_count
        )
        return {"status": analysis.status.value, "rows": analysis.row_count}
