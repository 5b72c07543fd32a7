"""Template engine setup and the helpers handlers answer with: render a page or partial, redirect."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from litestar import MediaType, Request, Response
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Template
from litestar.template.config import TemplateConfig

from web.security import current_user

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "templates"

NAV = [
    ("overview", "Overview", "/"),
    ("connection", "Connection", "/connection"),
    ("mappings", "Mappings", "/mappings"),
    ("uploads", "Uploads", "/uploads"),
    ("runs", "Runs", "/runs"),
    ("lists", "Lists", "/lists"),
    ("schedules", "Schedules", "/schedules"),
    ("onsite", "Onsite tracking", "/onsite"),
    ("ingest", "Real-time ingest", "/ingest"),
    ("consent", "Consent", "/consent"),
    ("notifications", "Notifications", "/notifications"),
    ("users", "Users", "/users"),
    ("audit", "Audit log", "/audit"),
]
# Areas only an admin may open: the navigation leaves them out for everyone else.
ADMIN_ONLY = frozenset({"users", "notifications"})


def ago(value: datetime | None) -> str:
    """'3 min ago' style relative time."""
    if value is None:
        return "never"
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    seconds = int((datetime.now(UTC) - value).total_seconds())
    if seconds < 5:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def when(value: datetime | str | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):  # stored in JSON documents as ISO 8601
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return value
        value = parsed
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def number(value: int | float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def plural(count: int | None, noun: str, nouns: str | None = None) -> str:
    """'1 request', '2,000 requests': the count as ``number`` shows it, with the noun agreeing."""
    return f"{number(count)} {noun if count == 1 else (nouns or noun + 's')}"


def _configure(engine: JinjaTemplateEngine) -> None:
    engine.engine.filters.update(ago=ago, when=when, number=number, plural=plural)
    engine.engine.globals.update(NAV=NAV, ADMIN_ONLY=ADMIN_ONLY)


template_config = TemplateConfig(
    directory=TEMPLATE_DIR, engine=JinjaTemplateEngine, engine_callback=_configure
)


def render(request: Request[Any, Any, Any], name: str, status_code: int = 200, **context: Any) -> Template:
    """Render a template with the user and the active area filled in."""
    context.setdefault("user", current_user(request))
    context.setdefault("area", name.split("/", 1)[0])
    return Template(template_name=name, context=context, status_code=status_code, media_type=MediaType.HTML)


def redirect(request: Request[Any, Any, Any], url: str) -> Response[Any]:
    """Send the browser to ``url`` after a form post: htmx follows HX-Redirect with a full page load,
    a plain form follows the 303."""
    if request.headers.get("hx-request") == "true":
        return Response(content="", headers={"HX-Redirect": url})
    return Redirect(url, status_code=303)
