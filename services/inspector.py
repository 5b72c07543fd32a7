"""The request inspector: samples of what a run exchanged with Klaviyo, for the run page.

The worker writes them (workers/inspector.py); this module reads them and holds the redaction
and truncation rules both sides share.
"""

from __future__ import annotations

import re
from typing import Any

from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models import RequestSample

FIRST_N = 20  # every run keeps its first requests whatever their answer
MAX_PER_RUN = 200  # and then every 4xx/5xx, up to this many samples in all
BODY_LIMIT = 4 * 1024  # bodies of ordinary samples are cut here
ERROR_BODY_LIMIT = 64 * 1024  # an error's bodies are kept whole up to this
SECRET_HEADERS = {"authorization", "cookie", "set-cookie", "proxy-authorization"}
_KEY = re.compile(r"pk_[A-Za-z0-9_]{6,}")


def redact_headers(headers: Any) -> dict[str, str]:
    """Headers with every credential replaced; the key's scheme stays so the shape is readable."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower in SECRET_HEADERS:
            scheme = value.split(" ", 1)[0] if " " in value else ""
            value = f"{scheme} [redacted]".strip()
        out[lower] = value
    return out


def redact_text(text: str, secrets: list[str] | None = None) -> str:
    """Private keys (pk_...) and any known secret scrubbed from a body."""
    for secret in secrets or []:
        if secret:
            text = text.replace(secret, "[redacted]")
    return _KEY.sub("pk_[redacted]", text)


def clip(data: bytes, limit: int) -> tuple[str, bool]:
    """Decoded text of at most ``limit`` bytes, and whether anything was cut."""
    cut = len(data) > limit
    return data[:limit].decode("utf-8", errors="replace"), cut


async def samples(db: AsyncSession, run_id: int, limit: int = MAX_PER_RUN) -> list[Any]:
    """The run's samples without their bodies, oldest first."""
    query = (
        select(  # type: ignore[call-overload]
            RequestSample.id,
            RequestSample.at,
            RequestSample.method,
            RequestSample.url,
            RequestSample.status,
            RequestSample.duration_ms,
            RequestSample.request_bytes,
            RequestSample.response_bytes,
            RequestSample.truncated,
        )
        .where(RequestSample.run_id == run_id)
        .order_by(col(RequestSample.id))
        .limit(limit)
    )
    return list((await db.exec(query)).all())


async def count(db: AsyncSession, run_id: int) -> int:
    query = select(func.count()).select_from(RequestSample).where(RequestSample.run_id == run_id)
    return int((await db.exec(query)).one())


async def get_sample(db: AsyncSession, run_id: int, sample_id: int) -> RequestSample | None:
    sample = await db.get(RequestSample, sample_id)
    return sample if sample is not None and sample.run_id == run_id else None
