"""Schedules page: feed sources synced on a cron expression or an interval; create, edit, delete,
run now, enable, disable. Every action writes an audit entry.

Ticks run in the worker (``run_schedule``); these handlers only store schedules and queue ticks.
"""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.plugins.flash import flash
from litestar.response import Template
from sqlmodel import col, select

from models import Mapping, Role
from services import audit, feed_test, lists, run_routes, schedule_view, schedules
from web.deps import ArqDep, Db, SettingsDep
from web.security import current_user
from web.templating import render


async def _mappings(db: Db) -> list[Mapping]:
    query = select(Mapping).where(col(Mapping.deleted).is_(False)).order_by(col(Mapping.name))
    return list((await db.exec(query)).all())


async def _found(db: Db, schedule_id: int) -> schedules.ScheduleRow:
    row = await schedules.get_schedule(db, schedule_id)
    if row is None:
        raise NotFoundException(f"No schedule #{schedule_id}.")
    return row


class SchedulesController(Controller):
    path = "/schedules"
    include_in_schema = False

    @get("/")
    async def index(self, request: Request[Any, Any, Any], db: Db) -> Template:
        return render(
            request,
            "schedules/index.html",
            rows=await schedules.list_schedules(db),
            timing=schedules.describe_timing,
        )

    @get("/new")
    async def new(self, request: Request[Any, Any, Any], db: Db) -> Template:
        return render(
            request,
            "schedules/new.html",
            mappings=await _mappings(db),
            klaviyo_lists=await lists.all_lists(db),
            route_sets=await run_routes.route_set_choices(db),
            form={},
            problems={},
        )

    @post("/test-feed")
    async def test_feed(self, request: Request[Any, Any, Any], db: Db, settings: SettingsDep) -> Template:
        raw = dict(await request.form())
        form = schedules.ScheduleForm.from_form(raw)
        schedule_id = str(raw.get("schedule_id", ""))
        row = await schedules.get_schedule(db, int(schedule_id)) if schedule_id.isdigit() else None
        tested = await feed_test.try_feed(db, settings, form, row.schedule if row else None)
        return render(request, "schedules/_feed_test.html", feed_test=tested, oob=True)

    @post("/")
    async def create(self, request: Request[Any, Any, Any], db: Db, settings: SettingsDep) -> Any:
        raw = dict(await request.form())
        form = schedules.ScheduleForm.from_form(raw)
        tested = None if form.problems() else await feed_test.try_feed(db, settings, form)
        if tested is not None and tested.refusal:
            raw.pop("auth_header_value", None)
            return render(
                request,
                "schedules/new.html",
                400,
                mappings=await _mappings(db),
                klaviyo_lists=await lists.all_lists(db),
                form=raw,
                problems={"mapping_id": tested.refusal},
                feed_test=tested,
            )
        try:
            schedule = await schedules.create_schedule(db, settings, form, current_user(request))
        except schedules.ScheduleError as exc:
            raw.pop("auth_header_value", None)  # a secret is never rendered back
            problems = form.problems() or {exc.field: str(exc)}
            return render(
                request,
                "schedules/new.html",
                400,
                mappings=await _mappings(db),
                klaviyo_lists=await lists.all_lists(db),
                route_sets=await run_routes.route_set_choices(db),
                form=raw,
                problems=problems,
            )
        audit.record(db, request, "schedule.create", target=f"schedule #{schedule.id}", url=form.url)
        await db.commit()
        return Response(content="", status_code=303, headers={"Location": f"/schedules/{schedule.id}"})

    @get("/{schedule_id:int}")
    async def detail(self, request: Request[Any, Any, Any], db: Db, schedule_id: FromPath[int]) -> Template:
        row = await _found(db, schedule_id)
        ticks = await schedules.recent_ticks(db, schedule_id)
        return render(
            request,
            "schedules/detail.html",
            row=row,
            timing=schedules.describe_timing(row.schedule),
            upcoming=schedules.upcoming(row.schedule) if row.schedule.enabled else [],
            ticks=ticks,
            retries=await schedules.pending_retries(db, row.schedule),
            tick_runs=await schedule_view.tick_runs(db, ticks),
            outcome_label=schedule_view.outcome_label,
            trigger_label=schedule_view.trigger_label,
        )

    @get("/{schedule_id:int}/ticks")
    async def ticks(self, request: Request[Any, Any, Any], db: Db, schedule_id: FromPath[int]) -> Template:
        row = await _found(db, schedule_id)
        ticks = await schedules.recent_ticks(db, schedule_id)
        return render(
            request,
            "schedules/_ticks.html",
            row=row,
            ticks=ticks,
            retries=await schedules.pending_retries(db, row.schedule),
            tick_runs=await schedule_view.tick_runs(db, ticks),
            outcome_label=schedule_view.outcome_label,
            trigger_label=schedule_view.trigger_label,
        )

    @post("/{schedule_id:int}/run")
    async def run_now(
        self,
        request: Request[Any, Any, Any],
        db: Db,
        arq: ArqDep,
        settings: SettingsDep,
        schedule_id: FromPath[int],
    ) -> Any:
        row = await _found(db, schedule_id)
        audit.record(db, request, "schedule.run_now", target=f"schedule #{schedule_id}")
        await db.commit()
        await schedules.enqueue_tick(arq, settings.queue_name, schedule_id, "manual", uuid.uuid4().hex)
        ticks = await schedules.recent_ticks(db, schedule_id)
        return render(
            request,
            "schedules/_ticks.html",
            row=row,
            ticks=ticks,
            retries=await schedules.pending_retries(db, row.schedule),
            queued=True,
            tick_runs=await schedule_view.tick_runs(db, ticks),
            outcome_label=schedule_view.outcome_label,
            trigger_label=schedule_view.trigger_label,
        )

    @post("/{schedule_id:int}/enabled")
    async def set_enabled(self, request: Request[Any, Any, Any], db: Db, schedule_id: FromPath[int]) -> Any:
        row = await _found(db, schedule_id)
        enabled = (await request.form()).get("enabled") == "1"
        await schedules.set_enabled(db, row.schedule, enabled)
        audit.record(
            db,
            request,
            "schedule.enable" if enabled else "schedule.disable",
            target=f"schedule #{schedule_id}",
        )
        await db.commit()
        return Response(content="", status_code=303, headers={"Location": f"/schedules/{schedule_id}"})

    @get("/{schedule_id:int}/edit", opt={"role": Role.OPERATOR})
    async def edit(self, request: Request[Any, Any, Any], db: Db, schedule_id: FromPath[int]) -> Template:
        row = await _found(db, schedule_id)
        form = schedules.form_values(row.schedule, row.source)
        return await _edit_page(request, db, row, form, {})

    @post("/{schedule_id:int}/edit")
    async def update(
        self, request: Request[Any, Any, Any], db: Db, settings: SettingsDep, schedule_id: FromPath[int]
    ) -> Any:
        row = await _found(db, schedule_id)
        raw = dict(await request.form())
        form = schedules.ScheduleForm.from_form(raw)
        stored = bool(row.source.auth_header_encrypted)
        tested = (
            None
            if form.problems(stored_auth=stored)
            else await feed_test.try_feed(db, settings, form, row.schedule)
        )
        if tested is not None and tested.refusal:
            raw.pop("auth_header_value", None)
            return await _edit_page(request, db, row, raw, {"mapping_id": tested.refusal}, 400, tested)
        try:
            edit = await schedules.update_schedule(db, settings, row.schedule, row.source, form)
        except schedules.ScheduleError as exc:  # raised before anything is changed
            raw.pop("auth_header_value", None)  # a secret is never rendered back
            stored = bool(row.source.auth_header_encrypted)
            problems = form.problems(stored_auth=stored) or {exc.field: str(exc)}
            return await _edit_page(request, db, row, raw, problems, 400)
        audit.record(
            db,
            request,
            "schedule.edit",
            target=f"schedule #{schedule_id}",
            changed=edit.changed,
            position=edit.position,
        )
        await db.commit()
        saved = f"Saved {row.schedule.name}." if edit.changed or edit.position else "Nothing was changed."
        flash(request, f"{saved} {edit.message}".strip(), category="success")
        return Response(content="", status_code=303, headers={"Location": f"/schedules/{schedule_id}"})

    @get("/{schedule_id:int}/delete", opt={"role": Role.OPERATOR})
    async def confirm_delete(
        self, request: Request[Any, Any, Any], db: Db, schedule_id: FromPath[int]
    ) -> Template:
        return await _delete_page(request, db, await _found(db, schedule_id))

    @post("/{schedule_id:int}/delete")
    async def delete(self, request: Request[Any, Any, Any], db: Db, schedule_id: FromPath[int]) -> Any:
        row = await _found(db, schedule_id)
        name, url = row.schedule.name, row.source.url
        if (await request.form()).get("confirm") != "1":
            return await _delete_page(request, db, row, "Confirm with the Delete button on this page.", 400)
        try:
            removed = await schedules.delete_schedule(db, row.schedule)
        except schedules.ScheduleError as exc:  # a tick holds the schedule; nothing was changed
            return await _delete_page(request, db, row, str(exc), 409)
        audit.record(
            db,
            request,
            "schedule.delete",
            target=f"schedule #{schedule_id}",
            name=name,
            url=url,
            ticks=removed.ticks,
            ledger=removed.ledger,
            runs_kept=len(removed.run_ids),
        )
        await db.commit()
        flash(
            request,
            f"Deleted the schedule {name}; its runs stay in run history.",
            category="success",
        )
        return Response(content="", status_code=303, headers={"Location": "/schedules"})


async def _edit_page(
    request: Request[Any, Any, Any],
    db: Db,
    row: schedules.ScheduleRow,
    form: dict[str, Any],
    problems: dict[str, str],
    status: int = 200,
    tested: feed_test.FeedTest | None = None,
) -> Template:
    ledger = await schedules.ledger_size(db, row.schedule.id or 0)
    return render(
        request,
        "schedules/edit.html",
        status,
        row=row,
        mappings=await _mappings(db),
        klaviyo_lists=await lists.all_lists(db),
        route_sets=await run_routes.route_set_choices(db),
        form=form,
        problems=problems,
        stored_auth=row.source.auth_header_hint if row.source.auth_header_encrypted else None,
        feed_test=tested,
        ledger=ledger,
        position=schedules.describe_position(row.schedule, row.source, ledger),
    )


async def _delete_page(
    request: Request[Any, Any, Any], db: Db, row: schedules.ScheduleRow, problem: str = "", status: int = 200
) -> Template:
    return render(
        request,
        "schedules/delete.html",
        status,
        row=row,
        preview=await schedules.deletion_preview(db, row.schedule),
        retries=[r for r in await schedules.pending_retries(db, row.schedule) if not r.given_up],
        problem=problem,
    )
