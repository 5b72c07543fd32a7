"""The web app factory: reading this file tells you the whole web app."""

from __future__ import annotations

import gc
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import structlog
from arq.connections import ArqRedis
from litestar import Litestar
from litestar.config.csrf import CSRFConfig
from litestar.middleware.session.client_side import CookieBackendConfig
from litestar.plugins.flash import FlashConfig, FlashPlugin
from litestar.plugins.htmx import HTMXPlugin
from litestar.static_files import create_static_files_router
from sqlalchemy import text

from config.logging import configure_logging
from config.settings import Settings, get_settings
from models.db import make_engine, make_sessionmaker
from web.controllers.audit import AuditController
from web.controllers.auth import AuthController
from web.controllers.connection import ConnectionController
from web.controllers.consent import ConsentController
from web.controllers.health import HealthController
from web.controllers.ingest import IngestController
from web.controllers.lists import ListsController
from web.controllers.mappings import MappingsController
from web.controllers.metrics import MetricsController
from web.controllers.notifications import NotificationsController
from web.controllers.onsite import OnsiteController
from web.controllers.overview import OverviewController
from web.controllers.runs import RunsController
from web.controllers.schedules import SchedulesController
from web.controllers.uploads import UploadsController
from web.controllers.users import UsersController
from web.deps import DEPENDENCIES
from web.errors import EXCEPTION_HANDLERS
from web.middleware import AuthMiddleware, ClientAddressMiddleware, OriginCheckMiddleware, security_headers
from web.security import role_guard
from web.templating import template_config

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
log = structlog.get_logger(__name__)


class StartupError(RuntimeError):
    """A dependency the console cannot run without is missing; the message says what to do."""


def _derive(secret: str, purpose: str) -> bytes:
    return hashlib.sha256(f"klaviyo-sync-console/{purpose}:{secret}".encode()).digest()


def create_app(settings: Settings | None = None) -> Litestar:
    """Build the Litestar app for these settings."""
    settings = settings or get_settings()
    configure_logging(settings.log_level, settings.log_json)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url)
        try:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception as exc:
            log.error(
                "database unreachable at start",
                error=str(exc).splitlines()[0][:300],
                hint="check DATABASE_URL and that the database server is running, then `make migrate`",
            )
            await engine.dispose()
            raise StartupError(f"Cannot reach the database: {exc}") from exc
        # Lazy clients: Redis being down must not stop the web app; pages say so instead.
        redis = ArqRedis.from_url(settings.redis_url, socket_connect_timeout=2)
        redis.default_queue_name = settings.queue_name
        app.state.update(
            settings=settings, engine=engine, sessionmaker=make_sessionmaker(engine), redis=redis, arq=redis
        )
        # Everything loaded so far lives as long as the process: keep it out of the collector's full
        # passes, which otherwise stall every request in flight for a few hundred ms under load.
        gc.freeze()
        try:
            yield
        finally:
            inbox = getattr(app.state, "ingest_inbox", None)
            if inbox is not None:
                await inbox.close()
            await redis.aclose()
            await engine.dispose()

    session_config = CookieBackendConfig(
        secret=_derive(settings.secret, "session"),
        key="kc_session",
        max_age=14 * 24 * 3600,
        httponly=True,
        samesite="lax",
        secure=settings.cookie_secure,
        exclude=[
            "^/static/",
            "^/healthz",
            "^/readyz",
            "^/metrics",
            "^/api/ingest/",
            "^/api/klaviyo-webhooks/",
            "^/api/consent-changes",
        ],
    )
    csrf_config = CSRFConfig(
        secret=_derive(settings.secret, "csrf").hex(),
        cookie_name="kc_csrf",
        cookie_secure=settings.cookie_secure,
        cookie_httponly=True,
        cookie_samesite="strict",
    )
    return Litestar(
        route_handlers=[
            create_static_files_router(path="/static", directories=[STATIC_DIR], opt={"public": True}),
            HealthController,
            MetricsController,
            AuthController,
            OverviewController,
            ConnectionController,
            MappingsController,
            UsersController,
            RunsController,
            UploadsController,
            ListsController,
            AuditController,
            NotificationsController,
            IngestController,
            SchedulesController,
            OnsiteController,
            ConsentController,
        ],
        lifespan=[lifespan],
        dependencies=DEPENDENCIES,
        guards=[role_guard],
        middleware=[
            # Outermost first: the Origin check sees the connection's own peer.
            OriginCheckMiddleware(settings.trusted_proxy_networks),
            ClientAddressMiddleware(settings.trusted_proxy_networks),
            session_config.middleware,
            AuthMiddleware(),
        ],
        csrf_config=csrf_config,
        plugins=[HTMXPlugin(), FlashPlugin(config=FlashConfig(template_config=template_config))],
        template_config=template_config,
        exception_handlers=EXCEPTION_HANDLERS,
        before_send=[security_headers],
        debug=False,
    )
