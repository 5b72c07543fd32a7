"""Onsite tracking page: bind store variables to onsite metrics, read the generated snippets (shown as
text, never run here), save versions, download them, and "Try it" on a sandbox-hosted demo store."""

from __future__ import annotations

from typing import Any

import httpx
from litestar import Controller, Request, Response, get, post
from litestar.exceptions import NotFoundException
from litestar.params import FromQuery
from litestar.plugins.flash import flash
from litestar.response import Template

from models import OnsiteSnippetSet
from services import accounts, audit, onsite
from sync.onsite import (
    HANDLEBARS_JSON_HELPER,
    IDENTIFY_FIELDS,
    ONSITE_METRICS,
    SYNTAX_LABELS,
    BindingError,
    OnsiteSpec,
    item_properties,
    metric_properties,
)
from web.deps import Db, SettingsDep
from web.security import current_user
from web.templating import render

AnyRequest = Request[Any, Any, Any]


async def _page(
    request: AnyRequest,
    db: Db,
    settings: SettingsDep,
    spec: OnsiteSpec,
    catalog_id: int | None,
    order_id: int | None,
    saved: OnsiteSnippetSet | None,
    status: int = 200,
    error: str | None = None,
) -> Template:
    account = await accounts.get_account(db)
    view = None
    try:
        view = await onsite.view(db, account, settings, spec, catalog_id, order_id, saved)
    except (onsite.OnsiteError, BindingError) as exc:
        error, status = error or str(exc), 400 if status == 200 and not saved else status
    return render(
        request,
        "onsite/index.html",
        status,
        account=account,
        spec=spec,
        view=view,
        saved=saved,
        latest=await onsite.latest(db),
        history=await onsite.history(db),
        catalogs=await onsite.mappings_of(db, onsite.CATALOG_KINDS),
        orders=await onsite.mappings_of(db, ("order",)),
        catalog_id=catalog_id,
        order_id=order_id,
        error=error,
        metrics=ONSITE_METRICS,
        properties=metric_properties,
        item_keys=item_properties,
        identify_fields=IDENTIFY_FIELDS,
        syntaxes=SYNTAX_LABELS,
        handlebars_helper=HANDLEBARS_JSON_HELPER,
    )


class OnsiteController(Controller):
    path = "/onsite"
    include_in_schema = False

    @get("/")
    async def index(
        self, request: AnyRequest, db: Db, settings: SettingsDep, version: FromQuery[int | None] = None
    ) -> Template:
        saved = await onsite.get_set(db, version) if version else await onsite.latest(db)
        if version and saved is None:
            raise NotFoundException(f"No onsite snippet set version {version}.")
        if saved is not None:
            spec = onsite.spec_of(saved)
            return await _page(
                request, db, settings, spec, saved.catalog_mapping_id, saved.order_mapping_id, saved
            )
        catalogs = await onsite.mappings_of(db, onsite.CATALOG_KINDS)
        orders = await onsite.mappings_of(db, ("order",))
        catalog = await onsite.source_at(db, catalogs[0].id, None) if catalogs else None
        order = await onsite.source_at(db, orders[0].id, None) if orders else None
        spec = onsite.suggested(catalog.spec if catalog else None, order.spec if order else None)
        return await _page(
            request,
            db,
            settings,
            spec,
            catalog.mapping.id if catalog else None,
            order.mapping.id if order else None,
            None,
        )

    @post("/")
    async def save(self, request: AnyRequest, db: Db, settings: SettingsDep) -> Any:
        form = dict(await request.form())
        try:
            spec, catalog_id, order_id = onsite.parse_form(form)
        except onsite.OnsiteError as exc:
            latest = await onsite.latest(db)
            spec = onsite.spec_of(latest) if latest else onsite.suggested(None, None)
            return await _page(request, db, settings, spec, None, None, None, 400, str(exc))
        try:
            onsite.validate(spec)
        except onsite.OnsiteError as exc:
            # The form comes back with what was typed, the bad binding named in the message.
            return await _page(request, db, settings, spec, catalog_id, order_id, None, 400, str(exc))
        if form.get("action") == "preview":
            return await _page(request, db, settings, spec, catalog_id, order_id, None)
        row = await onsite.save(db, spec, catalog_id, order_id, current_user(request))
        audit.record(db, request, "onsite.save", target=f"onsite snippets v{row.version}")
        flash(request, f"Saved onsite snippets version {row.version}.", category="success")
        return Response(content="", status_code=303, headers={"Location": "/onsite"})

    @get("/download")
    async def download(self, db: Db, settings: SettingsDep, version: FromQuery[int]) -> Response[str]:
        saved = await onsite.get_set(db, version)
        if saved is None:
            raise NotFoundException(f"No onsite snippet set version {version}.")
        account = await accounts.get_account(db)
        spec = onsite.spec_of(saved)
        try:
            view = await onsite.view(
                db, account, settings, spec, saved.catalog_mapping_id, saved.order_mapping_id, saved
            )
        except onsite.OnsiteError as exc:
            return Response(content=str(exc), status_code=409, media_type="text/plain")
        text = onsite.download_text(view)
        name = f"klaviyo-onsite-v{saved.version}-{spec.syntax.value}.html"
        return Response(
            content=text,
            media_type="text/html; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    @post("/try")
    async def try_it(self, request: AnyRequest, db: Db, settings: SettingsDep) -> Any:
        form = await request.form()
        saved = await onsite.get_set(db, int(str(form.get("version") or 0) or 0))
        if saved is None:
            flash(request, "Save the snippets first: Try it runs a saved version.", category="error")
            return Response(content="", status_code=303, headers={"Location": "/onsite"})
        try:
            url = await onsite.publish_demo(onsite.spec_of(saved), settings)
        except onsite.OnsiteError as exc:
            flash(request, str(exc), category="error")
            return Response(content="", status_code=303, headers={"Location": "/onsite"})
        audit.record(db, request, "onsite.try", target=f"onsite snippets v{saved.version}")
        # A page with a link, not a redirect: the console's CSP allows forms to post only to itself
        # (form-action 'self'), and that covers where a form's answer redirects to.
        origin = str(httpx.URL(url).copy_with(path="/", query=None)).rstrip("/")
        return render(
            request, "onsite/tried.html", area="onsite", url=url, origin=origin, version=saved.version
        )

    @get("/activity")
    async def activity(self, request: AnyRequest, settings: SettingsDep) -> Template:
        return render(
            request, "onsite/_activity.html", area="onsite", activity=await onsite.sandbox_activity(settings)
        )
