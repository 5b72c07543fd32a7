"""The test environment: set before anything imports the app, so no test reads a developer's .env.

tests/conftest.py imports this first; helpers and tests take the paths and service URLs from here.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
os.environ.update(
    ENVIRONMENT="test",
    SECRET_KEY="test-secret-key-that-is-long-enough-0123456789",
    LOG_LEVEL="WARNING",
    # The tests' feeds and webhook receivers listen on loopback.
    OUTBOUND_ALLOW="127.0.0.1/32,::1/128",
)
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379")
TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ["REDIS_URL"]
ARTIFACTS = ROOT / "test-artifacts"


def unique(prefix: str) -> str:
    """``prefix`` plus a random suffix: names that tests sharing a database do not collide on."""
    return f"{prefix}{uuid.uuid4().hex[:8]}"
