"""Security headers on every answer, a strict Content-Security-Policy the templates can live with,
and state-changing requests from another site refused."""

from __future__ import annotations

import re

import pytest

from models import NotificationSettings, Role
from tests.conftest import ROOT
from tests.support.web import csrf, post_form


async def test_every_answer_carries_the_security_headers(client, as_role):
    await as_role(Role.VIEWER)
    answers = [
        await client.get("/"),
        await client.get("/static/app.css"),
        await client.get("/healthz"),
        await client.get("/no/such/page"),
        await client.post("/api/ingest/999999", content=b"{}"),
    ]
    assert [a.status_code for a in answers] == [200, 200, 200, 404, 401]
    for answer in answers:
        policy = answer.headers.get("content-security-policy", "")
        assert "script-src 'self'" in policy and "style-src 'self'" in policy, answer.url
        assert "frame-ancestors 'none'" in policy and "unsafe-inline" not in policy
        assert answer.headers.get("x-frame-options") == "DENY"
        assert answer.headers.get("x-content-type-options") == "nosniff"
        assert answer.headers.get("referrer-policy") == "same-origin"


def test_templates_hold_no_inline_script_style_or_event_handler():
    """What the policy would block: a style attribute, an inline <script> (a JSON data island is
    not run), an on* handler attribute, htmx's eval'd hx-on."""
    found = []
    for path in sorted((ROOT / "templates").rglob("*.html")):
        text = path.read_text()
        for pattern in (
            r"\sstyle=",
            r"<script(?![^>]*\bsrc=)(?![^>]*application/json)[^>]*>",
            r"\son[a-z]+=",
            r"\shx-on[:-]",
            r"<style",
        ):
            found += [f"{path.relative_to(ROOT)}: {m.group(0).strip()}" for m in re.finditer(pattern, text)]
    assert found == []


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://testserver.local.evil.example"])
async def test_a_state_changing_request_from_another_site_is_refused(client, as_role, sessionmaker, origin):
    await as_role(Role.ADMIN)
    form = {"webhook_url": "https://hooks.example.com/x", "enabled": "1", "error_threshold_pct": "7"}
    refused = await post_form(client, "/notifications/", form, headers={"origin": origin})
    assert refused.status_code == 403
    assert "came from another site" in refused.text
    async with sessionmaker() as db:
        from services import notifications

        saved: NotificationSettings = await notifications.get_settings(db)
        assert saved.webhook_url != "https://hooks.example.com/x"
    # The console's own origin (and a request without Origin) goes through.
    same = await client.post(
        "/notifications/",
        data={**form, "enabled": "", "_csrf_token": csrf(client)},
        headers={"origin": "http://testserver.local"},
    )
    assert same.status_code == 200, same.text
    async with sessionmaker() as db:
        saved = await notifications.get_settings(db)
        assert saved.webhook_url == "https://hooks.example.com/x"
        await notifications.save(db, url="", enabled=False, threshold=5.0, user=None)
        await db.commit()
