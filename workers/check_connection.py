"""Job: verify the account's key with GET /api/accounts and record what Klaviyo says."""

from __future__ import annotations

from typing import Any

import structlog

from klaviyo.client import KlaviyoClient
from klaviyo.errors import AuthError, KlaviyoError, NetworkError, ScopeError
from klaviyo.retry import RetryPolicy
from models import Account, ConnectionStatus
from models.base import utcnow
from services import catalog
from services.accounts import klaviyo_target

log = structlog.get_logger(__name__)
INTERACTIVE_RETRY = RetryPolicy(max_attempts=3, max_time=15.0, base=0.3, cap=2.0)


def _explain(exc: KlaviyoError, base_url: str) -> str:
    if isinstance(exc, AuthError):
        return "Klaviyo refused the key (401): it is wrong or was revoked. Paste a current private key."
    if isinstance(exc, ScopeError):
        return "The key lacks a scope (403): give it at least Accounts: read, then the sync scopes."
    if isinstance(exc, NetworkError):
        return f"Klaviyo is unreachable at {base_url}: {exc}. Check the network or KLAVIYO_BASE_URL."
    return f"Klaviyo answered with an error: {exc}"


async def check_connection(ctx: dict[str, Any], account_id: int) -> dict[str, Any]:
    """Call GET /api/accounts for the account and store name, timezone, currency or a precise error."""
    settings = ctx["settings"]
    async with ctx["sessionmaker"]() as db:
        account = await db.get(Account, account_id)
        if account is None:
            return {"status": "missing"}
        target = None
        try:
            target = klaviyo_target(account, settings)
            # An operator is waiting on the page: a few quick tries, not the long backfill policy.
            client = KlaviyoClient(
                target.api_key, base_url=target.base_url, http=ctx["http"], retry=INTERACTIVE_RETRY
            )
            data = await client.get_account()
            attrs = data.get("attributes", {})
            contact = attrs.get("contact_information", {})
            # Catalog state kept before the id was known moves to it, so the next sync finds it.
            await catalog.learn_account_id(db, account, data.get("id"))
            account.name = (
                contact.get("organization_name") or contact.get("default_sender_name") or data.get("id")
            )
            account.timezone = attrs.get("timezone")
            account.currency = attrs.get("preferred_currency")
            account.public_key = attrs.get("public_api_key") or account.public_key
            account.status, account.status_message = ConnectionStatus.OK, None
        except KlaviyoError as exc:
            where = target.base_url if target else "?"
            account.status, account.status_message = ConnectionStatus.FAILED, _explain(exc, where)
        except Exception as exc:  # a decrypt error or anything unexpected must still end "testing"
            account.status, account.status_message = ConnectionStatus.FAILED, str(exc)
        account.tested_at = utcnow()
        db.add(account)
        await db.commit()
        log.info("connection tested", account_id=account_id, status=account.status.value)
        return {"status": account.status.value}
