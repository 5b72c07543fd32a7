"""Real-time ingest: the API a store posts events and orders to, and the pages under /ingest where
sources are created (token shown once), rotated and revoked, and their failed records listed."""

from __future__ import annotations

from typing import Any

import orjson
import structlog
from litestar import Controller, Request, asgi, get, post
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.response import Redirect, Template
from litestar.types import HTTPResponseStartEvent, Receive, Scope, Send
from redis.exceptions import RedisError

from models import IngestSource, Role
from services import audit, ingest, ingest_routes
from services.ingest import SIGNATURE_HEADER, IngestError
from services.ingest_inbox import STORE_ERRORS, TIMESTAMP_HEADER, inbox_for
from web.deps import Db, SettingsDep
from web.security import current_user
from web.templating import render

log = structlog.get_logger(__name__)
ADMIN = {"role": Role.ADMIN}  # tokens and signing secrets are credentials, like the Klaviyo key


async def _read_body(receive: Receive, headers: dict[bytes, bytes], limit: int) -> bytes:
    """The raw body (the signature covers its exact bytes), refused with 413 past ``limit``."""
    too_large = IngestError(413, f"The body is larger than {limit:,} bytes; send fewer records per request.")
    length = headers.get(b"content-length", b"")
    if length.isdigit() and int(length) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise IngestError(400, "The client went away before the body arrived.")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _answer(send: Send, status: int, payload: dict[str, Any], *extra: tuple[bytes, bytes]) -> None:
    body = orjson.dumps(payload)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
    start: HTTPResponseStartEvent = {"type": "http.response.start", "status": status, "headers": headers}
    await send(start)
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _page(request: Request[Any, Any, Any], name: str, status: int = 200, **context: Any) -> Template:
    # The pages live in the Schedules area of the navigation.
    return render(request, name, status, area="schedules", **context)


async def _detail(
    request: Request[Any, Any, Any], db: Db, source_id: int, status: int = 200, **shown_once: Any
) -> Template:
    row = await ingest.get_source(db, source_id)
    if row is None:
        raise NotFoundException()
    retrying, failed = await ingest.problem_records(db, source_id)
    return _page(
        request,
        "ingest/detail.html",
        status,
        row=row,
        retrying=retrying,
        failed=failed,
        plan=await ingest_routes.route_plan(db, row.source),
        mappings=await ingest.mapping_choices(db),
        retention_days=request.app.state.settings.ingest_retention_days,
        endpoint=f"{str(request.base_url).rstrip('/')}/api/ingest/{source_id}",
        max_body=request.app.state.settings.ingest_max_body_bytes,
        max_records=request.app.state.settings.ingest_max_records,
        **shown_once,
    )


class IngestController(Controller):
    include_in_schema = False

    # A bare ASGI handler: the store's integration posts many small requests, and Litestar's request
    # and response layers cost more than storing the records does. Guards and middleware still run.
    # Mounted (Litestar cannot route a path parameter to an ASGI handler by method): the rest of
    # the path is the source id.
    @asgi("/api/ingest", is_mount=True, opt={"public": True, "exclude_from_csrf": True}, copy_scope=False)
    async def receive(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Store the posted records durably, wake the forwarder, answer 202 with counts."""
        if scope.get("method") != "POST":
            await _answer(send, 405, {"status": 405, "detail": "POST the records."}, (b"allow", b"POST"))
            return
        state = scope["app"].state
        rest = scope["path"].strip("/")
        if not rest.isdigit():
            await _answer(send, 404, {"status": 404, "detail": "POST to /api/ingest/<source id>."})
            return
        source_id = int(rest)
        headers = dict(scope["headers"])
        try:
            body = await _read_body(receive, headers, state.settings.ingest_max_body_bytes)
            answer = await inbox_for(state).accept(
                source_id,
                headers.get(b"authorization", b"").decode("latin-1"),
                (headers.get(SIGNATURE_HEADER.encode()) or b"").decode("latin-1") or None,
                body,
                timestamp=(headers.get(TIMESTAMP_HEADER) or b"").decode("latin-1") or None,
            )
        except IngestError as exc:
            extra = [(b"www-authenticate", b"Bearer")] if exc.status == 401 else []
            await _answer(send, exc.status, {"status": exc.status, "detail": exc.message}, *extra)
            return
        except STORE_ERRORS as exc:
            # The store must retry: answer in JSON (never the HTML error page), saying nothing was kept.
            log.error("ingest could not store records", source_id=source_id, error=type(exc).__name__)
            detail = (
                "The console could not store the records (database unavailable); nothing was kept. Retry."
            )
            await _answer(send, 503, {"status": 503, "detail": detail}, (b"retry-after", b"5"))
            return
        await _answer(send, 202, answer.as_dict())

    @get("/ingest")
    async def index(self, request: Request[Any, Any, Any], db: Db) -> Template:
        return _page(
            request,
            "ingest/index.html",
            sources=await ingest.list_sources(db),
            mappings=await ingest.mapping_choices(db),
        )

    @post("/ingest", opt=ADMIN)
    async def create(self, request: Request[Any, Any, Any], db: Db, settings: SettingsDep) -> Template:
        form = await request.form()
        try:
            source, token, secret = await ingest.create_source(
                db,
                settings,
                str(form.get("name", "")),
                int(form.get("mapping_id") or 0),
                form.get("signed") == "1",
                current_user(request),
            )
            if form.get("spec") == "1":
                await ingest_routes.route_whole_spec(db, source, current_user(request))
        except (ingest.SourceError, ValueError) as exc:
            return _page(
                request,
                "ingest/index.html",
                400,
                sources=await ingest.list_sources(db),
                mappings=await ingest.mapping_choices(db),
                problem=str(exc),
                form=form,
            )
        audit.record(db, request, "ingest.create", target=f"ingest source {source.name}", signed=bool(secret))
        await db.commit()
        return await _detail(request, db, source.id or 0, 201, token=token, secret=secret)

    @get("/ingest/{source_id:int}")
    async def detail(self, request: Request[Any, Any, Any], db: Db, source_id: FromPath[int]) -> Template:
        return await _detail(request, db, source_id)

    @get("/ingest/{source_id:int}/records")
    async def records(self, request: Request[Any, Any, Any], db: Db, source_id: FromPath[int]) -> Template:
        """The self-refreshing counts and problem lists of the source page."""
        row = await ingest.get_source(db, source_id)
        if row is None:
            raise NotFoundException()
        retrying, failed = await ingest.problem_records(db, source_id)
        plan = await ingest_routes.route_plan(db, row.source)
        return _page(
            request,
            "ingest/_records.html",
            row=row,
            retrying=retrying,
            failed=failed,
            plan=plan,
            mappings=await ingest.mapping_choices(db),
            retention_days=request.app.state.settings.ingest_retention_days,
        )

    @post("/ingest/{source_id:int}/routes")
    async def add_route(
        self, request: Request[Any, Any, Any], db: Db, settings: SettingsDep, source_id: FromPath[int]
    ) -> Template | Redirect:
        """Route an event name through a mapping, and send the records kept for it."""
        source = await self._source(db, source_id)
        form = await request.form()
        try:
            route, replayed = await ingest_routes.add_route(
                db, source, str(form.get("event", "")), int(form.get("mapping_id") or 0)
            )
        except (ingest.SourceError, ValueError) as exc:
            await db.rollback()
            return await _detail(request, db, source_id, 400, route_problem=str(exc))
        _routes_changed(request, db, source, "ingest.route_add", event=route.event_name, replayed=replayed)
        await db.commit()
        if replayed:
            await _wake(request, settings, source_id)
        return Redirect(f"/ingest/{source_id}#routes", status_code=303)

    @post("/ingest/{source_id:int}/routes/spec")
    async def route_spec(
        self, request: Request[Any, Any, Any], db: Db, settings: SettingsDep, source_id: FromPath[int]
    ) -> Redirect:
        """Route every event of the ecommerce spec not routed yet through its preset mapping."""
        source = await self._source(db, source_id)
        added = await ingest_routes.route_whole_spec(db, source, current_user(request))
        _routes_changed(request, db, source, "ingest.route_spec", events=len(added))
        await db.commit()
        if added:
            await _wake(request, settings, source_id)
        return Redirect(f"/ingest/{source_id}#routes", status_code=303)

    @post("/ingest/{source_id:int}/routes/{route_id:int}/remove")
    async def remove_route(
        self, request: Request[Any, Any, Any], db: Db, source_id: FromPath[int], route_id: FromPath[int]
    ) -> Redirect:
        source = await self._source(db, source_id)
        try:
            route = await ingest_routes.remove_route(db, source, route_id)
        except ingest.SourceError:
            raise NotFoundException() from None
        _routes_changed(request, db, source, "ingest.route_remove", event=route.event_name)
        await db.commit()
        return Redirect(f"/ingest/{source_id}#routes", status_code=303)

    @post("/ingest/{source_id:int}/rotate", opt=ADMIN)
    async def rotate(self, request: Request[Any, Any, Any], db: Db, source_id: FromPath[int]) -> Template:
        source = await self._source(db, source_id)
        token = ingest.rotate_token(db, source)
        _credentials_changed(request, db, source, "ingest.rotate_token")
        await db.commit()
        return await _detail(request, db, source_id, token=token)

    @post("/ingest/{source_id:int}/revoke", opt=ADMIN)
    async def revoke(self, request: Request[Any, Any, Any], db: Db, source_id: FromPath[int]) -> Redirect:
        source = await self._source(db, source_id)
        ingest.revoke(db, source)
        _credentials_changed(request, db, source, "ingest.revoke")
        return Redirect(f"/ingest/{source_id}", status_code=303)

    @post("/ingest/{source_id:int}/signing", opt=ADMIN)
    async def signing(
        self, request: Request[Any, Any, Any], db: Db, settings: SettingsDep, source_id: FromPath[int]
    ) -> Template:
        """A new signing secret (shown once); requests must carry X-Signature from now on."""
        source = await self._source(db, source_id)
        secret = ingest.new_signing_secret(db, settings, source)
        _credentials_changed(request, db, source, "ingest.signing_secret")
        await db.commit()
        return await _detail(request, db, source_id, secret=secret)

    @post("/ingest/{source_id:int}/signing/remove", opt=ADMIN)
    async def unsign(self, request: Request[Any, Any, Any], db: Db, source_id: FromPath[int]) -> Redirect:
        source = await self._source(db, source_id)
        ingest.drop_signing_secret(db, source)
        _credentials_changed(request, db, source, "ingest.signing_removed")
        return Redirect(f"/ingest/{source_id}", status_code=303)

    @post("/ingest/{source_id:int}/retry")
    async def retry(
        self, request: Request[Any, Any, Any], db: Db, settings: SettingsDep, source_id: FromPath[int]
    ) -> Redirect:
        source = await self._source(db, source_id)
        count = await ingest.retry_failed(db, source)
        audit.record(db, request, "ingest.retry_failed", target=f"ingest source {source.name}", records=count)
        await db.commit()
        try:
            await ingest.wake(request.app.state.arq, settings.queue_name, source_id, force=True)
        except (RedisError, OSError) as exc:
            log.warning("ingest retry could not wake the forwarder", source_id=source_id, error=str(exc))
        return Redirect(f"/ingest/{source_id}", status_code=303)

    @staticmethod
    async def _source(db: Db, source_id: int) -> IngestSource:
        source = await db.get(IngestSource, source_id)
        if source is None:
            raise NotFoundException()
        return source


def _routes_changed(
    request: Request[Any, Any, Any], db: Any, source: Any, action: str, **details: Any
) -> None:
    """Routes changed: this process reads them again at once (others within a second)."""
    inbox_for(request.app.state).forget(source.id)
    audit.record(db, request, action, target=f"ingest source {source.name}", **details)


async def _wake(request: Request[Any, Any, Any], settings: Any, source_id: int) -> None:
    try:
        await ingest.wake(request.app.state.arq, settings.queue_name, source_id, force=True)
    except (RedisError, OSError) as exc:
        log.warning("ingest could not wake the forwarder", source_id=source_id, error=str(exc))


def _credentials_changed(request: Request[Any, Any, Any], db: Any, source: Any, action: str) -> None:
    """A token or secret changed: this process stops trusting its cached copy, and the audit log says so."""
    inbox_for(request.app.state).forget(source.id)
    audit.record(db, request, action, target=f"ingest source {source.name}")
