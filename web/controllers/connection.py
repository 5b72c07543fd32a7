"""Connection page: the Klaviyo private key (admin only), sandbox switch, and a connection test."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.response import Template
from redis.exceptions import RedisError

from models import ConnectionStatus, Role
from models.base import utcnow
from services import accounts, audit, catalog
from services.workers import worker_health
from web.deps import ArqDep, Db, RedisDep, SettingsDep
from web.templating import render

ADMIN = {"role": Role.ADMIN}


class ConnectionController(Controller):
    path = "/connection"
    include_in_schema = False

    @get("/")
    async def index(self, request: Request[Any, Any, Any], db: Db, settings: SettingsDep) -> Template:
        account = await accounts.get_account(db)
        return render(request, "connection/index.html", account=account, settings=settings)

    @get("/status")
    async def status(
        self, request: Request[Any, Any, Any], db: Db, redis: RedisDep, settings: SettingsDep
    ) -> Template:
        account = await accounts.get_account(db)
        health = await worker_health(redis, settings.queue_name)
        return render(request, "connection/_status.html", area="connection", account=account, health=health)

    @post("/key", opt=ADMIN)
    async def save_key(self, request: Request[Any, Any, Any], db: Db, settings: SettingsDep) -> Template:
        form = await request.form()
        account = await accounts.get_account(db)
        try:
            accounts.set_private_key(
                account, settings, str(form.get("private_key", "")), str(form.get("public_key", ""))
            )
        except accounts.KeyFormatError as exc:
            return render(request, "connection/_key_form.html", 400, account=account, error=str(exc))
        await catalog.forget_unattributed(db, account)
        db.add(account)
        audit.record(db, request, "connection.key_set", target=f"key …{account.key_hint}")
        return render(request, "connection/_key_form.html", account=account, saved=True)

    @post("/sandbox", opt=ADMIN)
    async def use_sandbox(self, request: Request[Any, Any, Any], db: Db) -> Template:
        account = await accounts.get_account(db)
        accounts.use_sandbox(account)
        await catalog.forget_unattributed(db, account)
        db.add(account)
        audit.record(db, request, "connection.sandbox")
        return render(request, "connection/_key_form.html", account=account, saved=True)

    @post("/test", opt=ADMIN)
    async def test(
        self, request: Request[Any, Any, Any], db: Db, arq: ArqDep, redis: RedisDep, settings: SettingsDep
    ) -> Template:
        account = await accounts.get_account(db)
        try:
            # One test per account at a time: a double click does not queue two.
            await arq.enqueue_job(
                "check_connection", account.id, _job_id=f"{settings.queue_name}:connection-test:{account.id}"
            )
            account.status, account.status_message = ConnectionStatus.TESTING, None
        except (RedisError, OSError) as exc:
            account.status = ConnectionStatus.FAILED
            account.status_message = (
                f"Could not queue the test: Redis is unreachable ({exc}). Check REDIS_URL."
            )
        account.tested_at = utcnow()
        db.add(account)
        audit.record(db, request, "connection.test")
        health = await worker_health(redis, settings.queue_name)
        return render(request, "connection/_status.html", account=account, health=health)
