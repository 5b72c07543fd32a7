"""Schedules page: feed sources synced on a cron expression or an interval; run now, enable, disable.

Ticks run in the worker (``run_schedule``); these handlers only store schedules and queue ticks.
"""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.response import Template
from sqlmodel import col, select

from models import Mapping
from services import audit, schedules
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
        return render(request, "schedules/new.html", mappings=await _mappings(db), form={}, problems={})

    @post("/")
    async def create(self, request: Request[Any, Any, Any], db: Db, settings: SettingsDep) -> Any:
        raw = dict(await request.form())
        form = schedules.ScheduleForm.from_form(raw)
        try:
            schedule = await schedules.create_schedule(db, settings, form, current_user(request))
        except schedules.ScheduleError:
            raw.pop("auth_header_value", None)  # a secret is never rendered back
            problems = form.problems() or {"mapping_id": f"Mapping #{form.mapping_id} does not exist."}
            return render(
                request, "schedules/new.html", 400, mappings=await _mappings(db), form=raw, problems=problems
            )
        audit.record(db, request, "schedule.create", target=f"schedule #{schedule.id}", url=form.url)
        await db.commit()
        return Response(content="", status_code=303, headers={"Location": f"/schedules/{schedule.id}"})

    @get("/{schedule_id:int}")
    async def detail(self, request: Request[Any, Any, Any], db: Db, schedule_id: FromPath[int]) -> Template:
        row = await _found(db, schedule_id)
        return render(
            request,
            "schedules/detail.html",
            row=row,
            timing=schedules.describe_timing(row.schedule),
            upcoming=schedules.upcoming(row.schedule) if row.schedule.enabled else [],
            ticks=await schedules.recent_ticks(db, schedule_id),
            retries=await schedules.pending_retries(db, row.schedule),
        )

    @get("/{schedule_id:int}/ticks")
    async def ticks(self, request: Request[Any, Any, Any], db: Db, schedule_id: FromPath[int]) -> Template:
        row = await _found(db, schedule_id)
        return render(
            request,
            "schedules/_ticks.html",
            row=row,
            ticks=await schedules.recent_ticks(db, schedule_id),
            retries=await schedules.pending_retries(db, row.schedule),
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
        return render(
            request,
            "schedules/_ticks.html",
            row=row,
            ticks=await schedules.recent_ticks(db, schedule_id),
            retries=await schedules.pending_retries(db, row.schedule),
            queued=True,
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
