"""The audit log page: every operator action, filterable."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.params import FromQuery
from litestar.response import Template

from services import audit
from web.controllers.runs import day_start, parse_day
from web.deps import Db
from web.templating import render

PAGE_SIZE = 50


class AuditController(Controller):
    path = "/audit"
    include_in_schema = False

    @get("/")
    async def index(
        self,
        request: Request[Any, Any, Any],
        db: Db,
        action: FromQuery[str | None] = None,
        username: FromQuery[str | None] = None,
        since: FromQuery[str | None] = None,
        until: FromQuery[str | None] = None,
        before: FromQuery[int | None] = None,
    ) -> Template:
        since_day, until_day = parse_day(since), parse_day(until)
        events = await audit.list_events(
            db,
            action=action,
            username=username,
            since=day_start(since_day),
            until=day_start(until_day, days=1),  # the "to" day is included
            before_id=before,
            limit=PAGE_SIZE,
        )
        more = events[-1].id if len(events) == PAGE_SIZE else None
        name = "audit/_rows.html" if request.headers.get("hx-request") == "true" else "audit/index.html"
        return render(
            request,
            name,
            area="audit",
            events=events,
            more=more,
            action=action or "",
            username=username or "",
            since=since_day.isoformat() if since_day else "",
            until=until_day.isoformat() if until_day else "",
            actions=await audit.distinct_actions(db),
        )
