"""One simulator server for the whole module run; each test gets it reset to default config."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import fields

import httpx
import pytest

from simulator.config import SANDBOX_KEY, SimConfig
from simulator.server import SimulatorServer, klaviyo_headers


@pytest.fixture(scope="session")
def sim_server() -> Iterator[SimulatorServer]:
    with SimulatorServer(SimConfig(seed=7)) as server:
        yield server


@pytest.fixture
def sim(sim_server: SimulatorServer) -> Iterator[SimulatorServer]:
    """The shared server with default config, empty state and fresh rate-limit windows; every
    answer of the test is checked against Klaviyo's spec (simulator.conformance)."""
    fresh = SimConfig(seed=7, check_answers=True)
    for f in fields(SimConfig):
        setattr(sim_server.config, f.name, getattr(fresh, f.name))
    sim_server.reset()
    sim_server.app.conformance.clear()
    yield sim_server
    problems = list(sim_server.app.conformance.problems)
    sim_server.app.conformance.clear()
    assert not problems, "the simulator answered outside Klaviyo's spec:\n" + "\n".join(problems)


@pytest.fixture
def client(sim: SimulatorServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.base_url, headers=klaviyo_headers(SANDBOX_KEY), timeout=10) as c:
        yield c
