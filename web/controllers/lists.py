"""Lists page: synced Klaviyo lists, member counts, create/rename, membership, subscriptions,
unsubscribe (guarded against Klaviyo's global-unsubscribe trap) and suppression.

Every change is a worker job (a ListOperation) or a run; handlers record it in the audit log and
answer with the operation's status partial, which polls itself while the job is queued or running.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.response import Stream, Template
from redis.exceptions import RedisError

from models import KlaviyoList, ListOperation, ListOpStatus
from services import audit, lists, runs
from web.deps import ArqDep, Db, SettingsDep
from web.security import current_user
from web.templating import redirect, render

CHANNELS = ("email", "sms")


def _problem(request: Request[Any, Any, Any], message: str, status: int = 400) -> Template:
    return render(request, "errors/_message.html", status, title="Cannot do that", message=message)


# Operations whose end changes the lists table: the card's last answer tells the page to redraw it.
_TABLE_CHANGES = ("create", "rename", "sync", "count")


async def _op_partial(request: Request[Any, Any, Any], db: Db, op: ListOperation) -> Template:
    """An operation's status card with its first rows (it polls itself while queued or running)."""
    page = render(request, "lists/_op.html", op=op, kinds=lists.KINDS, rows_of=await lists.rows_of(db, [op]))
    if op.status == ListOpStatus.COMPLETED and op.kind in _TABLE_CHANGES:
        page.headers["HX-Trigger"] = "lists-changed"
    return page


async def _list(db: Db, list_id: str) -> KlaviyoList:
    klist = await lists.get_list(db, list_id)
    if klist is None:
        raise NotFoundException(f"No list {list_id} here; sync the lists first.")
    return klist


def _picker_field(field: str) -> str:
    # The picker names a form field of the page it sits in: only plain names, never markup.
    return field if field.replace("_", "").isalnum() and len(field) <= 40 else "list_id"


async def _picker(
    request: Request[Any, Any, Any], db: Db, field: str, value: str, op: ListOperation | None
) -> Template:
    return render(
        request,
        "lists/_picker.html",
        picker_name=field,
        picker_value=value,
        picker_lists=await lists.all_lists(db),
        picker_none="no list",
        picker_op=op,
    )


class ListsController(Controller):
    path = "/lists"
    include_in_schema = False

    @get("/")
    async def index(self, request: Request[Any, Any, Any], db: Db) -> Template:
        uploads, mappings = await lists.run_choices(db)
        return render(
            request,
            "lists/index.html",
            lists=await lists.all_lists(db),
            sync=await lists.latest_sync(db),
            uploads=uploads,
            mappings=mappings,
            opt_in=lists.OPT_IN,
        )

    @post("/picker/create")
    async def picker_create(
        self, request: Request[Any, Any, Any], db: Db, arq: ArqDep, settings: SettingsDep
    ) -> Template:
        """Create a list from a picker inside another form; the picker polls until it exists."""
        form = await request.form()
        field = _picker_field(str(form.get("picker_field", "")))
        name = str(form.get("new_list_name", "")).strip()
        if not name or len(name) > 255:
            return _problem(request, "A list needs a name of at most 255 characters.")
        op = await self._start(request, db, arq, settings, "create", params={"name": name})
        return await _picker(request, db, field, "", op)

    @get("/picker/ops/{op_id:int}")
    async def picker_op(
        self, request: Request[Any, Any, Any], db: Db, op_id: FromPath[int], field: str = "list_id"
    ) -> Template:
        op = await db.get(ListOperation, op_id)
        if op is None:
            raise NotFoundException()
        return await _picker(request, db, _picker_field(field), op.list_id or "", op)

    @get("/table")
    async def table(self, request: Request[Any, Any, Any], db: Db) -> Template:
        return render(request, "lists/_table.html", lists=await lists.all_lists(db), opt_in=lists.OPT_IN)

    @post("/sync")
    async def sync(
        self, request: Request[Any, Any, Any], db: Db, arq: ArqDep, settings: SettingsDep
    ) -> Template:
        op = await lists.active_sync(db)
        if op is None:
            op = await self._start(request, db, arq, settings, "sync")
        return render(request, "lists/_sync.html", sync=op)

    @get("/sync/status")
    async def sync_status(self, request: Request[Any, Any, Any], db: Db) -> Template:
        op = await lists.latest_sync(db)
        page = render(request, "lists/_sync.html", sync=op)
        if op is not None and op.status == ListOpStatus.COMPLETED:
            page.headers["HX-Trigger"] = "lists-changed"  # the table redraws with what the sync found
        return page

    @post("/create")
    async def create(
        self, request: Request[Any, Any, Any], db: Db, arq: ArqDep, settings: SettingsDep
    ) -> Template:
        form = await request.form()
        name = str(form.get("name", "")).strip()
        opt_in = str(form.get("opt_in_process", "")) or None
        if not name or len(name) > 255:
            return _problem(request, "A list needs a name of at most 255 characters.")
        if opt_in is not None and opt_in not in lists.OPT_IN:
            return _problem(request, "Choose single or double opt-in.")
        op = await self._start(
            request, db, arq, settings, "create", params={"name": name, "opt_in_process": opt_in}
        )
        return await _op_partial(request, db, op)

    @post("/suppress")
    async def suppress(
        self, request: Request[Any, Any, Any], db: Db, arq: ArqDep, settings: SettingsDep
    ) -> Template:
        form = await request.form()
        if form.get("confirm") != "1":
            return _problem(request, "Suppression stops all email to these people: tick the box to confirm.")
        return await self._contacts_op(request, db, arq, settings, "suppress", None, form)

    @post("/runs")
    async def start_run(
        self, request: Request[Any, Any, Any], db: Db, arq: ArqDep, settings: SettingsDep
    ) -> Any:
        form = await request.form()
        list_id = str(form.get("list_id", "")).strip()
        try:
            run = await lists.start_list_run(
                db,
                klist=await lists.get_list(db, list_id) if list_id else None,
                action=str(form.get("action", "")),
                upload_id=int(form.get("upload_id") or 0),
                mapping_id=int(form.get("mapping_id") or 0),
                custom_source=str(form.get("custom_source", "")),
                dry_run=form.get("dry_run") == "1",
                user=current_user(request),
            )
        except (lists.ListError, ValueError) as exc:
            return _problem(request, str(exc))
        audit.record(
            db,
            request,
            f"list.run.{form.get('action')}",
            target=f"run #{run.id}",
            list=run.options.get("list_id"),  # the list the requests go to, the mapping's included
        )
        await db.commit()
        await runs.enqueue(arq, settings.queue_name, run, "start")
        return redirect(request, f"/runs/{run.id}")

    @get("/ops/{op_id:int}")
    async def operation(self, request: Request[Any, Any, Any], db: Db, op_id: FromPath[int]) -> Template:
        op = await db.get(ListOperation, op_id)
        if op is None:
            raise NotFoundException()
        return await _op_partial(request, db, op)

    @get("/ops/{op_id:int}/rows.csv")
    async def rows_csv(self, db: Db, state: State, op_id: FromPath[int]) -> Stream:
        """Every row of an operation with its outcome, streamed."""
        if await db.get(ListOperation, op_id) is None:
            raise NotFoundException()
        return Stream(
            lists.rows_csv(state.sessionmaker, op_id),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="list-operation-{op_id}.csv"'},
        )

    @post("/ops/{op_id:int}/confirm")
    async def confirm(
        self,
        request: Request[Any, Any, Any],
        db: Db,
        arq: ArqDep,
        settings: SettingsDep,
        op_id: FromPath[int],
    ) -> Template:
        check = await db.get(ListOperation, op_id)
        if check is None:
            raise NotFoundException()
        form = await request.form()
        scope = str(form.get("scope", ""))
        if scope == "all" and check.summary.get("global") and form.get("confirm_global") != "1":
            return _problem(
                request, "Tick the box to confirm the global unsubscribe, or unsubscribe list members only."
            )
        try:
            op = await lists.confirm_unsubscribe(
                db, arq, settings.queue_name, check, scope, current_user(request)
            )
        except lists.ListError as exc:
            return _problem(request, str(exc))
        except (RedisError, OSError) as exc:
            return _problem(request, f"Could not queue the job: Redis is unreachable ({exc}).", 503)
        audit.record(
            db,
            request,
            "list.unsubscribe",
            target=f"list {check.list_id}",
            scope=scope,
            operation=op.id,
            check=op_id,
        )
        return await _op_partial(request, db, op)

    @post("/ops/{op_id:int}/dismiss")
    async def dismiss(self, request: Request[Any, Any, Any], db: Db, op_id: FromPath[int]) -> Template:
        """Drop a membership check without unsubscribing anyone."""
        check = await db.get(ListOperation, op_id)
        if check is None:
            raise NotFoundException()
        if check.status != ListOpStatus.NEEDS_CONFIRMATION:
            return _problem(request, "This operation is not waiting for a confirmation.")
        check.status, check.message = ListOpStatus.CANCELLED, "Dismissed: nobody was unsubscribed."
        db.add(check)
        audit.record(db, request, "list.unsubscribe_dismissed", target=f"list {check.list_id}", check=op_id)
        return await _op_partial(request, db, check)

    @get("/{list_id:str}")
    async def detail(self, request: Request[Any, Any, Any], db: Db, list_id: FromPath[str]) -> Template:
        klist = await _list(db, list_id)
        uploads, mappings = await lists.run_choices(db)
        ops = await lists.operations(db, klist.klaviyo_id)
        return render(
            request,
            "lists/detail.html",
            klist=klist,
            ops=ops,
            rows_of=await lists.rows_of(db, ops),
            uploads=uploads,
            mappings=mappings,
            opt_in=lists.OPT_IN,
            kinds=lists.KINDS,
        )

    @get("/{list_id:str}/count")
    async def count_cell(self, request: Request[Any, Any, Any], db: Db, list_id: FromPath[str]) -> Template:
        return render(request, "lists/_count.html", klist=await _list(db, list_id))

    @post("/{list_id:str}/count")
    async def count(
        self,
        request: Request[Any, Any, Any],
        db: Db,
        arq: ArqDep,
        settings: SettingsDep,
        list_id: FromPath[str],
    ) -> Template:
        klist = await _list(db, list_id)
        op = await self._start(request, db, arq, settings, "count", list_id=klist.klaviyo_id)
        return render(request, "lists/_count.html", klist=klist, op=op)

    @post("/{list_id:str}/rename")
    async def rename(
        self,
        request: Request[Any, Any, Any],
        db: Db,
        arq: ArqDep,
        settings: SettingsDep,
        list_id: FromPath[str],
    ) -> Template:
        klist = await _list(db, list_id)
        name = str((await request.form()).get("name", "")).strip()
        if not name or len(name) > 255:
            return _problem(request, "A list needs a name of at most 255 characters.")
        op = await self._start(
            request,
            db,
            arq,
            settings,
            "rename",
            list_id=klist.klaviyo_id,
            params={"name": name, "was": klist.name},
        )
        return await _op_partial(request, db, op)

    @post("/{list_id:str}/members")
    async def members(
        self,
        request: Request[Any, Any, Any],
        db: Db,
        arq: ArqDep,
        settings: SettingsDep,
        list_id: FromPath[str],
    ) -> Template:
        klist = await _list(db, list_id)
        form = await request.form()
        action = str(form.get("action", ""))
        if action not in ("add", "remove"):
            return _problem(request, "Choose add or remove.")
        return await self._contacts_op(request, db, arq, settings, action, klist.klaviyo_id, form)

    @post("/{list_id:str}/unsubscribe")
    async def unsubscribe(
        self,
        request: Request[Any, Any, Any],
        db: Db,
        arq: ArqDep,
        settings: SettingsDep,
        list_id: FromPath[str],
    ) -> Template:
        klist = await _list(db, list_id)
        form = await request.form()
        channels = [c for c in CHANNELS if form.get(f"channel_{c}") == "1"]
        if not channels:
            return _problem(request, "Choose email, SMS or both to unsubscribe from.")
        upload_id = int(form.get("upload_id") or 0)
        if upload_id:
            # From an upload's column: the worker reads the file and checks every row.
            params = {"upload_id": upload_id, "column": str(form.get("column", "")), "channels": channels}
            params["region"] = str(form.get("region") or "US")
            op = await self._start(
                request, db, arq, settings, "unsubscribe_check", list_id=klist.klaviyo_id, params=params
            )
            return await _op_partial(request, db, op)
        return await self._contacts_op(
            request, db, arq, settings, "unsubscribe_check", klist.klaviyo_id, form, channels=channels
        )

    # -- helpers ------------------------------------------------------------------------------

    async def _contacts_op(
        self,
        request: Request[Any, Any, Any],
        db: Db,
        arq: ArqDep,
        settings: SettingsDep,
        kind: str,
        list_id: str | None,
        form: Any,
        **extra: Any,
    ) -> Template:
        try:
            contacts = lists.parse_contacts(
                str(form.get("contacts", "")), str(form.get("region", "") or "US")
            )
        except lists.ListError as exc:
            return _problem(request, str(exc))
        if not contacts:
            return _problem(request, "Enter at least one email address or phone number.")
        op = await self._start(
            request, db, arq, settings, kind, list_id=list_id, params=extra, contacts=contacts
        )
        return await _op_partial(request, db, op)

    async def _start(
        self,
        request: Request[Any, Any, Any],
        db: Db,
        arq: ArqDep,
        settings: SettingsDep,
        kind: str,
        *,
        list_id: str | None = None,
        params: dict[str, Any] | None = None,
        contacts: list[lists.Contact] | None = None,
    ) -> ListOperation:
        audit.record(
            db,
            request,
            f"list.{kind}",
            target=f"list {list_id}" if list_id else None,
            user=None,  # the request's user; named so the parameters below land in the detail
            **{k: v for k, v in (params or {}).items() if isinstance(v, str | int)},
            rows=len(contacts or []),
        )
        return await lists.start_operation(
            db,
            arq,
            settings.queue_name,
            kind,
            user=current_user(request),
            list_id=list_id,
            params=params,
            contacts=contacts,
        )
