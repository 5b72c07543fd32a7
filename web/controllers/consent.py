"""Consent changes from Klaviyo: the page under /consent (changes, the ways in and out), the CSV
download, the store's pull API and the receiver of Klaviyo's system webhooks."""

from __future__ import annotations

import contextlib
from datetime import datetime, time, timedelta
from typing import Any

import orjson
import structlog
from litestar import Controller, Request, Response, get, post
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.response import Redirect, Stream, Template
from redis.exceptions import RedisError

from config.crypto import decrypt_secret, encrypt_secret
from klaviyo.client import KlaviyoClient
from klaviyo.errors import KlaviyoError
from models import ConsentIntegration, KlaviyoWebhook, Role
from models.base import utcnow
from services import audit, consent
from services.accounts import get_account, klaviyo_target
from sync.consent import CHANNELS, CONSENT_TOPICS, KINDS, change_from_event, check_klaviyo_delivery
from web.deps import ArqDep, Db, SettingsDep
from web.security import current_user
from web.templating import render
from workers.check_connection import INTERACTIVE_RETRY

log = structlog.get_logger(__name__)
ADMIN = {"role": Role.ADMIN}  # tokens, secrets and webhooks in Klaviyo are credentials
PUBLIC = {"public": True, "exclude_from_csrf": True}
MAX_WEBHOOK_BODY = 5 * 1024 * 1024


def _json(status: int, payload: dict[str, Any], **headers: str) -> Response[bytes]:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json", headers=headers)


class ConsentController(Controller):
    @get("/consent")
    async def index(self, request: Request[Any, Any, Any], db: Db) -> Template:
        return await _page(request, db)

    @get("/consent/changes.csv")
    async def download(self, request: Request[Any, Any, Any], db: Db) -> Stream | Template:
        q = request.query_params
        try:
            filters = consent.ChangeFilter.parse(q.get("kind"), q.get("channel"), q.get("from"), q.get("to"))
        except consent.ConsentError as exc:
            return await _page(request, db, 400, problem=str(exc))
        name = f"consent-changes-{q.get('from') or 'all'}-{q.get('to') or 'now'}.csv"
        sessionmaker = request.app.state.sessionmaker

        async def lines() -> Any:
            # Its own session: the stream outlives the request's.
            async with sessionmaker() as stream_db:
                async for line in consent.csv_lines(stream_db, filters):
                    yield line

        return Stream(
            lines(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    @post("/consent/poll")
    async def poll_now(self, arq: ArqDep, settings: SettingsDep) -> Redirect:
        # Redis away: the page shows the last poll, and the minute cron polls anyway.
        with contextlib.suppress(RedisError, OSError):
            await arq.enqueue_job("poll_consent", _job_id=f"{settings.queue_name}:consent-poll:manual")
        return Redirect("/consent")

    @post("/consent/integrations", opt=ADMIN)
    async def create_integration(
        self, request: Request[Any, Any, Any], db: Db, settings: SettingsDep
    ) -> Template:
        form = await request.form()
        try:
            row, token, secret = await consent.create_integration(
                db,
                settings,
                str(form.get("name", "")),
                str(form.get("webhook_url", "")),
                current_user(request),
            )
        except consent.ConsentError as exc:
            return await _page(request, db, 400, problem=str(exc), form=form)
        audit.record(db, request, "consent.integration_create", target=f"consent integration {row.name}")
        await db.commit()
        return await _page(request, db, 201, shown_once={"name": row.name, "token": token, "secret": secret})

    @post("/consent/integrations/{integration_id:int}/delete", opt=ADMIN)
    async def delete_integration(
        self, request: Request[Any, Any, Any], db: Db, integration_id: FromPath[int]
    ) -> Redirect:
        row = await db.get(ConsentIntegration, integration_id)
        if row is None:
            raise NotFoundException()
        await consent.delete_integration(db, row)
        audit.record(db, request, "consent.integration_delete", target=f"consent integration {row.name}")
        return Redirect("/consent")

    @post("/consent/webhooks", opt=ADMIN)
    async def create_webhook(
        self, request: Request[Any, Any, Any], db: Db, settings: SettingsDep
    ) -> Template:
        form = await request.form()
        base = str(form.get("public_url") or request.base_url).rstrip("/")
        secret = consent.new_webhook_secret()
        row = KlaviyoWebhook(
            name="Sync console consent changes",
            endpoint_url="",
            secret_encrypted=encrypt_secret(settings.secret, secret),
        )
        db.add(row)
        await db.flush()
        row.endpoint_url = f"{base}/api/klaviyo-webhooks/{row.id}"
        try:
            client = await _client(db, settings)
            offered = {str(t.get("id")) for t in await client.get_webhook_topics()}
            row.topics = sorted(t for t in CONSENT_TOPICS if t in offered)
            if not row.topics:
                raise consent.ConsentError("This Klaviyo account offers none of the consent topics.")
            row.klaviyo_id = await client.create_webhook(row.name, row.endpoint_url, secret, row.topics)
        except (KlaviyoError, consent.ConsentError) as exc:
            await db.rollback()
            why = str(exc)
            if isinstance(exc, KlaviyoError) and exc.status in (401, 403):
                why += (
                    " (the Webhooks API is open only to some Klaviyo plans and app partners;"
                    " polling works for every account)"
                )
            return await _page(request, db, 400, problem=f"Klaviyo did not create the webhook: {why}")
        audit.record(db, request, "consent.webhook_create", target=f"Klaviyo webhook {row.klaviyo_id}")
        await db.commit()
        return await _page(request, db, 201)

    @post("/consent/webhooks/{webhook_id:int}/delete", opt=ADMIN)
    async def delete_webhook(
        self, request: Request[Any, Any, Any], db: Db, settings: SettingsDep, webhook_id: FromPath[int]
    ) -> Template | Redirect:
        row = await db.get(KlaviyoWebhook, webhook_id)
        if row is None:
            raise NotFoundException()
        try:
            if row.klaviyo_id:
                await (await _client(db, settings)).delete_webhook(row.klaviyo_id)
        except KlaviyoError as exc:
            if exc.status != 404:  # already gone in Klaviyo: forget it here too
                return await _page(request, db, 400, problem=f"Klaviyo did not delete the webhook: {exc}")
        await db.delete(row)
        audit.record(db, request, "consent.webhook_delete", target=f"Klaviyo webhook {row.klaviyo_id}")
        return Redirect("/consent")

    # --- machine APIs -----------------------------------------------------------------------------

    @get("/api/consent-changes", opt=PUBLIC)
    async def pull(self, request: Request[Any, Any, Any], db: Db) -> Response[bytes]:
        """The store's pull API: changes after a cursor, in ledger order, with a Bearer token."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        row = await consent.integration_for_token(db, token.strip()) if scheme.lower() == "bearer" else None
        if row is None:
            return _json(
                401, {"status": 401, "detail": "Missing or unknown token."}, **{"WWW-Authenticate": "Bearer"}
            )
        after_text, limit_text = (
            request.query_params.get("after", "0"),
            request.query_params.get("limit", "100"),
        )
        if (
            not after_text.isdigit()
            or not limit_text.isdigit()
            or not 1 <= int(limit_text) <= consent.PULL_MAX
        ):
            detail = f"after must be a cursor from an earlier answer (or 0); limit 1 to {consent.PULL_MAX}."
            return _json(400, {"status": 400, "detail": detail})
        changes = await consent.changes_after(db, int(after_text), int(limit_text))
        cursor = str(changes[-1].id) if changes else after_text
        row.last_pulled_at = utcnow()
        row.last_pulled_through = max(row.last_pulled_through, int(cursor))
        db.add(row)
        payload = {
            "changes": [consent.change_dict(c) for c in changes],
            "next_cursor": cursor,
            "has_more": len(changes) == int(limit_text),
        }
        return _json(200, payload)

    @post("/api/klaviyo-webhooks/{webhook_id:int}", opt=PUBLIC)
    async def receive(
        self,
        request: Request[Any, Any, Any],
        db: Db,
        settings: SettingsDep,
        arq: ArqDep,
        webhook_id: FromPath[int],
    ) -> Response[bytes]:
        """A Klaviyo system webhook delivery: verified, stored, then answered (a 2xx means stored)."""
        row = await db.get(KlaviyoWebhook, webhook_id)
        if row is None:
            return _json(401, {"status": 401, "detail": "Unknown webhook."})
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_WEBHOOK_BODY:
            return _json(413, {"status": 413, "detail": "Body too large."})
        raw = await request.body()
        why = check_klaviyo_delivery(
            decrypt_secret(settings.secret, row.secret_encrypted),
            raw,
            request.headers.get("klaviyo-timestamp"),
            request.headers.get("klaviyo-signature"),
            utcnow(),
        )
        body: Any = None
        if why is None:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                why = "body is not JSON"
        if why is None:
            meta = (body.get("meta") if isinstance(body, dict) else None) or {}
            header_id = request.headers.get("klaviyo-webhook-id")
            # The guide: meta.klaviyo_webhook_id must equal the Klaviyo-Webhook-Id header, or drop it.
            if (
                not header_id
                or header_id != meta.get("klaviyo_webhook_id")
                or (row.klaviyo_id and header_id != row.klaviyo_id)
            ):
                why = "Klaviyo-Webhook-Id does not match this webhook"
        if why is not None:
            await consent.note_rejected(request.app.state.sessionmaker, webhook_id, why)
            log.info("klaviyo webhook refused", webhook=webhook_id, reason=why)
            return _json(401, {"status": 401, "detail": f"Refused: {why}."})
        changes = []
        for item in body.get("data") or []:
            metric = CONSENT_TOPICS.get(str((item or {}).get("topic")))
            payload = (item or {}).get("payload") or {}
            event = payload.get("data") if isinstance(payload.get("data"), dict) else None
            if metric is None or event is None:
                continue  # a topic the ledger does not keep
            event = {**event, "id": event.get("id") or item.get("external_id")}
            included = [r for r in payload.get("included") or [] if (r or {}).get("type") == "profile"]
            change = change_from_event(event, metric, included[0] if included else None)
            if change is not None:
                changes.append(change)
        stored = await consent.record_changes(db, changes, "webhook")
        row.last_received_at = utcnow()
        row.received_count += len(changes)
        db.add(row)
        await db.commit()
        if stored:
            from workers.consent import wake_delivery

            await wake_delivery(arq, settings.queue_name)
        return _json(200, {"received": len(changes), "stored": stored})


async def _client(db: Db, settings: Any) -> KlaviyoClient:
    target = klaviyo_target(await get_account(db), settings)
    return KlaviyoClient(target.api_key, base_url=target.base_url, retry=INTERACTIVE_RETRY)


async def _page(request: Request[Any, Any, Any], db: Db, status: int = 200, **extra: Any) -> Template:
    q = request.query_params
    try:
        filters = consent.ChangeFilter.parse(q.get("kind"), q.get("channel"))
    except consent.ConsentError as exc:
        filters, extra["problem"] = consent.ChangeFilter(), str(exc)
    now = utcnow()
    today = datetime.combine(now.date(), time(), now.tzinfo)
    state = await consent.poll_state(db)
    integrations = []
    for row in await consent.list_integrations(db):
        integrations.append(
            {
                "row": row,
                "pending": await consent.pending_count(db, row),
                "deliveries": await consent.recent_deliveries(db, row.id or 0, 5),
            }
        )
    newest = await consent.newest_by_source(db)
    return render(
        request,
        "consent/index.html",
        status,
        area="consent",
        changes=await consent.recent_changes(db, filters),
        today=await consent.counts_since(db, today),
        week=await consent.counts_since(db, now - timedelta(days=7)),
        filters=filters,
        kinds=KINDS,
        channels=CHANNELS,
        poll=state,
        lag={source: consent.lag_seconds(newest.get(source)) for source in ("poll", "webhook")},
        webhooks=await consent.list_webhooks(db),
        integrations=integrations,
        default_from=(now - timedelta(days=7)).date().isoformat(),
        default_to=now.date().isoformat(),
        **extra,
    )
