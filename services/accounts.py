"""The connected Klaviyo account: stored key (encrypted), sandbox fallback, where workers send."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from config.crypto import decrypt_secret, encrypt_secret
from config.settings import Settings
from models import Account, ConnectionStatus
from models.base import utcnow

# The simulator's built-in account: the sandbox works with no Klaviyo account at all.
SANDBOX_PRIVATE_KEY = "pk_sandbox_0000000000000000000000000000"


class KeyFormatError(ValueError):
    """The pasted key cannot be a Klaviyo private key."""


@dataclass(frozen=True)
class KlaviyoTarget:
    """Where and how a worker talks to Klaviyo for an account (the key stays out of repr)."""

    base_url: str
    api_key: str
    sandbox: bool

    def __repr__(self) -> str:
        return f"KlaviyoTarget(base_url={self.base_url!r}, sandbox={self.sandbox})"


async def get_account(db: AsyncSession) -> Account:
    """The console's account row, created as a sandbox on first use."""
    account = (await db.exec(select(Account).order_by(col(Account.id)).limit(1))).first()
    if account is None:
        account = Account(label="Sandbox", sandbox=True)
        db.add(account)
        await db.flush()
    return account


def validate_private_key(key: str) -> str:
    key = key.strip()
    if not key.startswith("pk_") or len(key) < 20 or any(ch.isspace() for ch in key):
        raise KeyFormatError(
            "That does not look like a Klaviyo private API key: it starts with pk_ and has no spaces. "
            "Create one in Klaviyo under Settings > API keys."
        )
    return key


def set_private_key(account: Account, settings: Settings, key: str, public_key: str | None) -> None:
    """Store a new key encrypted; the connection must be tested again."""
    key = validate_private_key(key)
    account.private_key_encrypted = encrypt_secret(settings.secret, key)
    account.key_hint = key[-4:]
    account.public_key = (public_key or "").strip() or None
    account.sandbox = False
    account.label = "Klaviyo"
    _reset_status(account)


def use_sandbox(account: Account) -> None:
    """Forget the stored key and send to the simulator instead."""
    account.private_key_encrypted = None
    account.key_hint = None
    account.public_key = None
    account.sandbox = True
    account.label = "Sandbox"
    _reset_status(account)


def _reset_status(account: Account) -> None:
    account.status = ConnectionStatus.UNTESTED
    account.status_message = None
    account.name = account.timezone = account.currency = account.klaviyo_account_id = None
    account.updated_at = utcnow()


def klaviyo_target(account: Account, settings: Settings) -> KlaviyoTarget:
    """Base URL and key for this account: the simulator in sandbox mode, Klaviyo otherwise."""
    if account.sandbox or not account.private_key_encrypted:
        return KlaviyoTarget(settings.sandbox_url, SANDBOX_PRIVATE_KEY, sandbox=True)
    return KlaviyoTarget(
        settings.klaviyo_base_url,
        decrypt_secret(settings.secret, account.private_key_encrypted),
        sandbox=False,
    )
