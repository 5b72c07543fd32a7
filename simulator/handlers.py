"""Endpoint handlers. Each runs under the state lock and either returns a Response or raises Problem.

Every handler validates the whole request before it stores anything, so a 4xx never leaves a
partial write behind.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from simulator.aggregates import event_dropped
from simulator.common import Request, Response, paginate
from simulator.faults import roll
from simulator.state import (
    AccountState,
    Job,
    KList,
    Profile,
    finish_job,
    is_example,
    new_id,
    new_list_id,
    now_iso,
)
from simulator.validation import (
    MAX_EVENT_PROPERTIES,
    Problem,
    email_ok,
    error,
    event_time_problem,
    identifier_problems,
    invalid,
    long_string_pointer,
    may_hold_long_string,
    parse_time,
    phone_ok,
    validate_shape,
)

CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
PROFILE_FIELDS = (
    "email",
    "phone_number",
    "external_id",
    "first_name",
    "last_name",
    "organization",
    "locale",
    "title",
    "image",
)
OPT_IN_PROCESSES = ("single_opt_in", "double_opt_in")


def _big(req: Request) -> bool:
    """Whether the body might hold a string over 100 KB (then the handler walks the document)."""
    if req.maybe_long_string is None:
        req.maybe_long_string = may_hold_long_string(req.raw)
    return req.maybe_long_string


def _body(req: Request) -> Any:
    if req.body is None:
        raise Problem(400, [invalid("A JSON request body is required", "")])
    return req.body


def _acct(req: Request) -> AccountState:
    assert req.acct is not None
    return req.acct


def _too_many(count: int, limit: int, pointer: str, what: str) -> None:
    if count > limit:
        raise Problem(400, [invalid(f"At most {limit} {what} per request; got {count}", pointer)])


def _not_found(what: str, ident: str, pointer: str | None = None) -> Problem:
    return Problem(404, [error(404, "not_found", f"{what} {ident!r} does not exist", pointer)])


# --- accounts ---------------------------------------------------------------------------------


def get_accounts(req: Request) -> Response:
    """GET /api/accounts: the account the key belongs to."""
    account = req.account
    assert account is not None
    resource = {
        "type": "account",
        "id": account.id,
        "attributes": {
            "test_account": False,
            "contact_information": {
                "default_sender_name": account.name,
                "default_sender_email": "store@sandbox.invalid",
                "website_url": "https://sandbox.invalid",
                "organization_name": account.name,
                # StreetAddress requires "city" (get_accounts.json, klaviyo/openapi).
                "street_address": {
                    "address1": None,
                    "address2": None,
                    "city": "Sandbox",
                    "region": None,
                    "country": None,
                    "zip": None,
                },
            },
            "industry": "Retail",
            "timezone": account.timezone,
            "preferred_currency": account.currency,
            "public_api_key": account.public_key,
            "locale": "en-US",
        },
        "links": {"self": f"{req.base_url}/api/accounts/{account.id}"},
    }
    # CollectionLinks types next as a URI string: one account, so no next page and no "next".
    return Response(200, {"data": [resource], "links": {"self": f"{req.base_url}/api/accounts"}})


# --- events -----------------------------------------------------------------------------------


def _event_problems(
    acct: AccountState,
    ev: dict[str, Any],
    prof: dict[str, Any],
    ev_ptr: str,
    prof_ptr: str,
    now: datetime,
    big: bool,
) -> list[dict[str, Any]]:
    problems = []
    props = ev.get("properties") or {}
    if len(props) > MAX_EVENT_PROPERTIES:
        problems.append(
            invalid(f"An event may have at most {MAX_EVENT_PROPERTIES} properties", f"{ev_ptr}/properties")
        )
    why = event_time_problem(ev.get("time"), now)
    if why:
        problems.append(invalid(why, f"{ev_ptr}/time"))
    currency = ev.get("value_currency")
    if currency is not None and not CURRENCY_RE.match(currency):
        problems.append(invalid("value_currency must be an ISO 4217 code", f"{ev_ptr}/value_currency"))
    pattrs = prof.get("attributes") or {}
    pid = prof.get("id")
    problems.extend(identifier_problems(pattrs, pid, f"{prof_ptr}/attributes"))
    if pid and pid not in acct.profiles:
        problems.append(invalid(f"Profile {pid!r} does not exist", f"{prof_ptr}/id"))
    if big:
        for value, ptr in ((ev, ev_ptr), (prof, prof_ptr)):
            found = long_string_pointer(value, ptr)
            if found:
                problems.append(invalid("Strings may be at most 100 KB", found))
    return problems


def _metric_problems(req: Request, acct: AccountState, named: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Errors for events that would create a metric beyond the account's metric limit."""
    assert req.account is not None
    room = req.account.metric_limit - len(acct.metrics)
    new: set[str] = set()
    problems = []
    for name, ptr in named:
        if not name.strip():
            problems.append(invalid("Metric name must not be blank", ptr))
            continue
        if name in acct.metrics or name in new:
            continue
        if len(new) >= room:
            problems.append(
                invalid(
                    f"Metric {name!r} would exceed the account limit of {req.account.metric_limit} metrics",
                    ptr,
                )
            )
            continue
        new.add(name)
    return problems


def _store_event(
    req: Request,
    acct: AccountState,
    prof: dict[str, Any],
    ev: dict[str, Any],
    backfill: bool,
    source: str,
) -> None:
    assert req.state is not None
    stats = req.state.stats
    pattrs = prof.get("attributes") or {}
    if is_example(pattrs.get("email")):
        stats.dropped_example_com += 1
        return
    if event_dropped(req, ev):
        return
    profile = acct.resolve_for_event(prof.get("id"), pattrs)
    metric = ev["metric"]["data"]["attributes"]["name"]
    sent_time = ev.get("time")
    when = parse_time(sent_time) if sent_time else datetime.now(UTC)
    assert when is not None
    second = when.astimezone(UTC).replace(microsecond=0).isoformat()
    unique_id = ev.get("unique_id")
    key = (profile.id, metric, unique_id if unique_id is not None else "@" + second)
    if key in acct.event_keys:
        stats.duplicates += 1
        return
    acct.event_keys.add(key)
    if metric not in acct.metrics:
        stamp = now_iso()
        acct.metrics[metric] = {"id": new_list_id(), "name": metric, "created": stamp, "updated": stamp}
    acct.events.append(
        {
            "id": new_id(),
            "account_id": acct.account_id,
            "profile_id": profile.id,
            "profile": {"id": prof.get("id"), **pattrs},
            "metric": metric,
            "properties": ev.get("properties"),
            "time": sent_time,
            "datetime": second,
            "value": ev.get("value"),
            "value_currency": ev.get("value_currency"),
            "unique_id": unique_id,
            "backfill": backfill,
            "source": source,
            "received_at": time.time(),
        }
    )
    stats.accepted["events"] += 1


def create_event(req: Request) -> Response:
    """POST /api/events: one event, 202 with no body."""
    body = _body(req)
    validate_shape("event", body)
    acct = _acct(req)
    ev = body["data"]["attributes"]
    prof = ev["profile"]["data"]
    now = datetime.now(UTC)
    problems = _event_problems(
        acct, ev, prof, "/data/attributes", "/data/attributes/profile/data", now, _big(req)
    )
    metric = ev["metric"]["data"]["attributes"]["name"]
    problems += _metric_problems(req, acct, [(metric, "/data/attributes/metric/data/attributes/name")])
    if problems:
        raise Problem(400, problems)
    _store_event(req, acct, prof, ev, bool(ev.get("backfill")), "single")
    return Response(202)


def create_events_bulk(req: Request) -> Response:
    """POST /api/event-bulk-create-jobs: up to 1,000 events, validated whole; 202 with no body."""
    body = _body(req)
    try:
        validate_shape("events_bulk", body)
        shape_errors: list[dict[str, Any]] = []
    except Problem as problem:
        # Keep going: the data rules below still name every other bad item in the same answer.
        shape_errors = problem.errors
    acct = _acct(req)
    try:
        items = body["data"]["attributes"]["events-bulk-create"]["data"]
        total = sum(len(item["attributes"]["events"]["data"]) for item in items)
    except (KeyError, TypeError):
        raise Problem(400, shape_errors) from None
    base = "/data/attributes/events-bulk-create/data"
    _too_many(total, 1000, base, "events")
    now = datetime.now(UTC)
    big = _big(req)
    problems: list[dict[str, Any]] = []
    named: list[tuple[str, str]] = []
    for i, item in enumerate(items):
        prof_ptr = f"{base}/{i}/attributes/profile/data"
        try:
            attrs = item["attributes"]
            prof = attrs["profile"]["data"]
            for j, entry in enumerate(attrs["events"]["data"]):
                ev = entry["attributes"]
                ev_ptr = f"{base}/{i}/attributes/events/data/{j}/attributes"
                problems.extend(_event_problems(acct, ev, prof, ev_ptr, prof_ptr, now, big))
                named.append(
                    (ev["metric"]["data"]["attributes"]["name"], f"{ev_ptr}/metric/data/attributes/name")
                )
        except (KeyError, TypeError, AttributeError):
            continue  # already reported by the shape check
    if shape_errors:
        raise Problem(400, shape_errors + problems)
    problems += _metric_problems(req, acct, named)
    if problems:
        raise Problem(400, problems)
    for item in items:
        attrs = item["attributes"]
        prof = attrs["profile"]["data"]
        item_backfill = bool(attrs.get("backfill"))
        for entry in attrs["events"]["data"]:
            ev = entry["attributes"]
            _store_event(req, acct, prof, ev, item_backfill or bool(ev.get("backfill")), "bulk")
    return Response(202)


# --- profiles ---------------------------------------------------------------------------------


def profile_resource(req: Request, profile: Profile, with_subscriptions: bool = False) -> dict[str, Any]:
    """The JSON:API resource object of a profile."""
    attrs: dict[str, Any] = dict.fromkeys(PROFILE_FIELDS)
    attrs.update({"location": {}, "properties": {}})
    attrs.update(profile.attributes)
    attrs["created"] = profile.created
    attrs["updated"] = profile.updated
    if with_subscriptions:
        # The spec requires can_receive_<channel>_<kind> next to each consent.
        attrs["subscriptions"] = {
            channel: {
                kind: {f"can_receive_{channel}_{kind}": entry.get("consent") == "SUBSCRIBED", **entry}
                for kind, entry in kinds.items()
            }
            for channel, kinds in profile.subscriptions.items()
        }
    return {
        "type": "profile",
        "id": profile.id,
        "attributes": attrs,
        "links": {"self": f"{req.base_url}/api/profiles/{profile.id}"},
    }


def _duplicate(req: Request, conflict: Any) -> Problem:
    # Klaviyo's spec lists no 409 for these operations (only 4XX ClientError) and documents no meta;
    # its answers seen in practice carry meta.duplicate_profile_id. A client must cope without it:
    # config.duplicate_profile_meta=False leaves it out.
    assert req.config is not None
    meta = {"duplicate_profile_id": conflict.other_id} if req.config.duplicate_profile_meta else None
    return Problem(
        409,
        [
            error(
                409,
                "duplicate_profile",
                f"A profile already exists with one of these identifiers ({conflict.field_name}).",
                f"/data/attributes/{conflict.field_name}",
                meta=meta,
            )
        ],
    )


def _upsert_problems(req: Request, attrs: dict[str, Any], pid: Any, ptr: str) -> list[dict[str, Any]]:
    problems = identifier_problems(attrs, pid, ptr)
    if _big(req):
        found = long_string_pointer(attrs, ptr)
        if found:
            problems.append(invalid("Strings may be at most 100 KB", found))
    return problems


def import_profile(req: Request) -> Response:
    """POST /api/profile-import: create (201) or update (200) by id, email, phone or external_id."""
    body = _body(req)
    validate_shape("profile_import", body)
    assert req.state is not None
    if len(req.raw) > 100 * 1024:
        raise Problem(400, [invalid("A profile may be at most 100 KB", "/data")])
    acct = _acct(req)
    data = body["data"]
    attrs = data["attributes"]
    pid = data.get("id")
    problems = _upsert_problems(req, attrs, pid, "/data/attributes")
    if problems:
        raise Problem(400, problems)
    if is_example(attrs.get("email")):
        req.state.stats.dropped_example_com += 1
        # Accepted but never processed: answer as a create, store nothing.
        stamp = now_iso()
        ghost = Profile(new_id(), {k: v for k, v in attrs.items() if v is not None}, stamp, stamp)
        return Response(201, {"data": profile_resource(req, ghost)})
    if pid:
        profile = acct.profiles.get(pid)
        if profile is None:
            raise _not_found("Profile", pid, "/data/id")
    else:
        profile = acct.find_profile(**attrs)
    conflict = acct.conflict_for(profile.id if profile else None, attrs)
    if conflict:
        raise _duplicate(req, conflict)
    if profile is None:
        profile = acct.create_profile(attrs)
        req.state.stats.accepted["profiles_created"] += 1
        return Response(201, {"data": profile_resource(req, profile)})
    acct.update_profile(profile, attrs)
    req.state.stats.accepted["profiles_updated"] += 1
    return Response(200, {"data": profile_resource(req, profile)})


def update_profile(req: Request) -> Response:
    """PATCH /api/profiles/{id}: partial update; 409 duplicate_profile on an identifier collision."""
    body = _body(req)
    validate_shape("profile_update", body)
    assert req.state is not None
    acct = _acct(req)
    if len(req.raw) > 100 * 1024:
        raise Problem(400, [invalid("A profile may be at most 100 KB", "/data")])
    pid = req.params["id"]
    data = body["data"]
    if data["id"] != pid:
        raise Problem(409, [error(409, "conflict", "data.id does not match the URL", "/data/id")])
    profile = acct.profiles.get(pid)
    if profile is None:
        raise _not_found("Profile", pid, "/data/id")
    attrs = data.get("attributes") or {}
    problems = _upsert_problems(req, attrs, pid, "/data/attributes")
    if problems:
        raise Problem(400, problems)
    conflict = acct.conflict_for(pid, attrs)
    if conflict:
        raise _duplicate(req, conflict)
    acct.update_profile(profile, attrs)
    req.state.stats.accepted["profiles_updated"] += 1
    return Response(200, {"data": profile_resource(req, profile)})


FILTER_RE = re.compile(r"^\s*(equals|any)\(\s*(\w+)\s*,\s*(.+)\)\s*$")


def _filter_profiles(acct: AccountState, expr: str, lag: float = 0.0) -> list[Profile]:
    found = FILTER_RE.match(expr)
    if not found:
        raise Problem(400, [invalid(f"Unsupported filter {expr!r}")])
    op, name, raw = found.groups()
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise Problem(400, [invalid(f"Invalid filter value {raw!r}")]) from None
    values = value if op == "any" and isinstance(value, list) else [value]
    if name not in ("id", "email", "phone_number", "external_id"):
        raise Problem(400, [invalid(f"Filtering on {name!r} is not supported")])
    out = []
    searchable_since = time.monotonic() - lag
    for item in values:
        profile = acct.find_profile(item) if name == "id" else acct.find_profile(**{name: item})
        if profile is not None and profile not in out and profile.created_mono <= searchable_since:
            out.append(profile)
    return out


def get_profiles(req: Request) -> Response:
    """GET /api/profiles: filter=equals(email,"x") (also phone_number, external_id, id; any(...))."""
    acct = _acct(req)
    expr = req.arg("filter")
    assert req.config is not None
    lag = req.config.scaled(req.config.search_lag_seconds)
    profiles = _filter_profiles(acct, expr, lag) if expr else list(acct.profiles.values())
    page, links = paginate(req, profiles, 20, 100)
    subs = "subscriptions" in (req.arg("additional-fields[profile]") or "")
    return Response(200, {"data": [profile_resource(req, p, subs) for p in page], "links": links})


def get_profile(req: Request) -> Response:
    """GET /api/profiles/{id}."""
    profile = _acct(req).profiles.get(req.params["id"])
    if profile is None:
        raise _not_found("Profile", req.params["id"])
    subs = "subscriptions" in (req.arg("additional-fields[profile]") or "")
    return Response(200, {"data": profile_resource(req, profile, subs)})


# --- profile bulk import jobs -----------------------------------------------------------------


def _new_job(req: Request, job_type: str, total: int) -> Job:
    assert req.config is not None
    config = req.config
    return Job(
        id=new_id(),
        type=job_type,
        created=now_iso(),
        created_mono=time.monotonic(),
        total=total,
        errors=[],
        queued_for=config.scaled(config.job_queued_seconds),
        processing_for=config.scaled(config.job_processing_seconds),
        zero_counts=roll(config, config.faults.job_zero_counts_share),
        errors_hidden=roll(config, config.faults.job_errors_hidden_share),
    )


def _job_status(job: Job) -> str:
    """The job's status; a job found complete is finished here so its effects and errors show."""
    if job.done:
        return "complete"
    status = job.status(time.monotonic())
    if status == "complete":
        finish_job(job)
    return status


def _job_counts(job: Job, status: str) -> tuple[int, int, int]:
    """(total_count, completed_count, failed_count) as the job resource reports them."""
    if job.zero_counts and status == "complete":
        return 0, 0, 0
    if status != "complete":
        return job.total, 0, 0
    failed = len({e["_index"] for e in job.errors})
    return job.total, job.total - failed, failed


# Klaviyo's spec types source.pointer as a string and leaves its form open (ErrorSource in
# openapi/stable/apis/get_errors_for_bulk_import_profiles_job.json, APIJobErrorPayload in the
# catalog job reads): config.job_error_pointers lets tests try every form a client may meet.
_ITEM_POINTER = re.compile(r"^.*?/data/\d+(?=/|$)")


def _job_error_source(req: Request, source: dict[str, Any]) -> dict[str, Any]:
    assert req.config is not None
    form = req.config.job_error_pointers
    pointer = source.get("pointer")
    if form == "none" or pointer is None:
        return {}
    if form == "relative":
        return {"pointer": _ITEM_POINTER.sub("/data", pointer, count=1)}
    return {"pointer": pointer}


def profile_job_resource(req: Request, job: Job) -> dict[str, Any]:
    """The JSON:API resource of a profile bulk import job."""
    status = _job_status(job)
    total, completed, failed = _job_counts(job, status)
    return {
        "type": "profile-bulk-import-job",
        "id": job.id,
        "attributes": {
            "status": status,
            "created_at": job.created,
            "total_count": total,
            "completed_count": completed,
            "failed_count": failed,
            "completed_at": job.completed_at if status == "complete" else None,
            "expires_at": (datetime.now(UTC) + timedelta(days=7)).isoformat(timespec="seconds"),
            "started_at": job.created if status != "queued" else None,
        },
        "relationships": {"lists": {"data": [{"type": "list", "id": lid} for lid in job.list_ids]}},
        "links": {"self": f"{req.base_url}/api/profile-bulk-import-jobs/{job.id}"},
    }


def create_profile_import_job(req: Request) -> Response:
    """POST /api/profile-bulk-import-jobs: async import; bad items become import errors, not a 400."""
    body = _body(req)
    validate_shape("profile_bulk_import", body)
    assert req.state is not None
    acct = _acct(req)
    data = body["data"]
    items = data["attributes"]["profiles"]["data"]
    base = "/data/attributes/profiles/data"
    _too_many(len(items), 10_000, base, "profiles")
    if _big(req):
        for i, item in enumerate(items):
            if len(orjson.dumps(item)) > 100 * 1024:
                raise Problem(400, [invalid("A profile may be at most 100 KB", f"{base}/{i}")])
    list_refs = ((data.get("relationships") or {}).get("lists") or {}).get("data") or []
    for k, ref in enumerate(list_refs):
        if ref["id"] not in acct.lists:
            raise _not_found("List", ref["id"], f"/data/relationships/lists/data/{k}/id")
    job = _new_job(req, "profile-bulk-import-job", len(items))
    job.list_ids = [ref["id"] for ref in list_refs]
    valid: list[tuple[int, dict[str, Any]]] = []
    for i, item in enumerate(items):
        attrs = item["attributes"]
        problems = identifier_problems(attrs, item.get("id"), f"{base}/{i}/attributes")
        if problems:
            for problem in problems:
                job.errors.append({**problem, "_index": i, "original_payload": attrs})
        else:
            valid.append((i, item))
    stats = req.state.stats

    def apply() -> None:
        imported = []
        for i, item in valid:
            attrs = item["attributes"]
            if is_example(attrs.get("email")):
                stats.dropped_example_com += 1
                continue
            pid = item.get("id")
            profile = acct.profiles.get(pid) if pid else acct.find_profile(**attrs)
            if pid and profile is None:
                job.errors.append(
                    {
                        **invalid(f"Profile {pid!r} does not exist", f"{base}/{i}/id"),
                        "_index": i,
                        "original_payload": attrs,
                    }
                )
                continue
            conflict = acct.conflict_for(profile.id if profile else None, attrs)
            if conflict:
                dup = error(
                    409,
                    "duplicate_profile",
                    f"Another profile already has this {conflict.field_name}",
                    f"{base}/{i}/attributes/{conflict.field_name}",
                    meta={"duplicate_profile_id": conflict.other_id},
                )
                job.errors.append({**dup, "_index": i, "original_payload": attrs})
                continue
            if profile is None:
                profile = acct.create_profile(attrs)
                stats.accepted["profiles_created"] += 1
            else:
                acct.update_profile(profile, attrs)
                stats.accepted["profiles_updated"] += 1
            imported.append(profile.id)
        for lid in job.list_ids:
            klist = acct.lists.get(lid)
            if klist is not None:
                acct.add_members(klist, imported)

    job.apply = apply
    acct.profile_jobs[job.id] = job
    acct.pending_jobs.append(job)
    return Response(202, {"data": profile_job_resource(req, job)})


def get_profile_import_jobs(req: Request) -> Response:
    """GET /api/profile-bulk-import-jobs."""
    jobs = list(_acct(req).profile_jobs.values())
    page, links = paginate(req, jobs, 20, 100)
    return Response(200, {"data": [profile_job_resource(req, j) for j in page], "links": links})


def get_profile_import_job(req: Request) -> Response:
    """GET /api/profile-bulk-import-jobs/{id}."""
    job = _acct(req).profile_jobs.get(req.params["id"])
    if job is None:
        raise _not_found("Profile bulk import job", req.params["id"])
    return Response(200, {"data": profile_job_resource(req, job)})


def get_import_errors(req: Request) -> Response:
    """GET /api/profile-bulk-import-jobs/{id}/import-errors (paginated; filled once complete)."""
    job = _acct(req).profile_jobs.get(req.params["id"])
    if job is None:
        raise _not_found("Profile bulk import job", req.params["id"])
    errors = job.errors if _job_status(job) == "complete" and not job.errors_hidden else []
    page, links = paginate(req, errors, 20, 100)
    data = [
        {
            "type": "import-error",
            "id": e["id"],
            "attributes": {
                "code": e["code"],
                "title": e["title"],
                "detail": e["detail"],
                "source": _job_error_source(req, e["source"]),
                "original_payload": e.get("original_payload"),
            },
        }
        for e in page
    ]
    return Response(200, {"data": data, "links": links})


# --- lists ------------------------------------------------------------------------------------


def list_resource(req: Request, klist: KList, with_count: bool = False) -> dict[str, Any]:
    """The JSON:API resource of a list."""
    attrs: dict[str, Any] = {
        "name": klist.name,
        "created": klist.created,
        "updated": klist.updated,
        "opt_in_process": klist.opt_in_process,
    }
    if with_count:
        attrs["profile_count"] = len(klist.members)
    return {
        "type": "list",
        "id": klist.id,
        "attributes": attrs,
        "links": {"self": f"{req.base_url}/api/lists/{klist.id}"},
    }


def _get_list(req: Request) -> KList:
    klist = _acct(req).lists.get(req.params["id"])
    if klist is None:
        raise _not_found("List", req.params["id"])
    return klist


def get_lists(req: Request) -> Response:
    """GET /api/lists: 10 per page, links.next with page[cursor]; filter=equals(name,"x")."""
    lists = list(_acct(req).lists.values())
    expr = req.arg("filter")
    if expr:
        found = FILTER_RE.match(expr)
        if not found or found.group(2) not in ("name", "id"):
            raise Problem(400, [invalid(f"Unsupported filter {expr!r}")])
        op, name, raw = found.groups()
        value = orjson.loads(raw)
        values = value if op == "any" and isinstance(value, list) else [value]
        lists = [kl for kl in lists if getattr(kl, name) in values]
    page, links = paginate(req, lists, 10, 10)
    return Response(200, {"data": [list_resource(req, kl) for kl in page], "links": links})


def get_list(req: Request) -> Response:
    """GET /api/lists/{id} (additional-fields[list]=profile_count adds the member count)."""
    klist = _get_list(req)
    with_count = "profile_count" in (req.arg("additional-fields[list]") or "")
    return Response(200, {"data": list_resource(req, klist, with_count)})


def _check_opt_in(value: Any, pointer: str) -> None:
    if value is not None and value not in OPT_IN_PROCESSES:
        raise Problem(400, [invalid(f"opt_in_process must be one of {OPT_IN_PROCESSES}", pointer)])


def create_list(req: Request) -> Response:
    """POST /api/lists: 201; at most list_create_daily_limit per (simulated) day."""
    body = _body(req)
    validate_shape("list_create", body)
    assert req.config is not None
    acct = _acct(req)
    attrs = body["data"]["attributes"]
    if not attrs["name"].strip():
        raise Problem(400, [invalid("name must not be blank", "/data/attributes/name")])
    _check_opt_in(attrs.get("opt_in_process"), "/data/attributes/opt_in_process")
    day = req.config.scaled(86_400)
    now = time.monotonic()
    window = now // day
    if acct.list_creates[0] != window:
        acct.list_creates = [window, 0]
    limit = req.config.list_create_daily_limit
    if acct.list_creates[1] >= limit:
        from simulator.ratelimit import fmt_seconds

        retry = (window + 1) * day - now
        scaled = req.config.time_scale != 1
        raise Problem(
            429,
            [error(429, "throttled", f"Daily list creation limit reached ({limit} lists per day)")],
            [(b"retry-after", fmt_seconds(retry, scaled).encode())],
        )
    acct.list_creates[1] += 1
    stamp = now_iso()
    klist = KList(new_list_id(), attrs["name"], attrs.get("opt_in_process") or "single_opt_in", stamp, stamp)
    while klist.id in acct.lists:
        klist.id = new_list_id()
    acct.lists[klist.id] = klist
    return Response(201, {"data": list_resource(req, klist)})


def update_list(req: Request) -> Response:
    """PATCH /api/lists/{id}: rename or change opt_in_process."""
    body = _body(req)
    validate_shape("list_update", body)
    klist = _get_list(req)
    if body["data"]["id"] != klist.id:
        raise Problem(409, [error(409, "conflict", "data.id does not match the URL", "/data/id")])
    attrs = body["data"]["attributes"]
    _check_opt_in(attrs.get("opt_in_process"), "/data/attributes/opt_in_process")
    if attrs.get("name") is not None:
        klist.name = attrs["name"]
    if attrs.get("opt_in_process") is not None:
        klist.opt_in_process = attrs["opt_in_process"]
    klist.updated = now_iso()
    return Response(200, {"data": list_resource(req, klist)})


def delete_list(req: Request) -> Response:
    """DELETE /api/lists/{id}."""
    klist = _get_list(req)
    del _acct(req).lists[klist.id]
    return Response(204)


def _list_profiles(req: Request, klist: KList) -> list[Profile]:
    """A list's member profiles, optionally filtered as Klaviyo allows there: email or phone_number,
    ``equals`` or ``any`` (push_token, _kx and joined_group_at are not simulated)."""
    acct = _acct(req)
    expr = req.arg("filter")
    if not expr:
        return [acct.profiles[pid] for pid in klist.members if pid in acct.profiles]
    found = FILTER_RE.match(expr)
    if not found or found.group(2) not in ("email", "phone_number"):
        raise Problem(
            400, [invalid(f"Unsupported filter {expr!r}: a list's profiles filter on email or phone_number")]
        )
    return [p for p in _filter_profiles(acct, expr) if p.id in klist.members]


def get_list_members(req: Request) -> Response:
    """GET /api/lists/{id}/relationships/profiles: member ids, 20 per page (page[size] up to 100)."""
    page, links = paginate(req, _list_profiles(req, _get_list(req)), 20, 100)
    return Response(200, {"data": [{"type": "profile", "id": p.id} for p in page], "links": links})


def get_list_profiles(req: Request) -> Response:
    """GET /api/lists/{id}/profiles: member profiles with joined_group_at, 20 per page (up to 100)."""
    klist = _get_list(req)
    page, links = paginate(req, _list_profiles(req, klist), 20, 100)
    data = []
    for profile in page:
        resource = profile_resource(req, profile)
        resource["attributes"]["joined_group_at"] = klist.members.get(profile.id)
        data.append(resource)
    return Response(200, {"data": data, "links": links})


def _member_ids(req: Request, kind: str) -> list[str]:
    body = _body(req)
    validate_shape(kind, body)
    refs = body["data"]
    _too_many(len(refs), 1000, "/data", "profiles")
    acct = _acct(req)
    problems = [
        invalid(f"Profile {ref['id']!r} does not exist", f"/data/{i}/id")
        for i, ref in enumerate(refs)
        if ref["id"] not in acct.profiles
    ]
    if problems:
        raise Problem(400, problems)
    return [ref["id"] for ref in refs]


def add_list_members(req: Request) -> Response:
    """POST /api/lists/{id}/relationships/profiles: add up to 1,000 profiles (no consent change)."""
    klist = _get_list(req)
    ids = _member_ids(req, "list_members_add")
    _acct(req).add_members(klist, ids)
    return Response(204)


def remove_list_members(req: Request) -> Response:
    """DELETE /api/lists/{id}/relationships/profiles: remove up to 1,000 profiles."""
    klist = _get_list(req)
    for pid in _member_ids(req, "list_members_delete"):
        klist.members.pop(pid, None)
    klist.updated = now_iso()
    return Response(204)


# --- consent ----------------------------------------------------------------------------------


def _list_ref(req: Request, data: dict[str, Any]) -> KList | None:
    ref = ((data.get("relationships") or {}).get("list") or {}).get("data")
    if not ref:
        return None
    klist = _acct(req).lists.get(ref["id"])
    if klist is None:
        raise _not_found("List", ref["id"], "/data/relationships/list/data/id")
    return klist


def _contact_problems(attrs: dict[str, Any], ptr: str) -> list[dict[str, Any]]:
    problems = []
    email, phone = attrs.get("email"), attrs.get("phone_number")
    if not email and not phone:
        problems.append(invalid("email or phone_number is required", ptr))
    if email is not None and not email_ok(email):
        problems.append(invalid(f"Invalid email address: {email!r}", f"{ptr}/email"))
    if phone is not None and not phone_ok(phone):
        problems.append(invalid(f"Invalid phone number {phone!r}: must be E.164", f"{ptr}/phone_number"))
    return problems


def _find_or_create(acct: AccountState, pid: str | None, attrs: dict[str, Any]) -> Profile:
    ids = {k: attrs[k] for k in ("email", "phone_number") if attrs.get(k)}
    profile = acct.find_profile(pid, **ids) if pid else acct.find_profile(**ids)
    return profile or acct.create_profile(ids)


CHANNEL_KINDS = {
    "email": ("marketing",),
    "sms": ("marketing", "transactional"),
    "whatsapp": ("marketing", "transactional"),
}


def subscribe(req: Request) -> Response:
    """POST /api/profile-subscription-bulk-create-jobs: consent per channel; double opt-in -> pending."""
    body = _body(req)
    validate_shape("subscribe", body)
    assert req.state is not None
    acct = _acct(req)
    data = body["data"]
    attrs = data["attributes"]
    items = attrs["profiles"]["data"]
    base = "/data/attributes/profiles/data"
    _too_many(len(items), 1000, base, "profiles")
    historical = bool(attrs.get("historical_import"))
    klist = _list_ref(req, data)
    now = datetime.now(UTC)
    problems = []
    for i, item in enumerate(items):
        ptr = f"{base}/{i}/attributes"
        pattrs = item["attributes"]
        problems += _contact_problems(pattrs, ptr)
        subs = pattrs["subscriptions"]
        for channel, kinds in CHANNEL_KINDS.items():
            for kind in kinds:
                params = (subs.get(channel) or {}).get(kind)
                if not params:
                    continue
                sptr = f"{ptr}/subscriptions/{channel}/{kind}"
                if params["consent"] != "SUBSCRIBED":
                    problems.append(invalid("consent must be SUBSCRIBED", f"{sptr}/consent"))
                if channel == "email" and not pattrs.get("email"):
                    problems.append(invalid("email consent needs an email address", f"{ptr}/email"))
                if channel != "email" and not pattrs.get("phone_number"):
                    problems.append(invalid(f"{channel} consent needs a phone number", f"{ptr}/phone_number"))
                consented_at = params.get("consented_at")
                if historical:
                    when = parse_time(consented_at) if isinstance(consented_at, str) else None
                    if when is None:
                        problems.append(
                            invalid(
                                "consented_at is required when historical_import is true",
                                f"{sptr}/consented_at",
                            )
                        )
                    elif when > now:
                        problems.append(invalid("consented_at must be in the past", f"{sptr}/consented_at"))
                elif consented_at is not None:
                    problems.append(
                        invalid("consented_at is only allowed with historical_import", f"{sptr}/consented_at")
                    )
    if problems:
        raise Problem(400, problems)
    double = klist is not None and klist.opt_in_process == "double_opt_in" and not historical
    stamp = now_iso()
    for item in items:
        pattrs = item["attributes"]
        if is_example(pattrs.get("email")):
            req.state.stats.dropped_example_com += 1
            continue
        profile = _find_or_create(acct, item.get("id"), pattrs)
        subs = pattrs["subscriptions"]
        for channel, kinds in CHANNEL_KINDS.items():
            for kind in kinds:
                params = (subs.get(channel) or {}).get(kind)
                if not params:
                    continue
                current = profile.subscriptions.setdefault(channel, {}).get(kind) or {}
                if double and kind == "marketing":
                    assert klist is not None
                    # A confirmation goes out first: consent stays pending, no list membership yet.
                    if current.get("consent") != "SUBSCRIBED":
                        profile.subscriptions[channel][kind] = {"consent": "PENDING", "list_id": klist.id}
                    acct.pending_opt_ins.append(
                        {
                            "profile_id": profile.id,
                            "email": pattrs.get("email"),
                            "phone_number": pattrs.get("phone_number"),
                            "channel": channel,
                            "list_id": klist.id if klist else None,
                            "requested_at": stamp,
                        }
                    )
                    continue
                profile.subscriptions[channel][kind] = {
                    "consent": "SUBSCRIBED",
                    "consented_at": params.get("consented_at") or stamp,
                    "method": "API",
                    "custom_source": attrs.get("custom_source"),
                    "historical_import": historical,
                    "list_id": klist.id if klist else None,
                }
        if klist is not None and not double:
            klist.members.setdefault(profile.id, now_iso())
        req.state.stats.accepted["subscriptions"] += 1
    return Response(202)


def unsubscribe(req: Request) -> Response:
    """POST /api/profile-subscription-bulk-delete-jobs: a profile not in the list is unsubscribed globally."""
    body = _body(req)
    validate_shape("unsubscribe", body)
    assert req.state is not None
    acct = _acct(req)
    data = body["data"]
    items = data["attributes"]["profiles"]["data"]
    base = "/data/attributes/profiles/data"
    _too_many(len(items), 100, base, "profiles")
    klist = _list_ref(req, data)
    problems = []
    for i, item in enumerate(items):
        problems += _contact_problems(item["attributes"], f"{base}/{i}/attributes")
    if problems:
        raise Problem(400, problems)
    stamp = now_iso()
    for item in items:
        pattrs = item["attributes"]
        if is_example(pattrs.get("email")):
            req.state.stats.dropped_example_com += 1
            continue
        profile = _find_or_create(acct, None, pattrs)
        channels = [c for c, v in pattrs["subscriptions"].items() if v]
        record = {
            "profile_id": profile.id,
            "email": pattrs.get("email"),
            "phone_number": pattrs.get("phone_number"),
            "list_id": klist.id if klist else None,
            "channels": channels,
            "at": stamp,
        }
        if klist is not None and profile.id in klist.members:
            del klist.members[profile.id]
            acct.list_unsubscribes.append(record)
            req.state.stats.accepted["list_unsubscribes"] += 1
            continue
        # Not a member (or no list given): Klaviyo unsubscribes the profile from everything.
        record["reason"] = "not_in_list" if klist is not None else "no_list"
        acct.global_unsubscribes.append(record)
        for channel in channels:
            for kind in pattrs["subscriptions"][channel] or {}:
                profile.subscriptions.setdefault(channel, {})[kind] = {"consent": "UNSUBSCRIBED", "at": stamp}
        req.state.stats.accepted["global_unsubscribes"] += 1
    return Response(202)


def suppress(req: Request) -> Response:
    """POST /api/profile-suppression-bulk-create-jobs: up to 100 emails."""
    body = _body(req)
    validate_shape("suppress", body)
    assert req.state is not None
    acct = _acct(req)
    data = body["data"]
    items = ((data["attributes"].get("profiles") or {}).get("data")) or []
    base = "/data/attributes/profiles/data"
    _too_many(len(items), 100, base, "profiles")
    _list_ref(req, data)
    problems = [
        invalid(f"Invalid email address: {item['attributes']['email']!r}", f"{base}/{i}/attributes/email")
        for i, item in enumerate(items)
        if not email_ok(item["attributes"]["email"])
    ]
    if problems:
        raise Problem(400, problems)
    stamp = now_iso()
    for item in items:
        email = item["attributes"]["email"]
        if is_example(email):
            req.state.stats.dropped_example_com += 1
            continue
        profile = _find_or_create(acct, None, {"email": email})
        profile.suppressed = True
        acct.suppressions[email.lower()] = {"email": email, "profile_id": profile.id, "at": stamp}
        req.state.stats.accepted["suppressions"] += 1
    # Klaviyo answers with the job (PostBulkProfileSuppressionsCreateJobResponse in
    # openapi/stable/apis/bulk_suppress_profiles.json); it is done at once here.
    job_id = new_id()
    links = {"self": f"{req.base_url}/api/profile-suppression-bulk-create-jobs/{job_id}"}
    job = {
        "type": "profile-suppression-bulk-create-job",
        "id": job_id,
        "attributes": {
            "status": "complete",
            "created_at": stamp,
            "total_count": len(items),
            "completed_count": len(items),
            "completed_at": stamp,
            "skipped_count": 0,
        },
        "links": links,
    }
    return Response(202, {"data": job, "links": links})


# --- metrics ----------------------------------------------------------------------------------


def get_metrics(req: Request) -> Response:
    """GET /api/metrics: 200 per page."""
    metrics = list(_acct(req).metrics.values())
    page, links = paginate(req, metrics, 200)
    data = [
        {
            "type": "metric",
            "id": m["id"],
            "attributes": {
                "name": m["name"],
                "created": m["created"],
                "updated": m["updated"],
                "integration": {"object": "integration", "id": "0rG4eQ", "key": "api", "name": "API"},
            },
            "links": {"self": f"{req.base_url}/api/metrics/{m['id']}"},
        }
        for m in page
    ]
    return Response(200, {"data": data, "links": links})


# --- catalog ----------------------------------------------------------------------------------

CATALOG_JOB_PATHS = {
    "item_create": "catalog-item-bulk-create-jobs",
    "item_update": "catalog-item-bulk-update-jobs",
    "item_delete": "catalog-item-bulk-delete-jobs",
    "variant_create": "catalog-variant-bulk-create-jobs",
    "variant_update": "catalog-variant-bulk-update-jobs",
    "variant_delete": "catalog-variant-bulk-delete-jobs",
    "category_create": "catalog-category-bulk-create-jobs",
    "category_update": "catalog-category-bulk-update-jobs",
    "category_delete": "catalog-category-bulk-delete-jobs",
}
CATALOG_JOB_TYPES = {kind: path.removesuffix("s") for kind, path in CATALOG_JOB_PATHS.items()}
CATALOG_KEYS = {
    "item_create": "items",
    "item_update": "items",
    "item_delete": "items",
    "variant_create": "variants",
    "variant_update": "variants",
    "variant_delete": "variants",
    "category_create": "categories",
    "category_update": "categories",
    "category_delete": "categories",
}


def catalog_job_resource(req: Request, kind: str, job: Job) -> dict[str, Any]:
    """The JSON:API resource of a catalog bulk job (errors filled once complete)."""
    status = _job_status(job)
    total, completed, failed = _job_counts(job, status)
    # A job error is an APIJobErrorPayload (bulk_create_catalog_items.json, klaviyo/openapi): id,
    # code, title, detail and source only; the HTTP-style "status" of a request error is not one.
    errors = (
        [
            {
                **{k: v for k, v in e.items() if k not in ("_index", "status")},
                "source": _job_error_source(req, e["source"]),
            }
            for e in job.errors
        ]
        if job.done and not job.errors_hidden
        else []
    )
    return {
        "type": job.type,
        "id": job.id,
        # No "job_id" attribute: the job document of bulk_create_catalog_items.json (klaviyo/openapi,
        # PostCatalogItemCreateJobResponse) names none; the id is the resource's own.
        "attributes": {
            "status": status,
            "created_at": job.created,
            "total_count": total,
            "completed_count": completed,
            "failed_count": failed,
            "completed_at": job.completed_at if status == "complete" else None,
            "errors": errors,
            "expires_at": (datetime.now(UTC) + timedelta(days=7)).isoformat(timespec="seconds"),
        },
        "links": {"self": f"{req.base_url}/api/{CATALOG_JOB_PATHS[kind]}/{job.id}"},
    }


def _catalog_id(attrs: dict[str, Any]) -> str:
    integration = attrs.get("integration_type") or "$custom"
    catalog = attrs.get("catalog_type") or "$default"
    return f"{integration}:::{catalog}:::{attrs['external_id']}"


def _catalog_apply(kind: str, acct: AccountState, job: Job, items: list[dict[str, Any]], base: str) -> None:
    stamp = now_iso()

    def fail(i: int, status: int, code: str, detail: str) -> None:
        job.errors.append({**error(status, code, detail, f"{base}/{i}"), "_index": i})

    def create(i: int, store: dict[str, Any], noun: str, attrs: dict[str, Any], **links: Any) -> None:
        cid = _catalog_id(attrs)
        if cid in store:
            fail(i, 409, "duplicate", f"Catalog {noun} {cid!r} already exists")
        else:
            store[cid] = {"id": cid, **attrs, **links, "created": stamp, "updated": stamp}

    for i, item in enumerate(items):
        attrs = item.get("attributes") or {}
        rels = item.get("relationships") or {}
        if kind == "item_create":
            cats = [c["id"] for c in ((rels.get("categories") or {}).get("data") or [])]
            create(i, acct.catalog_items, "item", attrs, categories=cats)
        elif kind == "item_update":
            stored = acct.catalog_items.get(item["id"])
            if stored is None:
                fail(i, 404, "not_found", f"Catalog item {item['id']!r} does not exist")
                continue
            stored.update(attrs)
            if "categories" in rels:
                stored["categories"] = [c["id"] for c in ((rels.get("categories") or {}).get("data") or [])]
            stored["updated"] = stamp
        elif kind == "item_delete":
            if acct.catalog_items.pop(item["id"], None) is None:
                fail(i, 404, "not_found", f"Catalog item {item['id']!r} does not exist")
                continue
            # Klaviyo deletes an item's variants with it.
            for vid in [v for v, var in acct.catalog_variants.items() if var["item_id"] == item["id"]]:
                del acct.catalog_variants[vid]
        elif kind in ("variant_update", "category_update", "variant_delete", "category_delete"):
            noun = kind.split("_")[0]
            store = acct.catalog_variants if noun == "variant" else acct.catalog_categories
            stored = store.get(item["id"])
            if stored is None:
                fail(i, 404, "not_found", f"Catalog {noun} {item['id']!r} does not exist")
            elif kind.endswith("_delete"):
                del store[item["id"]]
            else:
                stored.update(attrs)
                if "items" in rels:
                    stored["items"] = [x["id"] for x in ((rels.get("items") or {}).get("data") or [])]
                stored["updated"] = stamp
        elif kind == "variant_create":
            item_id = ((rels.get("item") or {}).get("data") or {}).get("id")
            if item_id not in acct.catalog_items:
                fail(i, 404, "not_found", f"Catalog item {item_id!r} does not exist")
                continue
            create(i, acct.catalog_variants, "variant", attrs, item_id=item_id)
        elif kind == "category_create":
            members = [x["id"] for x in ((rels.get("items") or {}).get("data") or [])]
            create(i, acct.catalog_categories, "category", attrs, items=members)


def catalog_job_creator(kind: str) -> Callable[[Request], Response]:
    """A POST handler for one catalog bulk job kind: 100 items, 500 jobs in flight."""
    key = CATALOG_KEYS[kind]

    def handler(req: Request) -> Response:
        body = _body(req)
        validate_shape(f"catalog_{kind}", body)
        assert req.config is not None and req.state is not None
        acct = _acct(req)
        items = body["data"]["attributes"][key]["data"]
        base = f"/data/attributes/{key}/data"
        _too_many(len(items), 100, base, key)
        problems = []
        for i, item in enumerate(items):
            attrs = item.get("attributes") or {}
            meta = attrs.get("custom_metadata")
            if meta and len(orjson.dumps(meta)) > 100 * 1024:
                problems.append(
                    invalid("custom_metadata may be at most 100 KB", f"{base}/{i}/attributes/custom_metadata")
                )
            if meta and any(isinstance(v, dict) for v in meta.values()):
                problems.append(
                    invalid("custom_metadata must be flat", f"{base}/{i}/attributes/custom_metadata")
                )
            for name, expected in (("integration_type", "$custom"), ("catalog_type", "$default")):
                if attrs.get(name) not in (None, expected):
                    problems.append(invalid(f"{name} must be {expected!r}", f"{base}/{i}/attributes/{name}"))
            if _big(req):
                found = long_string_pointer(attrs, f"{base}/{i}/attributes")
                if found:
                    problems.append(invalid("Strings may be at most 100 KB", found))
        if problems:
            raise Problem(400, problems)
        now = time.monotonic()
        in_flight = acct.in_flight_catalog_jobs(now)
        if len(in_flight) >= req.config.catalog_jobs_in_flight:
            from simulator.ratelimit import fmt_seconds

            oldest = min(in_flight, key=lambda j: j.created_mono)
            retry = oldest.created_mono + oldest.queued_for + oldest.processing_for - now
            raise Problem(
                429,
                [
                    error(
                        429,
                        "throttled",
                        f"Too many catalog bulk jobs in flight (at most {req.config.catalog_jobs_in_flight})",
                    )
                ],
                [(b"retry-after", fmt_seconds(retry, req.config.time_scale != 1).encode())],
            )
        job = _new_job(req, CATALOG_JOB_TYPES[kind], len(items))
        job.apply = lambda: _catalog_apply(kind, acct, job, items, base)
        acct.catalog_jobs[job.id] = job
        acct.pending_jobs.append(job)
        req.state.stats.accepted[f"catalog_{kind}"] += len(items)
        stats = req.state.stats
        stats.peak_catalog_jobs_in_flight = max(stats.peak_catalog_jobs_in_flight, len(in_flight) + 1)
        return Response(202, {"data": catalog_job_resource(req, kind, job)})

    return handler


def catalog_job_getter(kind: str) -> Callable[[Request], Response]:
    """A GET handler for one catalog bulk job kind."""

    def handler(req: Request) -> Response:
        job = _acct(req).catalog_jobs.get(req.params["id"])
        if job is None or job.type != CATALOG_JOB_TYPES[kind]:
            raise _not_found("Catalog job", req.params["id"])
        return Response(200, {"data": catalog_job_resource(req, kind, job)})

    return handler


def catalog_job_lister(kind: str) -> Callable[[Request], Response]:
    """A GET handler listing one catalog bulk job kind."""

    def handler(req: Request) -> Response:
        jobs = [j for j in _acct(req).catalog_jobs.values() if j.type == CATALOG_JOB_TYPES[kind]]
        page, links = paginate(req, jobs, 100)
        return Response(200, {"data": [catalog_job_resource(req, kind, j) for j in page], "links": links})

    return handler


def catalog_item_resource(req: Request, item: dict[str, Any]) -> dict[str, Any]:
    """The JSON:API resource of a catalog item."""
    attrs = {k: v for k, v in item.items() if k not in ("id", "categories")}
    return {
        "type": "catalog-item",
        "id": item["id"],
        "attributes": attrs,
        "relationships": {
            "categories": {"data": [{"type": "catalog-category", "id": c} for c in item["categories"]]}
        },
        "links": {"self": f"{req.base_url}/api/catalog-items/{item['id']}"},
    }


def get_catalog_items(req: Request) -> Response:
    """GET /api/catalog-items: 100 per page."""
    items = list(_acct(req).catalog_items.values())
    page, links = paginate(req, items, 100, 100)
    return Response(200, {"data": [catalog_item_resource(req, i) for i in page], "links": links})


def get_catalog_item(req: Request) -> Response:
    """GET /api/catalog-items/{id}."""
    item = _acct(req).catalog_items.get(req.params["id"])
    if item is None:
        raise _not_found("Catalog item", req.params["id"])
    return Response(200, {"data": catalog_item_resource(req, item)})
