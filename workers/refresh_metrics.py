"""Job: read the account's metric names (GET /api/metrics) into Redis for the mapping studio."""

from __future__ import annotations

from typing import Any

import structlog

from klaviyo.client import KlaviyoClient
from klaviyo.errors import KlaviyoError
from models import Account
from services import metric_cache
from services.accounts import klaviyo_target
from workers.check_connection import INTERACTIVE_RETRY, _explain

log = structlog.get_logger(__name__)


async def refresh_metrics(ctx: dict[str, Any], account_id: int) -> dict[str, Any]:
    """Cache every metric name of the account with a timestamp; on failure keep the old names."""
    redis = ctx["redis"]
    async with ctx["sessionmaker"]() as db:
        account = await db.get(Account, account_id)
    if account is None:
        await metric_cache.clear_refreshing(redis, account_id)
        return {"status": "missing"}
    target = None
    try:
        target = klaviyo_target(account, ctx["settings"])
        client = KlaviyoClient(
            target.api_key, base_url=target.base_url, http=ctx["http"], retry=INTERACTIVE_RETRY
        )
        metrics = await client.get_metrics()
    except KlaviyoError as exc:
        await metric_cache.write_error(redis, account_id, _explain(exc, target.base_url if target else "?"))
        return {"status": "failed"}
    except Exception as exc:  # a decrypt error must still end the "refreshing" state
        await metric_cache.write_error(redis, account_id, f"Could not read metrics: {exc}")
        raise
    names = [str((m.get("attributes") or {}).get("name")) for m in metrics if m.get("attributes")]
    await metric_cache.write(redis, account_id, names)
    log.info("metrics refreshed", account_id=account_id, count=len(names))
    return {"status": "ok", "count": len(names)}
