"""Job: check what Klaviyo holds against what a finished run sent (proof of landing).

Event runs: the run's accepted events per metric and day (tallied with its batches) against Query
Metric Aggregates for the same days and time zone. Profile and catalog runs: a random sample of
accepted rows is mapped again from the source and read back from Klaviyo, field by field.
Klaviyo processes bulk jobs asynchronously, so a shortfall found soon after the run is reported as
"not yet complete" (and, for the automatic check, looked at again later), not as a mismatch.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import structlog
from arq.connections import ArqRedis
from redis.exceptions import RedisError

from klaviyo.client import KlaviyoClient
from klaviyo.errors import KlaviyoError
from klaviyo.limiter import RateLimiter
from models import MappingVersion, SyncRun, Upload
from models.base import utcnow
from services import notifications
from services import verification as checks
from services.accounts import get_account, klaviyo_target
from sync import verification as v
from sync.feeds import RecordFileReader, is_record_file
from sync.mapping import Mapping as MappingSpec
from sync.pipeline import Pipeline
from sync.readers import CsvReader, SourceError

log = structlog.get_logger(__name__)
AUTO_CHECKS = 3  # the automatic check looks again this many times while Klaviyo is behind
WEBHOOK_TIMEOUT = httpx.Timeout(5.0, connect=3.0)
CATALOG_ID = "$custom:::$default:::{}"
CATALOG_FIELDS = (
    "title",
    "description",
    "url",
    "price",
    "image_full_url",
    "image_thumbnail_url",
    "published",
)


async def verify_run(ctx: dict[str, Any], run_id: int, auto: int = 0) -> dict[str, Any]:
    """Check one finished run against Klaviyo and store the result with the run."""
    settings = ctx["settings"]
    async with ctx["sessionmaker"]() as db:
        run = await db.get(SyncRun, run_id)
        if run is None or checks.can_verify(run) is not None:
            return {"run": run_id, "skipped": "not verifiable"}
        account = await get_account(db)
        target = klaviyo_target(account, settings)
        await db.commit()
    limiter = RateLimiter(ctx["redis"], time_scale=settings.klaviyo_time_scale)
    client = KlaviyoClient(
        target.api_key, base_url=target.base_url, limiter=limiter, http=ctx["http"]
    ).for_run(f"verify:{run_id}")
    started = utcnow()
    try:
        if run.kind in checks.EVENT_KINDS:
            result = await _check_events(ctx, client, run)
        else:
            result = await _check_sample(ctx, client, run)
    except (KlaviyoError, SourceError) as exc:
        result = {"state": v.FAILED, "message": f"The check could not finish: {exc}"}
    except Exception as exc:  # never leave the run showing "checking" for ever
        log.exception("run check failed", run_id=run_id)
        result = {"state": v.FAILED, "message": f"The check could not finish ({type(exc).__name__})."}
    result = {
        **result,
        "kind": run.kind,
        "checked_at": utcnow().isoformat(),
        "started_at": started.isoformat(),
    }
    async with ctx["sessionmaker"]() as db:
        saved = await checks.save(db, run_id, result)
    log.info("run verified", run_id=run_id, state=result["state"])
    if saved is not None and result["state"] == v.MISMATCH:
        await _notify(ctx, saved)
    if auto and result["state"] == v.PENDING and auto < AUTO_CHECKS and saved is not None:
        # Klaviyo is still behind: look again later, without a click.
        async with ctx["sessionmaker"]() as db:
            fresh = await db.get(SyncRun, run_id)
            if fresh is not None:
                await checks.request_check(
                    db, _arq(ctx), settings.queue_name, fresh, auto=auto + 1, defer=_delay(settings)
                )
    return {"run": run_id, "state": result["state"]}


def _delay(settings: Any) -> float:
    return float(settings.verify_delay_seconds) / float(settings.klaviyo_time_scale)


def _arq(ctx: dict[str, Any]) -> ArqRedis:
    redis = ctx["redis"]
    assert isinstance(redis, ArqRedis)
    return redis


def _settled(ctx: dict[str, Any], run: SyncRun) -> bool:
    """Whether Klaviyo has had long enough since the run ended to have processed all of it."""
    settings = ctx["settings"]
    if run.finished_at is None:
        return False
    settle = timedelta(seconds=settings.verify_settle_seconds / settings.klaviyo_time_scale)
    return utcnow() - run.finished_at >= settle


async def _check_events(ctx: dict[str, Any], client: KlaviyoClient, run: SyncRun) -> dict[str, Any]:
    async with ctx["sessionmaker"]() as db:
        sent = await checks.sent_tally(db, run.id or 0)
    metric_ids = {str(m["attributes"]["name"]): str(m["id"]) for m in await client.get_metrics()}
    rows: list[v.DayRow] = []
    zones = sorted(sent)
    for tz in zones:
        for metric, days in sorted(sent[tz].items()):
            held: dict[str, list[float]] = {}
            metric_id = metric_ids.get(metric)
            if metric_id is not None:
                for query in v.aggregate_queries(metric_id, days, tz):
                    held.update(v.read_aggregate(await client.query_metric_aggregates(query)))
            rows.extend(v.compare_days({metric: days}, {metric: held}))
    short = [row for row in rows if row.short]
    state = v.verdict(len(short), _settled(ctx, run))
    sent_total, held_total = sum(r.sent for r in rows), sum(min(r.held, r.sent) for r in rows)
    if state == v.VERIFIED:
        message = f"Klaviyo holds at least the {sent_total:,} events it accepted from this run, on every day."
    else:
        missing = sum(r.sent - r.held for r in short if r.held < r.sent)
        short_days = len({r.day for r in short})
        plural = "s" if short_days != 1 else ""
        message = f"Klaviyo holds {missing:,} fewer events than this run sent, on {short_days} day{plural}."
        if state == v.PENDING:
            message = "Not yet complete: " + message + " Klaviyo may still be processing the run's jobs."
    return {
        "state": state,
        "message": message,
        "timezone": ", ".join(zones) or "UTC",
        "days": [row.to_dict() for row in rows],
        "sent": sent_total,
        "held": held_total,
        "short_days": len(short),
    }


async def _check_sample(ctx: dict[str, Any], client: KlaviyoClient, run: SyncRun) -> dict[str, Any]:
    settings = ctx["settings"]
    size = int((run.options or {}).get("verify_sample", settings.verify_sample_size))
    async with ctx["sessionmaker"]() as db:
        rows = await checks.sample_rows(db, run, size)
        version = await db.get(MappingVersion, run.mapping_version_id) if run.mapping_version_id else None
        upload = await db.get(Upload, run.upload_id) if run.upload_id else None
        await db.commit()
    if version is None or upload is None:
        return {"state": v.FAILED, "message": "The run's mapping or upload no longer exists."}
    spec = MappingSpec.model_validate(version.spec)
    items = _items_of(settings, spec, upload, set(rows))
    result = v.SampleResult()
    if run.kind == "profile":
        await _compare_profiles(client, items, result)
    elif run.kind in checks.MEMBER_KINDS:
        list_id = str(run.options.get("list_id") or spec.target.list_id or "") or None
        await _compare_members(client, run.kind, list_id, items, result)
    else:
        await _compare_catalog(client, items, result)
    state = v.verdict(result.differ, _settled(ctx, run))
    message = result.headline()
    if state == v.PENDING:
        message = f"Not yet complete: {message} Klaviyo may still be processing the run's jobs."
    return {"state": state, "message": message, "sample": {"size": size, **result.to_dict()}}


def _items_of(settings: Any, spec: MappingSpec, upload: Upload, rows: set[int]) -> dict[int, dict[str, Any]]:
    """The items the sampled rows send, mapped again from the source with the run's mapping."""
    path = Path(settings.upload_dir) / upload.stored_as
    reader: CsvReader | RecordFileReader = (
        RecordFileReader(path)
        if is_record_file(upload.stored_as)
        else CsvReader(path, encoding=upload.encoding, delimiter=upload.delimiter)
    )
    found: dict[int, dict[str, Any]] = {}
    with reader:
        chosen = ((n, row) for n, row in reader if n in rows)
        for result in Pipeline(spec).run(chosen):
            if result.items and not result.errors:
                found[result.row_ref] = dict(result.items[0])
    return found


def _identity(attrs: dict[str, Any]) -> tuple[str, str] | None:
    for name in ("email", "phone_number", "external_id"):
        value = attrs.get(name)
        if isinstance(value, str) and value.strip():
            return name, value.strip()
    return None


async def _compare_profiles(
    client: KlaviyoClient, items: dict[int, dict[str, Any]], result: v.SampleResult
) -> None:
    by_field: dict[str, list[tuple[int, str, dict[str, Any]]]] = {}
    for row, item in sorted(items.items()):
        attrs = dict(item.get("attributes") or {})
        identity = _identity(attrs)
        if identity is None or str(attrs.get("email") or "").lower().endswith(v.RESERVED_DOMAIN):
            continue
        by_field.setdefault(identity[0], []).append((row, identity[1], attrs))
    for name, entries in by_field.items():
        for start in range(0, len(entries), 100):
            chunk = entries[start : start + 100]
            held = await client.find_profiles(name, [value for _, value, _ in chunk])
            index = {_key(name, (p.get("attributes") or {}).get(name)): p for p in held}
            for row, value, attrs in chunk:
                profile = index.get(_key(name, value))
                held_attrs = v.flatten_profile(profile.get("attributes") or {}) if profile else None
                result.add(v.compare_record(row, value, v.flatten_profile(attrs), held_attrs))


def _key(name: str, value: Any) -> str:
    text = str(value or "").strip()
    return text.lower() if name == "email" else text


async def _compare_catalog(
    client: KlaviyoClient, items: dict[int, dict[str, Any]], result: v.SampleResult
) -> None:
    for row, item in sorted(items.items()):
        attrs = dict(item.get("attributes") or {})
        # Update items name the entry by its full id instead of an external_id attribute.
        external_id = str(attrs.get("external_id") or str(item.get("id") or "").rsplit(":::", 1)[-1])
        if not external_id:
            continue
        found = await client.get_catalog_item(CATALOG_ID.format(external_id))
        held = (found.get("attributes") or {}) if found else None
        sent = {k: attrs[k] for k in CATALOG_FIELDS if k in attrs}
        if isinstance(attrs.get("custom_metadata"), dict):
            sent.update({f"custom_metadata.{k}": x for k, x in attrs["custom_metadata"].items()})
        flat = None
        if held is not None:
            flat = {k: held.get(k) for k in CATALOG_FIELDS}
            flat.update({f"custom_metadata.{k}": x for k, x in (held.get("custom_metadata") or {}).items()})
        result.add(v.compare_record(row, external_id, sent, flat))


async def _compare_members(
    client: KlaviyoClient,
    kind: str,
    list_id: str | None,
    items: dict[int, dict[str, Any]],
    result: v.SampleResult,
) -> None:
    """List runs: each sampled contact is (or, for a removal, is no longer) in the list. Subscription
    runs: in the list when there is one, and consent on each channel as sent."""
    wanted = kind != "list_membership_remove"
    entries = []
    for row, item in sorted(items.items()):
        attrs = dict(item.get("attributes") or {})
        identity = ("id", str(item["id"])) if item.get("id") else _identity(attrs)
        if identity is not None and not str(attrs.get("email") or "").lower().endswith(v.RESERVED_DOMAIN):
            entries.append((row, identity, attrs))
    members: dict[tuple[str, str], bool] = {}
    if list_id:
        by_field: dict[str, list[str]] = {}
        for _, (name, value), _ in entries:
            by_field.setdefault(name, []).append(value)
        for name, values in by_field.items():
            if name == "id":  # the list's profile filter takes no ids: read the member ids instead
                ids = await client.list_member_ids(list_id)
                members.update({("id", value): value in ids for value in values})
                continue
            for start in range(0, len(values), 100):
                chunk = values[start : start + 100]
                found = await client.find_list_members(list_id, name, chunk)
                members.update({(name, value): _key(name, value) in found for value in chunk})
    consent: dict[tuple[str, str], dict[str, Any]] = {}
    if kind == "subscription":
        for name in {identity[0] for _, identity, _ in entries}:
            values = [value for _, (field, value), _ in entries if field == name]
            for start in range(0, len(values), 100):
                profiles = await client.find_profiles(name, values[start : start + 100], subscriptions=True)
                for profile in profiles:
                    attrs = profile.get("attributes") or {}
                    consent[(name, _key(name, attrs.get(name)))] = attrs.get("subscriptions") or {}
    for row, (name, value), attrs in entries:
        sent: dict[str, Any] = {}
        held: dict[str, Any] = {}
        if list_id:
            sent["list membership"] = "member" if wanted else "not a member"
            held["list membership"] = "member" if members.get((name, value)) else "not a member"
        for channel, asked in (attrs.get("subscriptions") or {}).items():
            label = f"{channel} marketing consent"
            sent[label] = (asked.get("marketing") or {}).get("consent")
            channels = consent.get((name, _key(name, value)), {})
            held[label] = ((channels.get(channel) or {}).get("marketing") or {}).get("consent")
        result.add(v.compare_record(row, value, sent, held))


async def _notify(ctx: dict[str, Any], run: SyncRun) -> None:
    """Post the run's webhook about a mismatch once per run (never raised into the job)."""
    try:
        async with ctx["sessionmaker"]() as db:
            config = await notifications.get_settings(db)
            await db.commit()
        if not config.enabled or not config.webhook_url:
            return
        try:
            key = f"console:verify-notified:{ctx['settings'].queue_name}:{run.id}"
            if not await ctx["redis"].set(key, 1, nx=True, ex=7 * 86400):
                return
        except RedisError:
            pass
        body = notifications.payload(run, "verification_mismatch")
        async with httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT) as http:
            answer = await http.post(config.webhook_url, json=body)
        if answer.status_code >= 300:
            log.warning("webhook answered with an error", status=answer.status_code, run_id=run.id)
    except Exception as exc:  # a webhook must never fail the check
        log.warning("webhook not delivered", run_id=run.id, error=f"{type(exc).__name__}: {exc}")
