"""upsert_profile: one profile in real time through POST /api/profile-import, against the simulator."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from klaviyo.client import KlaviyoClient
from klaviyo.limiter import RateLimiter
from services.profiles import ProfileRefused, upsert_profile
from simulator.config import SANDBOX_KEY


@pytest.fixture
async def klaviyo(simulator_url: str, redis_client) -> AsyncIterator[KlaviyoClient]:
    limiter = RateLimiter(redis_client, prefix=f"test:{uuid.uuid4().hex[:8]}", time_scale=20)
    async with KlaviyoClient(SANDBOX_KEY, base_url=simulator_url, limiter=limiter) as client:
        yield client


def _stored(simulator_url: str, email: str) -> list[dict]:
    return httpx.get(f"{simulator_url}/__sim/profiles", params={"email": email}).json()["data"]


async def test_upsert_creates_then_updates_and_clears(klaviyo, simulator_url):
    email = f"rt-{uuid.uuid4().hex[:8]}@shop.test"
    first = await upsert_profile(klaviyo, {"email": email, "first_name": "Ann", "last_name": "Lee"})
    (stored,) = _stored(simulator_url, email)
    assert stored["id"] == first and stored["first_name"] == "Ann"

    # Same email: the same profile; a field left out is unchanged, a None clears it.
    again = await upsert_profile(klaviyo, {"email": email, "first_name": None, "title": "CTO"})
    (stored,) = _stored(simulator_url, email)
    assert again == first
    assert "first_name" not in stored
    assert stored["last_name"] == "Lee" and stored["title"] == "CTO"


async def test_upsert_refuses_what_klaviyo_would_damage(klaviyo):
    with pytest.raises(ProfileRefused, match="64"):
        await upsert_profile(klaviyo, {"email": "long@shop.test", "external_id": "x" * 65})
    with pytest.raises(ProfileRefused, match="identifier|email"):
        await upsert_profile(klaviyo, {"first_name": "Nobody"})
