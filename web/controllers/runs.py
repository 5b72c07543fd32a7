"""Runs: start (from an upload and a mapping), watch live, pause, resume, cancel, retry failed rows."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from arq.connections import ArqRedis
from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, FromQuery
from litestar.plugins.flash import flash
from litestar.response import Stream, Template
from redis.exceptions import RedisError
from sqlmodel.ext.asyncio.session import AsyncSession

from models import Mapping, MappingVersion, Schedule, SyncRun, Upload, User
from services import audit, catalog, inspector, run_routes, runs, send_check, verification
from services.error_export import error_csv
from web.deps import ArqDep, Db, SettingsDep
from web.security import current_user
from web.templating import redirect, render

PAGE_SIZE = 50
BATCH_PAGE = 20


def parse_day(value: str | None) -> date | None:
    """A date from a filter form (YYYY-MM-DD); empty or malformed means no filter."""
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


def day_start(value: date | None, days: int = 0) -> datetime | None:
    """Midnight UTC of a filter's date (plus ``days``)."""
    return datetime.combine(value, time(), tzinfo=UTC) + timedelta(days=days) if value else None


async def _load(db: AsyncSession, run_id: int) -> SyncRun:
    run = await db.get(SyncRun, run_id)
    if run is None:
        raise NotFoundException()
    return run


async def _queue(request: Request[Any, Any, Any], arq: ArqRedis, queue_name: str, run: SyncRun) -> None:
    """Queue a run just created. With Redis away the run stays queued in the database, where the
    reconciler finds it once Redis is back: say so on its page rather than fail the request (a
    retried request would create a second run)."""
    try:
        await runs.enqueue(arq, queue_name, run, "start")
    except (RedisError, OSError):
        flash(
            request,
            f"Run #{run.id} is saved, but the job queue (Redis) is unreachable: it will start by itself "
            "when the queue is back. There is no need to start it again.",
            category="warning",
        )


class RunsController(Controller):
    path = "/runs"
    include_in_schema = False

    @get("/")
    async def index(
        self,
        request: Request[Any, Any, Any],
        db: Db,
        status: FromQuery[str | None] = None,
        kind: FromQuery[str | None] = None,
        source: FromQuery[str | None] = None,
        since: FromQuery[str | None] = None,
        until: FromQuery[str | None] = None,
        before: FromQuery[int | None] = None,
    ) -> Template:
        since_day, until_day = parse_day(since), parse_day(until)
        page = await runs.list_runs(
            db,
            status=status or None,
            kind=kind or None,
            source=source or None,
            since=day_start(since_day),
            until=day_start(until_day, days=1),  # the whole "until" day is included
            before_id=before,
            limit=PAGE_SIZE,
        )
        name = "runs/_rows.html" if request.headers.get("hx-request") == "true" else "runs/index.html"
        filters = {
            "status": status or "",
            "kind": kind or "",
            "source": source or "",
            "since": since_day.isoformat() if since_day else "",
            "until": until_day.isoformat() if until_day else "",
        }
        return render(
            request,
            name,
            area="runs",
            runs=page.runs,
            names=await runs.run_names(db, page.runs),
            more=page.next_before,
            scanned_to=page.scanned_to,
            progress=runs.progress,
            f=filters,
            status_code=200,  # named so the filters below land in the context
            **filters,
        )

    @post("/")
    async def start(self, request: Request[Any, Any, Any], db: Db, arq: ArqDep, settings: SettingsDep) -> Any:
        form = await request.form()
        try:
            if run_routes.is_route_choice(form.get("mapping_id")):
                run = await run_routes.start_routed_run(
                    db,
                    upload_id=int(form.get("upload_id") or 0),
                    routing=await run_routes.resolve_route_set(
                        db, str(form.get("mapping_id")), current_user(request)
                    ),
                    dry_run=form.get("dry_run") == "1",
                    backfill=form.get("backfill") == "1",
                    user=current_user(request),
                )
            else:
                run = await runs.create_run(
                    db,
                    upload_id=int(form.get("upload_id") or 0),
                    mapping_id=int(form.get("mapping_id") or 0),
                    dry_run=form.get("dry_run") == "1",
                    backfill=form.get("backfill") == "1",
                    user=current_user(request),
                    list_id=form.get("list_id") or None,
                    catalog_sync=form.get("catalog_mode", "sync") == "sync",
                    delete_missing=form.get("delete_missing") == "1",
                )
        except (runs.RunError, ValueError) as exc:
            return render(
                request, "errors/_message.html", 400, title="Cannot start the run", message=str(exc)
            )
        # The list the requests go to (chosen, or the mapping's own), when the run has one.
        to_list = {"list": run.options["list_id"]} if run.options.get("list_id") else {}
        audit.record(
            db,
            request,
            "run.start",
            target=f"run #{run.id}",
            dry_run=run.dry_run,
            upload=run.upload_id,
            **to_list,
        )
        await db.commit()
        await _queue(request, arq, settings.queue_name, run)
        return redirect(request, f"/runs/{run.id}")

    @post("/confirm")
    async def confirm_send(self, request: Request[Any, Any, Any], db: Db) -> Template:
        """The send confirmation as a page element: rows, events, and an earlier send of the file."""
        form = await request.form()
        upload_id, mapping_id = str(form.get("upload_id") or ""), str(form.get("mapping_id") or "")
        routed = mapping_id.startswith("route:")  # each record through its event's mapping
        found = (
            await send_check.check(db, int(upload_id), None if routed else int(mapping_id))
            if upload_id.isdigit() and (mapping_id.isdigit() or routed)
            else None
        )
        if found is None:
            return render(
                request,
                "errors/_message.html",
                400,
                title="Cannot send",
                message="Choose an upload and a mapping that still exist.",
            )
        return render(request, "runs/_confirm_send.html", area="runs", check=found)

    @get("/confirm/cancel")
    async def cancel_confirm(self) -> str:
        """Cancel on the confirmation: it goes away, nothing is sent."""
        return ""

    @get("/{run_id:int}")
    async def detail(self, request: Request[Any, Any, Any], db: Db, run_id: FromPath[int]) -> Template:
        run = await _load(db, run_id)
        version = await db.get(MappingVersion, run.mapping_version_id) if run.mapping_version_id else None
        mapping = await db.get(Mapping, version.mapping_id) if version else None
        upload = await db.get(Upload, run.upload_id) if run.upload_id else None
        starter = await db.get(User, run.created_by) if run.created_by else None
        schedule_id = run.summary.get("schedule_id")
        feed_schedule = await db.get(Schedule, int(schedule_id)) if isinstance(schedule_id, int) else None
        return render(
            request,
            "runs/detail.html",
            area="runs",
            run=run,
            p=runs.progress(run),
            version=version,
            mapping=mapping,
            upload=upload,
            starter=starter,
            feed_schedule=feed_schedule,
            groups=await runs.errors_by_rule(db, run),
            batches=await runs.batch_page(db, run_id, limit=BATCH_PAGE),
            batch_page_size=BATCH_PAGE,
            samples=await inspector.samples(db, run_id),
            catalog=await catalog.outcome(db, run),
            why_not=verification.can_verify(run),
            stalled=verification.stalled(run),
            unrouted=await run_routes.unrouted_picks(db, run),
            event_mappings=await run_routes.event_mappings(db) if run.summary.get("unrouted") else [],
        )

    @get("/{run_id:int}/verification")
    async def verification_status(
        self, request: Request[Any, Any, Any], db: Db, run_id: FromPath[int]
    ) -> Template:
        """What the last check of Klaviyo found; polled while a check runs."""
        run = await _load(db, run_id)
        return render(
            request,
            "runs/_verification.html",
            area="runs",
            run=run,
            why_not=verification.can_verify(run),
            stalled=verification.stalled(run),
        )

    @post("/{run_id:int}/verify")
    async def verify(
        self,
        request: Request[Any, Any, Any],
        db: Db,
        arq: ArqDep,
        settings: SettingsDep,
        run_id: FromPath[int],
    ) -> Template:
        """Check now what Klaviyo holds against what the run sent (a worker job; the partial polls)."""
        run = await _load(db, run_id)
        try:
            await verification.request_check(db, arq, settings.queue_name, run)
        except verification.VerifyError as exc:
            return render(request, "runs/_verification.html", 409, area="runs", run=run, why_not=str(exc))
        except RedisError as exc:
            message = f"The check could not be queued: Redis is unreachable ({exc})."
            return render(request, "runs/_verification.html", 503, area="runs", run=run, error=message)
        audit.record(db, request, "run.verify", target=f"run #{run.id}")
        await db.commit()
        return render(request, "runs/_verification.html", area="runs", run=run)

    @post("/{run_id:int}/unrouted")
    async def route_unrouted(
        self,
        request: Request[Any, Any, Any],
        db: Db,
        arq: ArqDep,
        settings: SettingsDep,
        run_id: FromPath[int],
    ) -> Any:
        """A run over the records this run kept unrouted, each through the mapping chosen for its event."""
        run = await _load(db, run_id)
        form = await request.form()
        names, chosen = form.getall("event", []), form.getall("mapping_id", [])
        try:
            picks = {str(name): int(mapping or 0) for name, mapping in zip(names, chosen, strict=False)}
            routed = await run_routes.route_unrouted(
                db, run, picks, current_user(request), dry_run=form.get("dry_run") == "1"
            )
        except (runs.RunError, ValueError) as exc:
            return render(
                request, "errors/_message.html", 400, title="Cannot route these records", message=str(exc)
            )
        audit.record(db, request, "run.route_unrouted", target=f"run #{routed.id}", parent=run.id)
        await db.commit()
        await _queue(request, arq, settings.queue_name, routed)
        return redirect(request, f"/runs/{routed.id}")

    @get("/{run_id:int}/catalog")
    async def catalog_outcome(
        self, request: Request[Any, Any, Any], db: Db, run_id: FromPath[int]
    ) -> Template:
        """A catalog sync's counts (created, updated, unchanged, deleted), polled while it runs."""
        run = await _load(db, run_id)
        return render(
            request, "runs/_catalog.html", area="runs", run=run, catalog=await catalog.outcome(db, run)
        )

    @get("/{run_id:int}/batches")
    async def batches(
        self, request: Request[Any, Any, Any], db: Db, run_id: FromPath[int], before: FromQuery[int]
    ) -> Template:
        """Older batches of the timeline, as rows appended below the ones shown."""
        run = await _load(db, run_id)
        page = await runs.batch_page(db, run_id, before_seq=before, limit=BATCH_PAGE)
        return render(
            request, "runs/_batches.html", area="runs", run=run, batches=page, batch_page_size=BATCH_PAGE
        )

    @get("/{run_id:int}/requests/{sample_id:int}")
    async def request_sample(
        self, request: Request[Any, Any, Any], db: Db, run_id: FromPath[int], sample_id: FromPath[int]
    ) -> Template:
        """One sampled request and its answer (key redacted), shown inline on the run page."""
        sample = await inspector.get_sample(db, run_id, sample_id)
        if sample is None:
            raise NotFoundException()
        return render(request, "runs/_request.html", area="runs", s=sample)

    @get("/{run_id:int}/status")
    async def status(self, request: Request[Any, Any, Any], db: Db, run_id: FromPath[int]) -> Template:
        run = await _load(db, run_id)
        response = render(request, "runs/_status.html", area="runs", run=run, p=runs.progress(run))
        if run.status.finished and request.headers.get("hx-request") == "true":
            # The poll that sees the end reloads the page once, so the errors and batches are final too.
            response.headers["HX-Refresh"] = "true"
        return response

    @post("/{run_id:int}/{action:str}")
    async def act(
        self,
        request: Request[Any, Any, Any],
        db: Db,
        arq: ArqDep,
        settings: SettingsDep,
        run_id: FromPath[int],
        action: FromPath[str],
    ) -> Any:
        run = await _load(db, run_id)
        moves = {"pause": runs.request_pause, "cancel": runs.request_cancel, "resume": runs.resume}
        try:
            if action == "retry":
                retry = await runs.retry_failed(db, run, current_user(request))
                await run_routes.repin(db, retry)
                audit.record(db, request, "run.retry", target=f"run #{retry.id}", parent=run.id)
                await db.commit()
                await _queue(request, arq, settings.queue_name, retry)
                return redirect(request, f"/runs/{retry.id}")
            if action not in moves:
                raise NotFoundException()
            await moves[action](db, run)
            audit.record(db, request, f"run.{action}", target=f"run #{run.id}")
            await db.commit()
            if action == "resume":
                await runs.enqueue(arq, settings.queue_name, run, "resume")
        except runs.RunError as exc:
            return render(
                request, "runs/_status.html", 409, area="runs", run=run, p=runs.progress(run), error=str(exc)
            )
        except RedisError as exc:
            return render(
                request,
                "runs/_status.html",
                503,
                area="runs",
                run=run,
                p=runs.progress(run),
                error=f"Saved, but the job could not be queued: Redis is unreachable ({exc}).",
            )
        return render(request, "runs/_status.html", area="runs", run=run, p=runs.progress(run))

    @get("/{run_id:int}/errors.csv")
    async def errors(self, db: Db, state: State, run_id: FromPath[int]) -> Stream:
        await _load(db, run_id)
        return Stream(
            error_csv(state.sessionmaker, run_id),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="run-{run_id}-errors.csv"'},
        )
