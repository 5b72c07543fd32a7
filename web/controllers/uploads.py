"""Uploads: stream a CSV to disk, list uploads, show one with its analysis, preview and run form.

The stored file is never served back: no route here (or anywhere) reads it out.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, MediaType, Request, Response, get, post
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, FromQuery
from litestar.response import Template

from models import Upload, UploadStatus
from services import audit, consent_import, lists, run_routes, uploads
from services.workers import worker_health
from web.deps import ArqDep, Db, RedisDep, SettingsDep
from web.security import current_user
from web.templating import render

PAGE_SIZE = 50


async def _get(db: Db, upload_id: int) -> Upload:
    upload = await db.get(Upload, upload_id)
    if upload is None:
        raise NotFoundException()
    return upload


class UploadsController(Controller):
    path = "/uploads"
    include_in_schema = False

    @get("/")
    async def index(
        self,
        request: Request[Any, Any, Any],
        db: Db,
        settings: SettingsDep,
        before: FromQuery[int | None] = None,
        feeds: FromQuery[bool] = False,
    ) -> Template:
        items = await uploads.list_uploads(db, before_id=before, limit=PAGE_SIZE, feeds=feeds)
        return render(
            request,
            "uploads/index.html",
            feeds=feeds,
            uploads=items,
            names=await uploads.usernames(db, items),
            more=items[-1].id if len(items) == PAGE_SIZE else None,
            max_bytes=settings.upload_max_bytes,
            size=uploads.human_size,
        )

    # The body is the file itself (application/octet-stream), streamed to disk by the service;
    # the app-wide body limit is lifted here because the service enforces UPLOAD_MAX_BYTES.
    @post("/", request_max_body_size=None)
    async def upload(
        self,
        request: Request[Any, Any, Any],
        db: Db,
        settings: SettingsDep,
        arq: ArqDep,
        name: FromQuery[str] = "",
    ) -> Response[Any]:
        try:
            upload = await uploads.receive(
                db,
                settings,
                request.stream(),
                filename=name,
                content_length=request.content_length,
                user=current_user(request),
                content_type=request.content_type[0],
            )
        except uploads.UploadRefused as exc:
            audit.record(db, request, "upload.refused", filename=uploads.display_name(name), reason=str(exc))
            return Response({"detail": str(exc)}, status_code=exc.status_code, media_type=MediaType.JSON)
        audit.record(
            db,
            request,
            "upload.create",
            target=f"upload #{upload.id}",
            filename=upload.filename,
            size_bytes=upload.size_bytes,
            sha256=upload.sha256,
        )
        await db.commit()  # the worker must find the row
        queue_error = await uploads.enqueue_analysis(arq, settings, upload.id or 0)
        earlier = await uploads.earlier_copy(db, upload)
        body = {
            "id": upload.id,
            "url": f"/uploads/{upload.id}",
            "queue_error": queue_error,
            "duplicate_of": earlier.id if earlier else None,
        }
        return Response(body, status_code=201, media_type=MediaType.JSON)

    @get("/{upload_id:int}")
    async def detail(
        self,
        request: Request[Any, Any, Any],
        db: Db,
        redis: RedisDep,
        settings: SettingsDep,
        upload_id: FromPath[int],
    ) -> Template:
        upload = await _get(db, upload_id)
        runnable, reason = uploads.can_run(upload)
        mappings = await uploads.mapping_choices(db, upload) if runnable else []
        return render(
            request,
            "uploads/detail.html",
            area="uploads",
            upload=upload,
            names=await uploads.usernames(db, [upload]),
            earlier=await uploads.earlier_copy(db, upload),
            groups=uploads.group_problems(upload.problems),
            blocking=uploads.blocking_problem(upload),
            summary_line=uploads.summary_line,
            stuck=uploads.waiting_too_long(upload),
            runnable=runnable,
            reason=reason,
            mappings=mappings,
            route_sets=await run_routes.route_set_choices(db) if runnable else [],
            resubscribe=await consent_import.resubscribe_warnings(db, settings, upload, mappings),
            klaviyo_lists=await lists.all_lists(db) if runnable else [],
            health=await worker_health(redis, settings.queue_name),
            size=uploads.human_size,
            encodings=uploads.ENCODING_NAMES,
            delimiters=uploads.DELIMITER_NAMES,
        )

    @get("/{upload_id:int}/status")
    async def status(
        self,
        request: Request[Any, Any, Any],
        db: Db,
        redis: RedisDep,
        settings: SettingsDep,
        upload_id: FromPath[int],
    ) -> Template:
        upload = await _get(db, upload_id)
        response = render(
            request,
            "uploads/_status.html",
            area="uploads",
            upload=upload,
            blocking=uploads.blocking_problem(upload),
            summary_line=uploads.summary_line,
            health=await worker_health(redis, settings.queue_name),
            stuck=uploads.waiting_too_long(upload),
        )
        if request.headers.get("hx-request") == "true" and upload.status != UploadStatus.RECEIVING:
            # Analysis finished while the page polled: reload it to show columns, problems and preview.
            response.headers["HX-Refresh"] = "true"
        return response

    @post("/{upload_id:int}/analyse")
    async def analyse(
        self,
        request: Request[Any, Any, Any],
        db: Db,
        arq: ArqDep,
        redis: RedisDep,
        settings: SettingsDep,
        upload_id: FromPath[int],
    ) -> Template:
        upload = await _get(db, upload_id)
        upload.status = UploadStatus.RECEIVING
        db.add(upload)
        audit.record(db, request, "upload.analyse", target=f"upload #{upload.id}")
        await db.commit()
        queue_error = await uploads.enqueue_analysis(arq, settings, upload_id)
        return render(
            request,
            "uploads/_status.html",
            area="uploads",
            upload=upload,
            blocking=None,
            summary_line=uploads.summary_line,
            health=await worker_health(redis, settings.queue_name),
            queue_error=queue_error,
        )
