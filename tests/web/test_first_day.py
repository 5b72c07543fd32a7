"""Small truths a first day meets: the favicon, the Connection page's badge after a key is saved, a
row warning labelled as one, counts that agree with their nouns, the phone hint's region, and the
studio's columns table saying where each column goes."""

from __future__ import annotations

import re
import uuid

from models import Role, RowError, RunStatus, SyncRun
from services import mappings
from sync.mapping import MappingOptions
from tests.support.runs import make_mapping, ordered_product_spec
from tests.support.specs import profile_spec
from tests.support.web import mapping_form_items, post_form, repeated_fields
from web.templating import plural


async def test_favicon_is_served_to_anyone(client):
    answer = await client.get("/favicon.ico", follow_redirects=False)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("image/x-icon")
    assert answer.content[:4] == b"\x00\x00\x01\x00"  # an ICO file's header
    login = await client.get("/login")
    assert '<link rel="icon" href="/favicon.ico"' in login.text


async def test_saving_a_live_key_swaps_the_sandbox_badge(client, as_role):
    await as_role(Role.ADMIN)
    page = await client.get("/connection")
    assert re.search(r'id="mode-badge"[^>]*>Sandbox mode<', page.text)
    key = f"pk_live_{uuid.uuid4().hex}"
    saved = await post_form(client, "/connection/key", {"private_key": key}, headers={"hx-request": "true"})
    try:
        assert saved.status_code == 200
        # The key form is swapped in, and the header's badge with it (out of band).
        badge = re.search(r'<span id="mode-badge"[^>]*hx-swap-oob="true"[^>]*>([^<]*)<', saved.text)
        assert badge is not None and badge.group(1) == "Live Klaviyo account"
        assert "Sandbox mode" not in saved.text
    finally:
        back = await post_form(client, "/connection/sandbox", headers={"hx-request": "true"})
        assert re.search(r'id="mode-badge"[^>]*hx-swap-oob="true"[^>]*>Sandbox mode<', back.text)


async def test_a_dropped_phone_is_labelled_a_warning(client, as_role, sessionmaker):
    await as_role(Role.VIEWER)
    async with sessionmaker() as db:
        run = SyncRun(kind="profile", status=RunStatus.COMPLETED, rows_read=2, rows_ok=2, items_sent=2)
        db.add(run)
        await db.flush()
        db.add(
            RowError(
                run_id=run.id,
                row_number=2,
                severity="warning",
                column="phone",
                rule="phone_dropped",
                message="'12345' is not a valid phone number for region US; the profile is sent without it",
            )
        )
        await db.commit()
    page = await client.get(f"/runs/{run.id}")
    row = re.search(r'<tr data-testid="rule-phone_dropped">(.*?)</tr>', page.text, re.S)
    assert row is not None
    assert '<code class="warn">phone_dropped</code> <small class="muted">warning</small>' in row.group(1)


def test_counts_agree_with_their_nouns():
    assert plural(1, "request") == "1 request"
    assert plural(3, "request") == "3 requests"
    assert plural(0, "batch", "batches") == "0 batches"
    assert plural(1200, "job") == "1,200 jobs"


def test_the_phone_hint_names_the_region_the_mapping_reads_with():
    spec = profile_spec("phones", default_phone_region="gb")
    assert "read as GB numbers" in mappings.hints_for(spec)["invalid_phone"]
    us = profile_spec("phones").model_copy(update={"options": MappingOptions()})
    assert "read as US numbers" in mappings.hints_for(us)["invalid_phone"]


async def test_the_columns_table_says_where_each_column_goes(client, as_role, sessionmaker):
    await as_role(Role.OPERATOR)
    spec = ordered_product_spec(f"Columns {uuid.uuid4().hex[:6]}")
    mapping = await make_mapping(sessionmaker, spec)
    sample = "email,time,price,sku,order,Gift note\na@shop.test,2024-03-01 10:00,5.00,MUG,1001,hi\n"
    items = [*mapping_form_items(spec), ("sample_text", sample)]
    preview = await client.post(
        f"/mappings/{mapping.id}/preview",
        data=repeated_fields(items),
        headers={"x-csrftoken": client.cookies["kc_csrf"]},
    )
    assert preview.status_code == 200
    table = re.search(r'data-testid="columns">(.*?)</table>', preview.text, re.S)
    assert table is not None
    rows = dict(re.findall(r"<tr>\s*<td>([^<]*)</td>.*?<td>(.*?)</td>\s*</tr>", table.group(1), re.S))
    assert "<th>Sent as</th>" in table.group(1)
    assert rows["sku"] == "<code>properties.SKU</code>"
    assert rows["email"] == "<code>email</code>"
    assert rows["Gift note"] == '<span class="muted">not sent</span>'
