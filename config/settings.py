"""The one Settings object, read from the environment and `.env`."""

from __future__ import annotations

import ipaddress
import secrets
from enum import StrEnum
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sync.outbound import AllowList

VAR_DIR = Path("var")
PLACEHOLDER_SECRETS = {"", "changeme", "change-me", "secret", "dev"}


class Environment(StrEnum):
    DEV = "dev"
    TEST = "test"
    PRODUCTION = "production"


class MissingSecretKeyError(RuntimeError):
    """SECRET_KEY is unset or a placeholder outside development."""


class Settings(BaseSettings):
    """Every knob of the console; each maps to an upper-case environment variable."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    environment: Environment = Environment.DEV
    database_url: str = "sqlite+aiosqlite:///./var/console.db"
    redis_url: str = "redis://127.0.0.1:6379"
    secret_key: SecretStr | None = None
    klaviyo_base_url: str = "https://a.klaviyo.com"
    sandbox_url: str = "http://127.0.0.1:8100"
    upload_dir: Path = VAR_DIR / "uploads"
    upload_max_bytes: int = Field(default=2 * 1024**3, gt=0)
    log_level: str = "INFO"
    log_json: bool = False
    queue_name: str = "arq:queue"
    cookie_secure: bool = False
    login_max_failures: int = 5
    login_lockout_seconds: int = 300
    # Workers: batches in flight per run, and how long a run's lease lasts without a renewal
    # (a worker that dies is replaced after this long).
    send_concurrency: int = Field(default=4, ge=1, le=32)
    # Catalog jobs a run keeps open while they settle (Klaviyo allows 500 per account in flight).
    catalog_jobs_in_flight: int = Field(default=50, ge=1, le=500)
    run_lease_seconds: float = Field(default=30.0, gt=0)
    # /metrics is public (like /healthz) unless this is set; then scrapers send
    # `Authorization: Bearer <METRICS_TOKEN>`.
    metrics_token: SecretStr | None = None
    # Only for a time-scaled simulator (tests, benchmarks): the limiter's windows shrink alike.
    klaviyo_time_scale: float = Field(default=1.0, gt=0)
    # Real-time ingest: the largest request body accepted (413 above it), how often a record that
    # failed for a transient reason (5xx, timeout) is tried before it is marked failed, and how long
    # sent records are kept (they are what catches a repeat of the same order).
    ingest_max_body_bytes: int = Field(default=1_000_000, gt=0)
    # Records in one request (413 above it): bounds the work and the answer of one request.
    ingest_max_records: int = Field(default=1000, ge=1)
    ingest_max_attempts: int = Field(default=10, ge=1)
    ingest_retention_days: float = Field(default=7.0, gt=0)
    # Hosts (`feeds.internal`, `*.corp.example`) and networks (`10.2.0.0/16`) that feeds and the
    # webhook may reach although their addresses are private; everything else must be public.
    outbound_allow: str = ""
    # Reverse proxies (addresses or networks) whose X-Forwarded-For names the client; from anyone
    # else the header is ignored. Empty: the connection's own address is the client's.
    trusted_proxies: str = ""
    # Proof of landing: a completed run is checked against Klaviyo this long after it ends; until
    # it has been over for verify_settle_seconds a shortfall may be Klaviyo still processing
    # ("not yet complete"), after that it is a mismatch. Profile-like runs read this many rows back.
    verify_auto: bool = True
    verify_delay_seconds: float = Field(default=300.0, ge=0)
    verify_settle_seconds: float = Field(default=900.0, ge=0)
    verify_sample_size: int = Field(default=100, ge=1, le=1000)

    @model_validator(mode="after")
    def _require_secret_outside_dev(self) -> Settings:
        key = self.secret_key.get_secret_value() if self.secret_key else ""
        if key.strip().lower() in PLACEHOLDER_SECRETS:
            if self.environment is Environment.PRODUCTION:
                raise MissingSecretKeyError(
                    "SECRET_KEY is not set (or is a placeholder). Set SECRET_KEY to a long random "
                    'value, e.g. `python -c "import secrets; print(secrets.token_urlsafe(48))"`.'
                )
            self.secret_key = SecretStr(_dev_secret_key())
        return self

    @field_validator("outbound_allow")
    @classmethod
    def _valid_allow_list(cls, value: str) -> str:
        AllowList.parse(value)
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _valid_proxies(cls, value: str) -> str:
        for entry in value.replace(",", " ").split():
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"TRUSTED_PROXIES: {entry!r} is not an address or network.") from None
        return value

    @property
    def trusted_proxy_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """TRUSTED_PROXIES parsed."""
        return tuple(
            ipaddress.ip_network(e, strict=False) for e in self.trusted_proxies.replace(",", " ").split()
        )

    @property
    def outbound_allow_list(self) -> AllowList:
        """OUTBOUND_ALLOW parsed."""
        return AllowList.parse(self.outbound_allow)

    @property
    def secret(self) -> str:
        """The secret key as text (never log it)."""
        assert self.secret_key is not None
        return self.secret_key.get_secret_value()

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def _dev_secret_key() -> str:
    """Generate once and keep in ./var so dev sessions and stored secrets survive restarts."""
    path = VAR_DIR / "secret_key"
    if path.exists():
        return path.read_text().strip()
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    path.write_text(key)
    path.chmod(0o600)
    return key


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once."""
    return Settings()
