"""Notifications: the admin's webhook for runs that fail or end with too many errors."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.response import Template

from models import Role
from services import audit, notifications
from web.deps import Db, SettingsDep
from web.security import current_user
from web.templating import render

ADMIN = {"role": Role.ADMIN}


class NotificationsController(Controller):
    path = "/notifications"
    include_in_schema = False

    @get("/", opt=ADMIN)
    async def index(self, request: Request[Any, Any, Any], db: Db) -> Template:
        config = await notifications.get_settings(db)
        return render(request, "notifications/index.html", area="overview", config=config)

    @post("/", opt=ADMIN)
    async def save(self, request: Request[Any, Any, Any], db: Db, settings: SettingsDep) -> Template:
        form = await request.form()
        config = await notifications.get_settings(db)
        try:
            threshold = float(form.get("error_threshold_pct") or 0)
            config = await notifications.save(
                db,
                url=str(form.get("webhook_url") or ""),
                enabled=form.get("enabled") == "1",
                threshold=threshold,
                user=current_user(request),
                allow=settings.outbound_allow_list,
            )
        except (notifications.WebhookError, ValueError) as exc:
            message = (
                str(exc) if isinstance(exc, notifications.WebhookError) else "The threshold is a number."
            )
            return render(
                request, "notifications/index.html", 400, area="overview", config=config, error=message
            )
        audit.record(
            db,
            request,
            "notifications.save",
            target=config.webhook_url,
            enabled=config.enabled,
            threshold=config.error_threshold_pct,
        )
        return render(request, "notifications/index.html", area="overview", config=config, saved=True)
