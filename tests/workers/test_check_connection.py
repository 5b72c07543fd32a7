"""Connection page + worker job against the simulator over real HTTP."""

from __future__ import annotations

import pytest
from litestar.testing import AsyncTestClient

from models import Role
from services.accounts import get_account
from tests.support.env import unique
from tests.support.web import login, make_user, post_form
from web.app import create_app


@pytest.fixture
async def admin_client(settings, simulator_url, sessionmaker_for):
    test_settings = settings.model_copy(
        update={"sandbox_url": simulator_url, "klaviyo_base_url": simulator_url}
    )
    app = create_app(test_settings)
    async with AsyncTestClient(app) as client:
        admin = await make_user(sessionmaker_for(test_settings), unique("adm"), Role.ADMIN)
        assert (await login(client, admin.username)).status_code == 302
        client.test_settings = test_settings
        yield client


@pytest.fixture
def sessionmaker_for():
    from models.db import make_engine, make_sessionmaker

    engines = []

    def _make(settings):
        engine = make_engine(settings.database_url)
        engines.append(engine)
        return make_sessionmaker(engine)

    yield _make


async def _test_and_wait(client, run_worker_burst) -> str:
    queued = await post_form(client, "/connection/test")
    assert queued.status_code == 200 and "Testing" in queued.text
    assert await run_worker_burst(client.test_settings) >= 1
    return (await client.get("/connection/status")).text


async def test_sandbox_connection_shows_the_simulator_account(admin_client, run_worker_burst):
    await post_form(admin_client, "/connection/sandbox")
    status = await _test_and_wait(admin_client, run_worker_burst)
    assert "Connected to the sandbox" in status
    assert "Sandbox Store" in status and "USD" in status and "UTC" in status


async def test_key_is_encrypted_masked_and_never_rendered(admin_client, sessionmaker_for):
    key = "pk_" + "s3cr3t" * 6
    saved = await post_form(admin_client, "/connection/key", {"private_key": key, "public_key": "ABC123"})
    assert saved.status_code == 200 and key not in saved.text and key[-4:] in saved.text
    page = await admin_client.get("/connection")
    assert key not in page.text and "••••••••" + key[-4:] in page.text
    async with sessionmaker_for(admin_client.test_settings)() as db:
        account = await get_account(db)  # the console's account, whatever else the session stored
    assert account.private_key_encrypted and key not in account.private_key_encrypted
    assert account.sandbox is False


async def test_malformed_key_is_refused_with_a_reason(admin_client):
    response = await post_form(admin_client, "/connection/key", {"private_key": "not a key"})
    assert response.status_code == 400
    assert "starts with pk_" in response.text


async def test_revoked_or_wrong_key_gives_a_precise_error(admin_client, run_worker_burst):
    await post_form(admin_client, "/connection/key", {"private_key": "pk_unknown_key_0000000000000000"})
    status = await _test_and_wait(admin_client, run_worker_burst)
    assert "refused the key (401)" in status


async def test_unreachable_klaviyo_is_explained(admin_client, run_worker_burst):
    await post_form(admin_client, "/connection/key", {"private_key": "pk_unknown_key_0000000000000000"})
    admin_client.test_settings = admin_client.test_settings.model_copy(
        update={"klaviyo_base_url": "http://127.0.0.1:9"}
    )
    status = await _test_and_wait(admin_client, run_worker_burst)
    assert "unreachable at http://127.0.0.1:9" in status
