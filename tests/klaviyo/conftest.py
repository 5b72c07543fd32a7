"""Fixtures for the klaviyo package: real Redis (unique key prefix per test) and the simulator."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


@pytest.fixture
async def prefix(redis: Redis) -> AsyncIterator[str]:
    """A key prefix no other test uses; its keys are deleted afterwards."""
    value = f"test:klaviyo:{uuid.uuid4().hex[:10]}"
    yield value
    keys = [key async for key in redis.scan_iter(match=f"{value}:*")]
    if keys:
        await redis.delete(*keys)


@pytest.fixture(scope="module")
def sim_server():
    """The Klaviyo simulator over real HTTP in a background thread, time-scaled 20x."""
    from simulator.config import SimConfig
    from simulator.server import SimulatorServer

    server = SimulatorServer(SimConfig(time_scale=20, seed=7))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def sim(sim_server):
    """The shared simulator, emptied and without faults for this test."""
    from simulator.config import Faults

    sim_server.reset()
    sim_server.config.faults = Faults()
    sim_server.config.revoked_keys.clear()
    sim_server.config.limits_enabled = True
    # Every answer of the test is checked against Klaviyo's spec (simulator.conformance).
    sim_server.config.check_answers = True
    sim_server.app.conformance.clear()
    yield sim_server
    sim_server.config.faults = Faults()
    problems = list(sim_server.app.conformance.problems)
    sim_server.app.conformance.clear()
    assert not problems, "the simulator answered outside Klaviyo's spec:\n" + "\n".join(problems)


@pytest.fixture
async def client(sim, redis, prefix):
    """A client on the simulator, paced by a limiter with this test's own keys."""
    from klaviyo.client import KlaviyoClient
    from klaviyo.limiter import RateLimiter
    from klaviyo.retry import RetryPolicy

    limiter = RateLimiter(redis, prefix=prefix, time_scale=sim.config.time_scale)
    # Fault tests fail ~45% of attempts; 10 tries let one request in ~3,000 run out (a flaky CI),
    # 25 make that one in ~10^8. Production keeps its own policy (klaviyo.retry.RetryPolicy).
    policy = RetryPolicy(max_attempts=25, max_time=60, base=0.02, cap=0.5)
    async with KlaviyoClient(sim.api_key, base_url=sim.base_url, limiter=limiter, retry=policy) as c:
        yield c
