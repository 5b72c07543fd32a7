"""Mappings: the list, new/import/export, and the studio with its live preview (htmx)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import UploadFile
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, FromQuery
from litestar.plugins.flash import flash
from litestar.response import Redirect, Template
from redis.exceptions import RedisError

from models import Mapping, Role
from services import accounts, audit, catalog, lists, mappings, metric_cache
from services.mapping_editor import (
    FormErrors,
    base_options_json,
    editor_context,
    filter_rows,
    rows_from_spec,
    spec_from_form,
    suggested_row,
)
from sync.presets import STANDARD_METRICS
from web.deps import ArqDep, Db, RedisDep, SettingsDep
from web.security import current_user
from web.templating import render

VIEWER = {"role": Role.VIEWER}  # the preview changes nothing, so viewers may try edits too
AnyRequest = Request[Any, Any, Any]


async def _live(db: Db, mapping_id: int) -> Mapping:
    mapping = await mappings.get_mapping(db, mapping_id)
    if mapping is None:
        raise NotFoundException()
    return mapping


def _uid(request: AnyRequest) -> int | None:
    user = current_user(request)
    return user.id if user else None


async def _index(request: AnyRequest, db: Db, status: int = 200, **extra: Any) -> Template:
    return render(
        request,
        "mappings/index.html",
        status,
        items=await mappings.list_mappings(db),
        uploads=await mappings.ready_uploads(db),
        kinds=mappings.KIND_LABELS,
        order_metrics=mappings.ORDER_METRICS,
        event_metrics=mappings.EVENT_METRICS,
        other_kinds=mappings.OTHER_KINDS,
        sources=mappings.SOURCE_PRESETS,
        **extra,
    )


async def _studio(
    request: AnyRequest, db: Db, redis: RedisDep, spec: Any, choice: Any, **extra: Any
) -> mappings.Studio:
    account = await accounts.get_account(db)
    cache = await metric_cache.read(redis, account.id or 0)
    sample = await mappings.load_sample(db, choice)
    studio = mappings.build_studio(spec, sample, choice, cache, **extra)
    if spec is not None and not studio.preview.mapping_error:
        # Recommendations need Ordered Product / Placed Order's ProductID to match the synced catalog.
        items = [item for row in studio.preview.rows for item in row.result.items]
        studio.preview.mapping_issues.extend(await catalog.product_id_issues(db, spec, items))
    return studio


class MappingsController(Controller):
    path = "/mappings"
    include_in_schema = False

    @get("/")
    async def index(self, request: AnyRequest, db: Db, sample_upload: int | None = None) -> Template:
        # ?sample_upload= comes from an upload's page and the Overview's checklist: that file is the sample.
        return await _index(request, db, sample_upload=sample_upload)

    @post("/")
    async def create(self, request: AnyRequest, db: Db, redis: RedisDep) -> Response[Any] | Template:
        form = await request.form()
        choice = mappings.choice_from_form(form)
        try:
            kind, metric = mappings.parse_choice(
                str(form.get("what", "")), str(form.get("custom_metric", ""))
            )
            sample = await mappings.load_sample(db, choice)
            source = str(form.get("source") or "auto")
            spec = mappings.new_spec(str(form.get("name", "")), kind, metric, source, sample.columns)
            mapping = await mappings.create_mapping(db, spec, current_user(request))
        except mappings.MappingsError as exc:
            return await _index(request, db, 400, error=str(exc), form=form)
        audit.record(db, request, "mapping.create", target=mapping.name, kind=mapping.target_kind)
        await mappings.remember_sample(redis, _uid(request), mapping.id or 0, choice)
        return Redirect(f"/mappings/{mapping.id}", status_code=303)

    @post("/import")
    async def import_(self, request: AnyRequest, db: Db) -> Response[Any] | Template:
        form = await request.form()
        upload = form.get("file")
        text = await upload.read() if isinstance(upload, UploadFile) else b""
        text = text or str(form.get("json", "")).encode()
        try:
            mapping = await mappings.import_mapping(db, text, current_user(request))
        except mappings.MappingsError as exc:
            return await _index(request, db, 400, import_error=f"Not imported: {exc}")
        audit.record(db, request, "mapping.import", target=mapping.name, kind=mapping.target_kind)
        flash(request, f"Imported {mapping.name} as a new mapping (version 1).", category="success")
        return Redirect(f"/mappings/{mapping.id}", status_code=303)

    @get("/{mapping_id:int}")
    async def studio(
        self,
        request: AnyRequest,
        db: Db,
        redis: RedisDep,
        mapping_id: FromPath[int],
        version: FromQuery[int | None] = None,
    ) -> Template:
        mapping = await _live(db, mapping_id)
        stored = await mappings.get_version(db, mapping, version)
        if stored is None:
            raise NotFoundException(f"{mapping.name} has no version {version}.")
        spec = mappings.spec_of(stored)
        choice = await mappings.recall_sample(redis, _uid(request), mapping_id)
        studio = await _studio(request, db, redis, spec, choice)
        return render(
            request,
            "mappings/studio.html",
            mapping=mapping,
            shown_version=stored.version,
            studio=studio,
            rows=rows_from_spec(spec),
            filters=filter_rows(spec),
            klaviyo_lists=await lists.all_lists(db),
            versions=await mappings.list_versions(db, mapping),
            uploads=await mappings.ready_uploads(db),
            editor=editor_context(spec.target.kind, spec.target.metric),
            base_options=base_options_json(spec.options),
            kinds=mappings.KIND_LABELS,
            hints=mappings.hints_for(spec),
            metric_names=sorted({*STANDARD_METRICS, *studio.metrics.names}),
        )

    @post("/{mapping_id:int}/preview", opt=VIEWER)
    async def preview(
        self, request: AnyRequest, db: Db, redis: RedisDep, mapping_id: FromPath[int]
    ) -> Template:
        form = await request.form()
        choice = mappings.choice_from_form(form)
        spec, errors = None, []
        try:
            spec = spec_from_form(form)
        except FormErrors as exc:
            errors = exc.messages
        row = str(form.get("preview_row") or "0")
        studio = await _studio(
            request, db, redis, spec, choice, row_index=int(row) if row.isdigit() else 0, form_errors=errors
        )
        await mappings.remember_sample(redis, _uid(request), mapping_id, choice)
        keys = [str(key) for key in form.getall("rule", [])]
        return render(
            request,
            "mappings/_preview.html",
            studio=studio,
            keys=keys,
            hints=mappings.hints_for(spec),
            oob=True,
        )

    @post("/{mapping_id:int}/versions")
    async def save(self, request: AnyRequest, db: Db, mapping_id: FromPath[int]) -> Template:
        mapping = await _live(db, mapping_id)
        try:
            version = await mappings.save_version(
                db, mapping, spec_from_form(await request.form()), current_user(request)
            )
        except FormErrors as exc:
            return render(request, "mappings/_saved.html", 400, errors=exc.messages)
        except mappings.MappingsError as exc:
            return render(request, "mappings/_saved.html", 400, errors=[str(exc)])
        audit.record(db, request, "mapping.save", target=mapping.name, version=version.version)
        versions = await mappings.list_versions(db, mapping)
        return render(request, "mappings/_saved.html", mapping=mapping, version=version, versions=versions)

    @post("/{mapping_id:int}/duplicate")
    async def duplicate(self, request: AnyRequest, db: Db, mapping_id: FromPath[int]) -> Response[Any]:
        original = await _live(db, mapping_id)
        copy = await mappings.duplicate_mapping(db, original, current_user(request))
        audit.record(db, request, "mapping.duplicate", target=copy.name, source=original.name)
        flash(request, f"Duplicated {original.name} as {copy.name}.", category="success")
        return Response(content="", headers={"HX-Redirect": f"/mappings/{copy.id}"})

    @post("/{mapping_id:int}/delete")
    async def delete(
        self, request: AnyRequest, db: Db, mapping_id: FromPath[int]
    ) -> Response[Any] | Template:
        mapping = await _live(db, mapping_id)
        try:
            await mappings.delete_mapping(db, mapping)
        except mappings.MappingsError as exc:
            return render(request, "mappings/_saved.html", 409, errors=[str(exc)])
        audit.record(db, request, "mapping.delete", target=mapping.name)
        flash(request, f"Deleted {mapping.name}.", category="success")
        return Response(content="", headers={"HX-Redirect": "/mappings"})

    @get("/{mapping_id:int}/export")
    async def export(
        self, db: Db, mapping_id: FromPath[int], version: FromQuery[int | None] = None
    ) -> Response[str]:
        stored = await mappings.get_version(db, await _live(db, mapping_id), version)
        if stored is None:
            raise NotFoundException()
        filename, text = mappings.export_json(stored)
        disposition = f'attachment; filename="{filename}"'
        return Response(
            content=text, media_type="application/json", headers={"Content-Disposition": disposition}
        )

    @get("/rule")
    async def new_rule(
        self,
        request: AnyRequest,
        kind: FromQuery[str] = "event",
        column: FromQuery[str] = "",
        target: FromQuery[str] = "",
    ) -> Template:
        if kind not in mappings.KIND_LABELS:
            raise NotFoundException()
        row = suggested_row(kind, column, target)
        return render(request, "mappings/_rule.html", row=row, note=None, editor=editor_context(kind))

    @get("/rule/removed")
    async def rule_removed(self) -> Response[str]:
        # The row is removed by hx-swap="delete"; the event, after the swap, makes the preview catch up.
        return Response(content="", headers={"HX-Trigger-After-Settle": "rules-changed"})

    @get("/metrics")
    async def metrics(self, request: AnyRequest, db: Db, redis: RedisDep) -> Response[Any] | Template:
        account = await accounts.get_account(db)
        cache = await metric_cache.read(redis, account.id or 0)
        response = render(request, "mappings/_metrics.html", metrics=cache)
        if not cache.refreshing and request.headers.get("hx-request"):
            response.headers["HX-Trigger-After-Settle"] = "metrics-refreshed"
        return response

    @post("/metrics/refresh")
    async def refresh_metrics(
        self, request: AnyRequest, db: Db, redis: RedisDep, arq: ArqDep, settings: SettingsDep
    ) -> Template:
        account = await accounts.get_account(db)
        error = None
        try:
            await metric_cache.mark_refreshing(redis, account.id or 0)
            await arq.enqueue_job(
                "refresh_metrics", account.id, _job_id=f"{settings.queue_name}:metrics:{account.id}"
            )
        except (RedisError, OSError) as exc:
            error = f"Could not queue the refresh: Redis is unreachable ({exc}). Check REDIS_URL."
        audit.record(db, request, "mapping.metrics_refresh")
        cache = await metric_cache.read(redis, account.id or 0) if error is None else None
        return render(request, "mappings/_metrics.html", metrics=cache, error=error)
