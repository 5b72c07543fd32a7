"""The consent ledger and its ways in and out: recording changes (once per Klaviyo event), the
polling state, system webhooks, store integrations (pull token, outbound webhook) and the page's
figures."""

from __future__ import annotations

import csv
import hashlib
import io
import secrets
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from config.crypto import encrypt_secret
from config.settings import Settings
from models import ConsentChange, ConsentDelivery, ConsentIntegration, ConsentPollState, KlaviyoWebhook, User
from models.base import aware, utcnow
from services.error_export import neutralise
from sync import outbound
from sync.consent import CHANNELS, KINDS, OPT_OUT_KINDS, Change

# Any constant works: it only has to be the same for every writer of the ledger.
LEDGER_LOCK_KEY = 0x636F6E73  # "cons"
TOKEN_PREFIX = "kcc_"
PULL_MAX = 500
CSV_HEADER = [
    "id",
    "occurred_at",
    "kind",
    "channel",
    "email",
    "phone_number",
    "external_id",
    "profile_id",
    "metric",
    "source",
    "event_id",
    "received_at",
]


class ConsentError(ValueError):
    """Bad input from the operator; the message says what to fix."""


# --- the ledger ---------------------------------------------------------------------------------


async def record_changes(db: AsyncSession, changes: Iterable[Change], source: str) -> int:
    """Insert the changes not yet in the ledger (a repeated Klaviyo event id is skipped); the caller
    commits. Returns how many were new.

    Writers take one transaction-scoped lock before inserting, held until commit, so ids become
    visible in the order they were given: the pull cursor (``id > after``) can never pass a row that
    commits later with a smaller id. SQLite has a single writer anyway.
    """
    rows = [
        {
            "event_id": c.event_id,
            "kind": c.kind,
            "channel": c.channel,
            "metric": c.metric,
            "email": c.email,
            "phone_number": c.phone_number,
            "profile_id": c.profile_id,
            "external_id": c.external_id,
            "occurred_at": c.occurred_at,
            "source": source,
            "received_at": utcnow(),
            "properties": c.properties,
        }
        for c in changes
    ]
    if not rows:
        return 0
    # Oldest first, so the ledger's order follows Klaviyo's within one batch.
    rows.sort(key=lambda r: (r["occurred_at"], r["event_id"]))
    dialect = db.get_bind().dialect.name
    table = ConsentChange.__table__  # type: ignore[attr-defined]
    if dialect == "postgresql":
        await db.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": LEDGER_LOCK_KEY})
        stmt: Any = pg_insert(table).on_conflict_do_nothing(index_elements=["event_id"])
    else:
        stmt = sqlite_insert(table).on_conflict_do_nothing(index_elements=["event_id"])
    result = await db.exec(stmt.returning(table.c.id), params=rows)
    return len(result.all())


@dataclass(frozen=True)
class ChangeFilter:
    """The page's and the CSV's filters."""

    kind: str | None = None
    channel: str | None = None
    start: datetime | None = None
    end: datetime | None = None

    @classmethod
    def parse(
        cls, kind: str | None, channel: str | None, start: str | None = None, end: str | None = None
    ) -> ChangeFilter:
        """From query parameters; dates are whole UTC days (``end`` included); ConsentError if bad."""
        if kind and kind not in KINDS:
            raise ConsentError(f"Unknown kind {kind!r}: use one of {', '.join(KINDS)}.")
        if channel and channel not in CHANNELS:
            raise ConsentError(f"Unknown channel {channel!r}: use email or sms.")

        def day(value: str | None, what: str) -> date | None:
            if not value:
                return None
            try:
                return date.fromisoformat(value)
            except ValueError:
                raise ConsentError(f"The {what} date {value!r} is not a date (YYYY-MM-DD).") from None

        first, last = day(start, "from"), day(end, "to")
        if first and last and last < first:
            raise ConsentError("The 'to' date is before the 'from' date.")
        utc = utcnow().tzinfo
        return cls(
            kind or None,
            channel or None,
            datetime.combine(first, time(), utc) if first else None,
            datetime.combine(last + timedelta(days=1), time(), utc) if last else None,
        )

    def apply(self, query: Any) -> Any:
        if self.kind:
            query = query.where(ConsentChange.kind == self.kind)
        if self.channel:
            query = query.where(ConsentChange.channel == self.channel)
        if self.start:
            query = query.where(col(ConsentChange.occurred_at) >= self.start)
        if self.end:
            query = query.where(col(ConsentChange.occurred_at) < self.end)
        return query


async def recent_changes(db: AsyncSession, filters: ChangeFilter, limit: int = 100) -> list[ConsentChange]:
    """The newest changes matching the filters (by when they happened in Klaviyo)."""
    query = filters.apply(select(ConsentChange))
    query = query.order_by(col(ConsentChange.occurred_at).desc(), col(ConsentChange.id).desc()).limit(limit)
    return list((await db.exec(query)).all())


async def counts_since(db: AsyncSession, since: datetime) -> dict[str, int]:
    """Changes by kind that happened since ``since`` (today's figures on the page)."""
    query = (
        select(ConsentChange.kind, func.count())
        .where(col(ConsentChange.occurred_at) >= since)
        .group_by(ConsentChange.kind)
    )
    found = {str(kind): int(n) for kind, n in (await db.exec(query)).all()}
    return {kind: found.get(kind, 0) for kind in KINDS}


async def newest_by_source(db: AsyncSession) -> dict[str, ConsentChange]:
    """The change each way in (poll, webhook) stored last: when it arrived and how late."""
    found = {}
    for source in ("poll", "webhook"):
        query = select(ConsentChange).where(ConsentChange.source == source)
        row = (await db.exec(query.order_by(col(ConsentChange.id).desc()).limit(1))).first()
        if row is not None:
            found[source] = row
    return found


def lag_seconds(change: ConsentChange | None) -> int | None:
    """How long after its time in Klaviyo a change reached the ledger."""
    if change is None:
        return None
    occurred, received = aware(change.occurred_at), aware(change.received_at)
    if occurred is None or received is None:
        return None
    return max(0, int((received - occurred).total_seconds()))


def change_dict(change: ConsentChange) -> dict[str, Any]:
    """A change as the pull API and the outbound webhook give it."""
    return {
        "id": change.id,
        "event_id": change.event_id,
        "kind": change.kind,
        "channel": change.channel,
        "metric": change.metric,
        "email": change.email,
        "phone_number": change.phone_number,
        "profile_id": change.profile_id,
        "external_id": change.external_id,
        "occurred_at": (aware(change.occurred_at) or utcnow()).isoformat(),
        "source": change.source,
        "received_at": (aware(change.received_at) or utcnow()).isoformat(),
    }


async def changes_after(db: AsyncSession, after: int, limit: int) -> list[ConsentChange]:
    """Changes with ids above ``after``, in id order (the pull API's and the webhook's order)."""
    query = (
        select(ConsentChange)
        .where(col(ConsentChange.id) > after)
        .order_by(col(ConsentChange.id))
        .limit(limit)
    )
    return list((await db.exec(query)).all())


async def csv_lines(db: AsyncSession, filters: ChangeFilter) -> AsyncIterator[str]:
    """The CSV download: a header, then every matching change oldest first, in chunks."""
    yield _line(CSV_HEADER)
    after = 0
    while True:
        query = filters.apply(select(ConsentChange)).where(col(ConsentChange.id) > after)
        rows = list((await db.exec(query.order_by(col(ConsentChange.id)).limit(1000))).all())
        if not rows:
            return
        yield "".join(_line([d[h] for h in CSV_HEADER]) for d in map(change_dict, rows))
        after = rows[-1].id or after


def _line(cells: list[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerow([neutralise("" if c is None else c) for c in cells])
    return buffer.getvalue()


async def latest_opt_outs(db: AsyncSession, emails: Iterable[str]) -> dict[str, ConsentChange]:
    """``{email (lower case): newest email-channel change}`` for these addresses, when that newest
    change is an opt-out (unsubscribe, spam complaint, bounce)."""
    wanted = sorted({e.strip().lower() for e in emails if e and e.strip()})
    newest: dict[str, ConsentChange] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        query = (
            select(ConsentChange)
            .where(func.lower(ConsentChange.email).in_(chunk), ConsentChange.channel == "email")
            .order_by(col(ConsentChange.occurred_at), col(ConsentChange.id))
        )
        for change in (await db.exec(query)).all():
            newest[(change.email or "").lower()] = change
    return {email: c for email, c in newest.items() if c.kind in OPT_OUT_KINDS}


# --- polling state ------------------------------------------------------------------------------


async def poll_state(db: AsyncSession) -> ConsentPollState:
    """The one polling state row, created (marks starting now) on first use."""
    state = (await db.exec(select(ConsentPollState).order_by(col(ConsentPollState.id)).limit(1))).first()
    if state is None:
        state = ConsentPollState(started_at=utcnow())
        db.add(state)
        await db.flush()
    return state


async def claim_poll(db: AsyncSession, owner: str, lease: timedelta) -> bool:
    """Take the polling lease (one poll at a time across workers); commits."""
    state = await poll_state(db)
    now = utcnow()
    result = await db.exec(
        sa.update(ConsentPollState)
        .where(
            col(ConsentPollState.id) == state.id,
            sa.or_(col(ConsentPollState.lease_until).is_(None), col(ConsentPollState.lease_until) < now),
        )
        .values(lease_owner=owner, lease_until=now + lease)
        .execution_options(synchronize_session=False)
    )
    claimed = bool(result.rowcount)  # read before the commit: aiosqlite resets it
    await db.commit()
    return claimed


# --- system webhooks ----------------------------------------------------------------------------


def new_webhook_secret() -> str:
    return secrets.token_urlsafe(32)


async def note_rejected(sessionmaker: Any, webhook_id: int, why: str) -> None:
    """Count a refused delivery on the webhook (its own transaction: no change is stored)."""
    async with sessionmaker() as db:
        row = await db.get(KlaviyoWebhook, webhook_id)
        if row is not None:
            row.rejected_count += 1
            row.last_rejected_at = utcnow()
            row.last_error = why[:300]
            db.add(row)
            await db.commit()


async def list_webhooks(db: AsyncSession) -> list[KlaviyoWebhook]:
    return list((await db.exec(select(KlaviyoWebhook).order_by(col(KlaviyoWebhook.id)))).all())


# --- store integrations -------------------------------------------------------------------------


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def create_integration(
    db: AsyncSession,
    settings: Settings,
    name: str,
    webhook_url: str,
    user: User | None,
) -> tuple[ConsentIntegration, str, str | None]:
    """A new integration; returns it, its pull token and its webhook signing secret (both shown once).
    Its webhook starts with the changes recorded from now on."""
    name = name.strip()
    if not name:
        raise ConsentError("Give the integration a name.")
    if len(name) > 120:
        raise ConsentError("The name is longer than 120 characters.")
    if (await db.exec(select(ConsentIntegration).where(ConsentIntegration.name == name))).first():
        raise ConsentError(f"An integration named {name!r} already exists.")
    url = webhook_url.strip() or None
    if url:
        problem = outbound.check_syntax(url, "webhook URL") or await outbound.url_problem(
            url, settings.outbound_allow_list, "webhook URL"
        )
        if problem:
            raise ConsentError(problem)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    secret = secrets.token_urlsafe(32) if url else None
    newest = (await db.exec(select(func.max(ConsentChange.id)))).one()
    integration = ConsentIntegration(
        name=name,
        token_hash=hash_token(token),
        token_hint=token[-4:],
        webhook_url=url,
        webhook_secret_encrypted=encrypt_secret(settings.secret, secret) if secret else None,
        delivered_through=int(newest or 0),
        created_by=user.id if user else None,
    )
    db.add(integration)
    await db.flush()
    return integration, token, secret


async def delete_integration(db: AsyncSession, integration: ConsentIntegration) -> None:
    """Forget an integration and its delivery ledger (its token stops working at once)."""
    await db.exec(sa.delete(ConsentDelivery).where(col(ConsentDelivery.integration_id) == integration.id))
    await db.delete(integration)


async def integration_for_token(db: AsyncSession, token: str) -> ConsentIntegration | None:
    if not token.startswith(TOKEN_PREFIX):
        return None
    query = select(ConsentIntegration).where(ConsentIntegration.token_hash == hash_token(token))
    return (await db.exec(query)).first()


async def list_integrations(db: AsyncSession) -> list[ConsentIntegration]:
    return list((await db.exec(select(ConsentIntegration).order_by(col(ConsentIntegration.id)))).all())


async def pending_count(db: AsyncSession, integration: ConsentIntegration) -> int:
    """Changes its webhook has yet to deliver."""
    query = select(func.count()).where(col(ConsentChange.id) > integration.delivered_through)
    return int((await db.exec(query)).one())


async def recent_deliveries(db: AsyncSession, integration_id: int, limit: int = 10) -> list[ConsentDelivery]:
    query = (
        select(ConsentDelivery)
        .where(ConsentDelivery.integration_id == integration_id)
        .order_by(col(ConsentDelivery.id).desc())
        .limit(limit)
    )
    return list((await db.exec(query)).all())


def retry_pause(attempts: int, time_scale: float) -> timedelta:
    """The pause after ``attempts`` failures in a row: 2 s doubling, at most an hour (scaled)."""
    return timedelta(seconds=min(2.0 * 2 ** max(attempts - 1, 0), 3600.0) / time_scale)
