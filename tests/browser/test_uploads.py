"""Uploads in the browser (live uvicorn + worker): upload, watch the analysis, read the preview.

Also the memory proof: a ~200 MB body streamed to the live web process grows its RSS only a little.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from datetime import UTC, datetime, timedelta

import httpx
import psutil
import pytest
from playwright.async_api import Page, expect

from models import Mapping, MappingVersion, Role, Upload, UploadStatus
from sync.mapping import Mapping as MappingSpec
from sync.mapping import Target, TargetKind, column
from tests.browser.conftest import PASSWORD, log_in, screenshot
from tests.support.env import ARTIFACTS

pytestmark = pytest.mark.browser

ORDERS = (
    "Email,Order ID,Order Date,Total,Currency,Product,Shipping City,Shipping Country,Coupon,Notes\n"
    + "".join(
        f"buyer{i}@example.com,#10{i:03d},2024-03-{i % 28 + 1:02d},{i * 7 % 300}.95,EUR,"
        f'Merino scarf {i},Lyon,France,{"SPRING" if i % 3 else ""},"Gift, wrap please"\n'
        for i in range(1, 41)
    )
).encode()


def csv_file(name: str, content: bytes) -> dict:
    return {"name": name, "mimeType": "text/csv", "buffer": content}


async def add_mapping(live_sessionmaker, name: str, columns: list[str]) -> None:
    spec = MappingSpec(
        name=name,
        target=Target(kind=TargetKind.EVENT, metric="Placed Order"),
        fields=[column(columns[0], "email"), *[column(c, f"properties.{c}") for c in columns[1:]]],
    )
    async with live_sessionmaker() as db:
        mapping = Mapping(name=name, target_kind="event")
        db.add(mapping)
        await db.flush()
        db.add(MappingVersion(mapping_id=mapping.id, version=1, spec=spec.model_dump(mode="json")))
        await db.commit()


async def test_operator_uploads_a_csv_and_sees_it_analysed(page: Page, user_factory, live_sessionmaker):
    await add_mapping(live_sessionmaker, "Orders backfill", ["Email", "Order ID", "Total"])
    await add_mapping(live_sessionmaker, "Profiles from the loyalty export", ["email", "loyalty_tier"])
    operator = await user_factory(Role.OPERATOR)
    await log_in(page, operator.username)
    await page.goto("/uploads/")
    await expect(page.get_by_role("heading", name="Uploads")).to_be_visible()
    await screenshot(page, "uploads-index-empty-form")
    await page.set_input_files(
        "input[type=file]", files=[{"name": "spring-orders.csv", "mimeType": "text/csv", "buffer": ORDERS}]
    )
    await page.get_by_role("button", name="Upload").click()
    await page.wait_for_url("**/uploads/*")
    await expect(page.get_by_test_id("upload-ready")).to_be_visible(timeout=20_000)
    await expect(page.get_by_test_id("upload-rows")).to_have_text("40")
    await expect(page.get_by_test_id("upload-encoding")).to_have_text("UTF-8")
    preview = page.get_by_test_id("upload-preview")
    await expect(preview).to_contain_text("buyer1@example.com")
    await expect(preview).to_contain_text("Gift, wrap please")
    await expect(preview.locator("tbody tr")).to_have_count(20)
    # Only the mapping whose columns this file has can be chosen; the other says what is missing.
    usable = page.locator(
        "select[name=mapping_id] option:not([disabled])", has_text="Orders backfill (event)"
    )
    await expect(usable).to_have_count(1)
    # Other tests leave mappings in the session database: look for this test's own.
    loyalty = page.locator("option:disabled", has_text="Profiles from the loyalty export")
    await expect(loyalty).to_contain_text("this file lacks email, loyalty_tier")
    await expect(page.get_by_role("button", name="Dry run")).to_be_visible()
    await expect(page.get_by_role("button", name="Send to Klaviyo")).to_be_visible()
    await expect(page.locator("input[name=backfill]")).to_be_checked()
    await screenshot(page, "uploads-detail-ready")
    await page.set_viewport_size({"width": 800, "height": 900})
    await screenshot(page, "uploads-detail-800px")
    await page.goto("/uploads/")
    await expect(page.locator("#uploads-table")).to_contain_text("spring-orders.csv")
    await screenshot(page, "uploads-index-800px")
    await page.set_viewport_size({"width": 1280, "height": 800})
    await screenshot(page, "uploads-index")


async def test_problems_and_an_invalid_file_are_explained(page: Page, user_factory):
    operator = await user_factory(Role.OPERATOR)
    await log_in(page, operator.username)
    messy = (
        "email;name;city;signup_date\n"
        "anna@example.com;Anna;Köln;45292\n"
        "ben@example.com;Ben\n"
        "cara@example.com;Cara;Genève;45293;oops;more\n"
        "dan@example.com;Dan;Zürich;45294\n"
        "eve@example.com;Eve;Mal"
    ).encode("cp1252")
    await page.goto("/uploads/")
    await page.set_input_files(
        "input[type=file]", files=[{"name": "messy.csv", "mimeType": "text/csv", "buffer": messy}]
    )
    await page.get_by_role("button", name="Upload").click()
    await page.wait_for_url("**/uploads/*")
    await expect(page.get_by_test_id("upload-ready")).to_be_visible(timeout=20_000)
    problems = page.locator("#upload-problems")
    for text in (
        "Rows with extra cells",
        "Rows with missing cells",
        "Excel serial dates",
        "Not UTF-8",
        "Truncated",
    ):
        await expect(problems).to_contain_text(text)
    await expect(page.get_by_test_id("upload-encoding")).to_have_text("Windows-1252 (fallback)")
    await expect(page.get_by_test_id("upload-preview")).to_contain_text("Zürich")
    await screenshot(page, "uploads-detail-problems")

    await page.goto("/uploads/")
    binary = b"\x89PNG\r\n\x1a\n" + os.urandom(2000)
    await page.set_input_files(
        "input[type=file]", files=[{"name": "photo.csv", "mimeType": "text/csv", "buffer": binary}]
    )
    await page.get_by_role("button", name="Upload").click()
    await page.wait_for_url("**/uploads/*")
    await expect(page.get_by_test_id("upload-invalid")).to_contain_text("photo.csv", timeout=20_000)
    await expect(page.get_by_test_id("upload-invalid")).to_contain_text("binary_file")
    await expect(page.get_by_test_id("run-blocked")).to_be_visible()
    await expect(page.locator("form[action='/runs/']")).to_have_count(0)
    await screenshot(page, "uploads-detail-invalid")


async def test_the_status_polls_while_analysing_and_the_page_refreshes(
    page: Page, user_factory, live_sessionmaker
):
    operator = await user_factory(Role.OPERATOR)
    async with live_sessionmaker() as db:
        # A row whose job was never queued (as when Redis was down) and whose file is gone.
        upload = Upload(
            filename="lost.csv",
            stored_as="999999.upload",
            size_bytes=10,
            sha256="0" * 64,
            created_at=datetime.now(UTC) - timedelta(minutes=10),
        )
        db.add(upload)
        await db.commit()
    await log_in(page, operator.username)
    await page.goto(f"/uploads/{upload.id}")
    await expect(page.get_by_test_id("upload-analysing")).to_be_visible()
    await expect(page.locator("#upload-status[hx-trigger='every 1s']")).to_have_count(1)
    await screenshot(page, "uploads-detail-analysing")
    await page.get_by_role("button", name="Queue the analysis again").click()
    # The worker finds no file; the poll sees the verdict and reloads the whole page.
    await expect(page.get_by_test_id("upload-invalid")).to_contain_text("missing", timeout=20_000)
    await expect(page.locator("#upload-status[hx-trigger]")).to_have_count(0)
    await screenshot(page, "uploads-detail-missing-file")


async def test_a_viewer_sees_uploads_but_no_form(page: Page, user_factory):
    viewer = await user_factory(Role.VIEWER)
    await log_in(page, viewer.username)
    await page.goto("/uploads/")
    await expect(page.get_by_text("operators upload files")).to_be_visible()
    await expect(page.locator("#upload-form")).to_have_count(0)
    await screenshot(page, "uploads-index-viewer")


def web_process(live_server: str) -> psutil.Process:
    port = live_server.rsplit(":", 1)[1]
    for proc in psutil.Process().children(recursive=True):
        cmdline = proc.cmdline()
        if "uvicorn" in " ".join(cmdline) and port in cmdline:
            return proc
    raise AssertionError("the live uvicorn process was not found")


async def test_a_200_mb_upload_streams_with_small_memory_growth(
    live_server, user_factory, live_sessionmaker, tmp_path
):
    operator = await user_factory(Role.OPERATOR)
    row = b"someone.with.a.long.address@example.com,#1000001,2024-03-01T10:00:00Z,129.95,EUR,Merino scarf\n"
    header = b"email,order_id,placed_at,total,currency,product\n"
    rows_per_chunk = (1024 * 1024) // len(row)
    chunk = row * rows_per_chunk
    chunks = 200
    size = len(header) + len(chunk) * chunks
    digest = hashlib.sha256(header)
    for _ in range(chunks):
        digest.update(chunk)

    async def body():
        yield header
        for _ in range(chunks):
            yield chunk

    web = web_process(live_server)
    async with httpx.AsyncClient(base_url=live_server, timeout=120) as client:
        await client.get("/login")
        login = await client.post(
            "/login",
            data={
                "username": operator.username,
                "password": PASSWORD,
                "_csrf_token": client.cookies["kc_csrf"],
            },
        )
        assert login.status_code in (200, 302)
        baseline = web.memory_info().rss
        peak = baseline
        done = asyncio.Event()

        async def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, web.memory_info().rss)
                await asyncio.sleep(0.02)

        sampler = asyncio.create_task(sample())
        response = await client.post(
            "/uploads/?name=big.csv",
            content=body(),
            headers={
                "x-csrftoken": client.cookies["kc_csrf"],
                "content-type": "application/octet-stream",
                "content-length": str(size),
                "accept": "application/json",
            },
        )
        done.set()
        await sampler
    assert response.status_code == 201, response.text
    growth_mb = (peak - baseline) / 1024 / 1024
    mb = 2**20
    print(f"\n200 MB upload: web RSS {baseline / mb:.0f} MB, peak {peak / mb:.0f} MB (+{growth_mb:.1f} MB)")
    assert growth_mb < 60, f"the web process grew by {growth_mb:.0f} MB while receiving {size / 2**20:.0f} MB"
    upload_id = response.json()["id"]
    try:
        async with live_sessionmaker() as db:
            upload = await db.get(Upload, upload_id)
        assert upload.size_bytes == size and upload.sha256 == digest.hexdigest()
        # The worker reads the whole file too (in a thread, streaming): wait for its verdict.
        for _ in range(600):
            async with live_sessionmaker() as db:
                upload = await db.get(Upload, upload_id)
            if upload.status != UploadStatus.RECEIVING:
                break
            await asyncio.sleep(0.2)
        assert upload.status == UploadStatus.READY, upload.problems
        assert upload.row_count == rows_per_chunk * chunks
    finally:
        (ARTIFACTS / "uploads" / f"{upload_id}.upload").unlink(missing_ok=True)  # the live UPLOAD_DIR
