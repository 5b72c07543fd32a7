"""The analyse_upload job through a real arq worker: queued once, safe to run twice, missing rows."""

from __future__ import annotations

from pathlib import Path

import pytest
from arq.connections import ArqRedis

from models import Upload, UploadStatus
from models.db import make_engine, make_sessionmaker
from services import uploads
from workers.analyse_upload import analyse_upload


@pytest.fixture
async def db_factory(settings):
    engine = make_engine(settings.database_url)
    yield make_sessionmaker(engine)
    await engine.dispose()


async def stored(db_factory, settings, content: bytes, name: str = "data.csv") -> Upload:
    async with db_factory() as db:
        upload = Upload(filename=name, stored_as="")
        db.add(upload)
        await db.flush()
        upload.stored_as = f"{upload.id}.upload"
        (Path(settings.upload_dir) / upload.stored_as).write_bytes(content)
        await db.commit()
        return upload


async def test_queued_twice_runs_once_and_running_again_gives_the_same_result(
    settings, db_factory, run_worker_burst
):
    upload = await stored(db_factory, settings, b"email,total\na@x.com,1\nb@x.com,2,3\n")
    arq = ArqRedis.from_url(settings.redis_url)
    try:
        assert await uploads.enqueue_analysis(arq, settings, upload.id) is None
        assert await uploads.enqueue_analysis(arq, settings, upload.id) is None  # same job id: deduplicated
        assert await arq.zscore(settings.queue_name, uploads.job_id(settings, upload.id)) is not None
        assert await run_worker_burst(settings) >= 1
    finally:
        await arq.aclose()
    async with db_factory() as db:
        first = await db.get(Upload, upload.id)
    assert first.status == UploadStatus.READY and first.row_count == 1
    ctx = {"settings": settings, "sessionmaker": db_factory}
    assert await analyse_upload(ctx, upload.id) == {"status": "ready", "rows": 1}
    async with db_factory() as db:
        again = await db.get(Upload, upload.id)
    assert again.problems == first.problems and again.preview == first.preview


async def test_a_row_that_no_longer_exists_is_reported_missing(settings, db_factory):
    ctx = {"settings": settings, "sessionmaker": db_factory}
    assert await analyse_upload(ctx, 987_654_321) == {"status": "missing"}


def test_analysis_reads_a_large_file_of_bad_rows_with_bounded_problems(tmp_path):
    path = tmp_path / "7.upload"
    path.write_bytes(b"a,b\n" + b"1,2,3\n" * 200_000 + b"1,2\n")
    result = uploads.analyse_file(path, "bad.csv")
    assert result.status == UploadStatus.READY and result.row_count == 1
    assert len(result.problems) == uploads.MAX_LISTED_PROBLEMS + 1
    assert result.problems[-1]["count"] == 200_000
    assert all("7.upload" not in p["message"] for p in result.problems)


async def test_json_records_are_stored_as_ndjson_with_their_keys_as_columns_twice_alike(settings, db_factory):
    import json

    records = [
        {"event": "Product Added", "properties": {"sku": "A", "price": 3}, "userId": "u1"},
        {"event": "Order Completed", "properties": {"order_id": "o1"}, "messageId": "m2"},
    ]
    upload = await stored(db_factory, settings, json.dumps(records, indent=2).encode(), "events.json")
    ctx = {"settings": settings, "sessionmaker": db_factory}
    assert await analyse_upload(ctx, upload.id) == {"status": "ready", "rows": 2}
    async with db_factory() as db:
        first = await db.get(Upload, upload.id)
    assert first.stored_as == f"{upload.id}.ndjson"
    assert first.headers == ["event", "properties", "userId", "messageId"]
    assert first.preview[0]["properties"] == '{"sku":"A","price":3}'
    lines = (Path(settings.upload_dir) / first.stored_as).read_text().splitlines()
    assert [json.loads(line) for line in lines] == records
    assert await analyse_upload(ctx, upload.id) == {"status": "ready", "rows": 2}  # from the NDJSON now


async def test_json_that_is_not_records_makes_the_upload_invalid_saying_why(settings, db_factory):
    upload = await stored(db_factory, settings, b'[{"event": "a"}, 7]', "events.json")
    ctx = {"settings": settings, "sessionmaker": db_factory}
    assert (await analyse_upload(ctx, upload.id))["status"] == "invalid"
    async with db_factory() as db:
        bad = await db.get(Upload, upload.id)
    assert [(p["rule"], p["message"]) for p in bad.problems if p["row"]] == [
        ("not_an_object", "record 2 is a number, not an object")
    ]
