"""Real-time ingest: the API a store posts events and orders to, and the pages under /ingest where
sources are created (token shown once), rotated and revoked, and their failed records listed."""

from __future__ import annotations

from typing import Any

import orjson
import structlog
from litestar import Controller, MediaType, Request, Response, get, post
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.response import Redirect, Template
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from models import IngestSource, Role
from services import audit, ingest
from services.ingest import SIGNATURE_HEADER, IngestError
from services.ingest_inbox import inbox_for
from web.deps import Db, SettingsDep
from web.security import current_user
from web.templating import render

log = structlog.get_logger(__name__)
ADMIN = {"role": Role.ADMIN}  # tokens and signing secrets are credentials, like the Klaviyo key


async def _read_body(request: Request[Any, Any, Any], limit: int) -> bytes:
    """The raw body (the signature covers its exact bytes), refused with 413 past ``limit``."""
    too_large = IngestError(413, f"The body is larger than {limit:,} bytes; send fewer records per request.")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


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
        endpoint=f"{str(request.base_url).rstrip('/')}/api/ingest/{source_id}",
        max_body=request.app.state.settings.ingest_max_body_bytes,
        **shown_once,
    )


class IngestController(Controller):
    include_in_schema = False

    @post(
        "/api/ingest/{source_id:int}",
        opt={"public": True, "exclude_from_csrf": True},
        request_max_body_size=None,  # our own cap answers 413 in JSON
        status_code=202,
    )
    async def receive(self, request: Request[Any, Any, Any], source_id: FromPath[int]) -> Response[Any]:
        """Store the posted records durably, wake the forwarder, answer 202 with counts."""
        settings = request.app.state.settings
        try:
            body = await _read_body(request, settings.ingest_max_body_bytes)
            answer = await inbox_for(request.app.state).accept(
                source_id,
                request.headers.get("authorization", ""),
                request.headers.get(SIGNATURE_HEADER),
                body,
            )
        except IngestError as exc:
            headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
            return Response(
                {"status": exc.status, "detail": exc.message}, status_code=exc.status, headers=headers
            )
        except (SQLAlchemyError, OSError) as exc:
            # The store must retry: answer in JSON (never the HTML error page), saying nothing was kept.
            log.error("ingest could not store records", source_id=source_id, error=type(exc).__name__)
            detail = (
                "The console could not store the records (database unavailable); nothing was kept. Retry."
            )
            return Response({"status": 503, "detail": detail}, status_code=503, headers={"Retry-After": "5"})
        return Response(orjson.dumps(answer.as_dict()), status_code=202, media_type=MediaType.JSON)

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
        return _page(request, "ingest/_records.html", row=row, retrying=retrying, failed=failed)

    @post("/ingest/{source_id:int}/rotate", opt=ADMIN)
    async def rotate(self, request: Request[Any, Any, Any], db: Db, source_id: FromPath[int]) -> Template:
        source = await self._source(db, source_id)
        token = ingest.rotate_token(db, source)
        inbox_for(request.app.state).forget(source_id)
        audit.record(db, request, "ingest.rotate_token", target=f"ingest source {source.name}")
        await db.commit()
        return await _detail(request, db, source_id, token=token)

    @post("/ingest/{source_id:int}/revoke", opt=ADMIN)
    async def revoke(self, request: Request[Any, Any, Any], db: Db, source_id: FromPath[int]) -> Redirect:
        source = await self._source(db, source_id)
        ingest.revoke(db, source)
        inbox_for(request.app.state).forget(source_id)
        audit.record(db, request, "ingest.revoke", target=f"ingest source {source.name}")
        return Redirect(f"/ingest/{source_id}", status_code=303)

    @post("/ingest/{source_id:int}/signing", opt=ADMIN)
    async def signing(
        self, request: Request[Any, Any, Any], db: Db, settings: SettingsDep, source_id: FromPath[int]
    ) -> Template:
        """A new signing secret (shown once); requests must carry X-Signature from now on."""
        source = await self._source(db, source_id)
        secret = ingest.new_signing_secret(db, settings, source)
        inbox_for(request.app.state).forget(source_id)
        audit.record(db, request, "ingest.signing_secret", target=f"ingest source {source.name}")
        await db.commit()
        return await _detail(request, db, source_id, secret=secret)

    @post("/ingest/{source_id:int}/signing/remove", opt=ADMIN)
    async def unsign(self, request: Request[Any, Any, Any], db: Db, source_id: FromPath[int]) -> Redirect:
        source = await self._source(db, source_id)
        ingest.drop_signing_secret(db, source)
        inbox_for(request.app.state).forget(source_id)
        audit.record(db, request, "ingest.signing_removed", target=f"ingest source {source.name}")
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
