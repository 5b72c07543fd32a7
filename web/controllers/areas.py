"""Areas whose issues have not landed yet: each page says what will live there."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.response import Template

from web.templating import render

UPCOMING = {
    "schedules": ("Schedules", "Recurring syncs from feeds, and real-time ingest tokens."),
}


class UpcomingAreasController(Controller):
    include_in_schema = False

    @get([f"/{area}" for area in UPCOMING])
    async def page(self, request: Request[Any, Any, Any]) -> Template:
        area = request.url.path.strip("/")
        title, blurb = UPCOMING[area]
        return render(request, "areas/upcoming.html", area=area, title=title, blurb=blurb)
