"""Uploaded CSV files: receive a request body onto disk, analyse it once, say whether it can run.

The request only streams the body to ``<upload_dir>/<id>.upload`` (hashing and size-capping on the
way), inserts the Upload row and enqueues ``analyse_upload``; the worker calls ``analyse_file``.

``Upload.problems`` holds plain dicts with the keys ``file, row, column, rule, message, severity``.
Two optional keys: ``blocking: True`` marks the problem that makes the file invalid, and an entry
with ``count`` (and ``row`` None) gives the total for a rule when only the first rows are listed.
"""

from __future__ import annotations

import asyncio
import codecs
import hashlib
import os
import re
import unicodedata
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from arq.connections import ArqRedis
from redis.exceptions import RedisError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from config.settings import Settings
from models import Mapping, MappingVersion, Upload, UploadStatus, User
from models.base import utcnow
from sync.feeds import is_record_file
from sync.mapping import Mapping as MappingSpec
from sync.readers import (
    FALLBACK_ENCODING,
    CsvReader,
    SourceError,
    SourceProblem,
    detect_encoding,
    read_ndjson_file,
)

WRITE_BUFFER = 1024 * 1024
PREVIEW_ROWS = 20
PREVIEW_CELL_CHARS = 200
MAX_LISTED_PROBLEMS = 100
# Far above any real value (Klaviyo rejects such payloads); in practice an unclosed quote.
MAX_CELL_BYTES = 1024 * 1024
_DATE_HINT = re.compile(r"date|time|day|created|updated|birth|dob|when|_at$|At$")
_EXCEL_SERIAL = re.compile(r"\d{5}(?:\.\d+)?")
_EXCEL_RANGE = (20000.0, 80000.0)  # 1954-10-03 .. 2119-01-10
_EXCEL_EPOCH = datetime(1899, 12, 30)
DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
ENCODING_NAMES = {
    "utf-8": "UTF-8",
    "utf-8-sig": "UTF-8 with BOM",
    "utf-16": "UTF-16",
    FALLBACK_ENCODING: "Windows-1252 (fallback)",
}
RULE_TITLES = {
    "empty_file": "Empty file",
    "header_only": "No data rows",
    "binary_file": "Not a CSV file",
    "empty_header": "Column without a header",
    "duplicate_header": "Duplicate header",
    "bad_encoding": "Unreadable characters",
    "malformed_csv": "Malformed CSV",
    "cell_too_large": "Cells too large",
    "no_rows": "No importable rows",
    "missing_file": "Stored file missing",
    "truncated_row": "Truncated last row (not imported)",
    "extra_cells": "Rows with extra cells (not imported)",
    "missing_cells": "Rows with missing cells",
    "excel_serial_date": "Excel serial dates",
    "encoding_fallback": "Not UTF-8",
    "malformed_json": "Not JSON records",
    "not_an_object": "Records that are not objects",
}
# JSON records (one object per event, as stores and tracking tools export them): an array in a
# .json file, or one object per line (.ndjson, .jsonl). They are stored as NDJSON and read like a
# feed's records, so nested fields (properties.products[]) map by path.
RECORD_SUFFIXES = (".json", ".ndjson", ".jsonl")
MAX_JSON_ARRAY_BYTES = 256 * 1024 * 1024  # a .json array is read whole; larger files: use NDJSON
HEADER_SCAN = 1000


class UploadRefused(Exception):
    """The body was not stored; ``status_code`` and the message say why."""

    status_code = 400


class UploadTooLarge(UploadRefused):
    status_code = 413


class NotARawBody(UploadRefused):
    status_code = 415


def human_size(size: int | None) -> str:
    """1536 -> '1.5 KB' (binary units, as file managers show them)."""
    if size is None:
        return "—"
    value = float(size)
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{int(value)} bytes" if unit == "bytes" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{value:,.1f} GB"  # pragma: no cover


def display_name(raw: str | None) -> str:
    """The operator's filename for display only: no path parts, no control characters, bounded."""
    name = re.split(r"[/\\]", raw or "")[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip().lstrip(".")
    if len(name) > 200:
        stem, dot, ext = name.rpartition(".")
        name = f"{stem[: 190 - len(ext)]}…{dot}{ext}" if dot and len(ext) <= 8 else name[:199] + "…"
    return name or "unnamed.csv"


def too_large_message(name: str, cap: int) -> str:
    return (
        f"{name} is larger than the {human_size(cap)} upload limit, so it was not stored. "
        "Split it into smaller files, or ask an admin to raise UPLOAD_MAX_BYTES."
    )


# ---------------------------------------------------------------- receiving


def _write(out: BinaryIO, digest: Any, data: bytes | bytearray) -> None:
    digest.update(data)
    out.write(data)


async def _spool(chunks: AsyncIterator[bytes], path: Path, cap: int, name: str) -> tuple[int, str]:
    """Write the chunks to ``path`` (at most ~1 MB held at once); (size, sha256). Raises past the cap."""
    digest = hashlib.sha256()
    size = 0
    buffer = bytearray()
    with open(path, "xb") as out:
        async for chunk in chunks:
            size += len(chunk)
            if size > cap:
                raise UploadTooLarge(too_large_message(name, cap))
            buffer += chunk
            if len(buffer) >= WRITE_BUFFER:
                full, buffer = buffer, bytearray()
                await asyncio.to_thread(_write, out, digest, full)
        if buffer:
            await asyncio.to_thread(_write, out, digest, buffer)
    return size, digest.hexdigest()


async def receive(
    db: AsyncSession,
    settings: Settings,
    chunks: AsyncIterator[bytes],
    *,
    filename: str | None,
    content_length: int | None,
    user: User | None,
    content_type: str = "application/octet-stream",
) -> Upload:
    """Stream a request body to ``<upload_dir>/<id>.upload`` and add its Upload row (not committed).

    Refuses before reading when Content-Length is over the cap, and as soon as the bytes received
    pass it; a refused or interrupted body leaves nothing on disk.
    """
    name = display_name(filename)
    if content_type.startswith(("multipart/", "application/x-www-form-urlencoded")):
        # The page sends the file itself; a form-encoded body would be stored wrapped in its envelope.
        raise NotARawBody(
            "Send the file itself as the request body (application/octet-stream), as the upload page "
            "does, with its name in ?name=; form-encoded uploads are not accepted."
        )
    cap = settings.upload_max_bytes
    if content_length is not None and content_length > cap:
        raise UploadTooLarge(too_large_message(name, cap))
    directory = Path(settings.upload_dir)
    await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    partial = directory / f".incoming-{uuid.uuid4().hex}.part"
    try:
        size, sha256 = await _spool(chunks, partial, cap, name)
        upload = Upload(
            filename=name,
            stored_as="",
            size_bytes=size,
            sha256=sha256,
            created_by=user.id if user else None,
        )
        db.add(upload)
        await db.flush()
        upload.stored_as = f"{upload.id}.upload"
        os.replace(partial, directory / upload.stored_as)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return upload


def job_id(settings: Settings, upload_id: int) -> str:
    return f"{settings.queue_name}:analyse-upload:{upload_id}"


async def enqueue_analysis(arq: ArqRedis, settings: Settings, upload_id: int) -> str | None:
    """Queue the analysis (once per upload while queued); None, or why it could not be queued."""
    try:
        await arq.enqueue_job(
            "analyse_upload", upload_id, _job_id=job_id(settings, upload_id), _queue_name=settings.queue_name
        )
    except (RedisError, OSError) as exc:
        return f"The analysis could not be queued: Redis is unreachable ({exc}). Check REDIS_URL."
    return None


# ---------------------------------------------------------------- reading back


FEED_TICK_FILES = "%.ndjson"  # a schedule tick stores its records as NDJSON (services/schedules.py)


async def list_uploads(
    db: AsyncSession, *, before_id: int | None = None, limit: int = 50, feeds: bool = False
) -> list[Upload]:
    """Uploads newest first; a schedule's tick files only when ``feeds`` (they have their schedule page)."""
    query = select(Upload).order_by(col(Upload.id).desc()).limit(limit)
    if not feeds:
        query = query.where(col(Upload.stored_as).not_like(FEED_TICK_FILES))
    if before_id:
        query = query.where(col(Upload.id) < before_id)
    return list((await db.exec(query)).all())


async def usernames(db: AsyncSession, uploads: list[Upload]) -> dict[int, str]:
    ids = {u.created_by for u in uploads if u.created_by is not None}
    if not ids:
        return {}
    rows = await db.exec(select(User.id, User.username).where(col(User.id).in_(ids)))
    return {uid: name for uid, name in rows.all() if uid is not None}


async def earlier_copy(db: AsyncSession, upload: Upload) -> Upload | None:
    """The first earlier upload with the same content, if any."""
    if not upload.sha256:
        return None
    query = (
        select(Upload)
        .where(Upload.sha256 == upload.sha256, col(Upload.id) < (upload.id or 0))
        .order_by(col(Upload.id))
        .limit(1)
    )
    return (await db.exec(query)).first()


def can_run(upload: Upload) -> tuple[bool, str]:
    """Whether a run may start from this upload, and if not, why (an invalid file never runs)."""
    if upload.status == UploadStatus.RECEIVING:
        return False, "The file is still being analysed."
    if upload.status == UploadStatus.INVALID:
        problem = blocking_problem(upload)
        return False, summary_line(problem) if problem else "The file is invalid."
    if not upload.row_count:
        return False, f"{upload.filename} has no rows that can be imported."
    return True, ""


def waiting_too_long(upload: Upload, minutes: int = 2) -> bool:
    """Still not analysed a while after upload: the job may be lost (Redis flushed, no worker)."""
    created = upload.created_at if upload.created_at.tzinfo else upload.created_at.replace(tzinfo=UTC)
    return upload.status == UploadStatus.RECEIVING and utcnow() - created > timedelta(minutes=minutes)


def blocking_problem(upload: Upload) -> dict[str, Any] | None:
    return next((p for p in upload.problems if p.get("blocking")), None)


def summary_line(problem: dict[str, Any]) -> str:
    """'orders.csv, row 3, column 'note': message (rule cell_too_large)', without saying things twice."""
    message, row, column = problem["message"], problem.get("row"), problem.get("column")
    file = str(problem.get("file") or "")
    where = [] if not file or message.startswith(file) else [file]
    if row is not None and not message.startswith(f"row {row}"):
        where.append(f"row {row}")
    if column and repr(column) not in message:
        where.append(f"column {column!r}")
    prefix = ", ".join(where)
    return f"{prefix + ': ' if prefix else ''}{message} (rule {problem['rule']})"


@dataclass
class ProblemGroup:
    rule: str
    title: str
    severity: str
    items: list[dict[str, Any]]
    count: int

    @property
    def more(self) -> int:
        return self.count - len(self.items)


def group_problems(problems: list[dict[str, Any]]) -> list[ProblemGroup]:
    """Problems by rule, errors first, each with its total count."""
    groups: dict[str, ProblemGroup] = {}
    for problem in problems:
        rule = problem["rule"]
        group = groups.get(rule)
        if group is None:
            title = RULE_TITLES.get(rule, rule.replace("_", " ").capitalize())
            group = groups[rule] = ProblemGroup(rule, title, problem.get("severity", "error"), [], 0)
        if "count" in problem:
            group.count = int(problem["count"])
        else:
            group.items.append(problem)
            group.count = max(group.count, len(group.items))
    return sorted(groups.values(), key=lambda g: (g.severity != "error", -g.count))


async def mapping_choices(db: AsyncSession, upload: Upload) -> list[dict[str, Any]]:
    """Mappings that are not deleted, each with the columns it reads that this file lacks."""
    query = (
        select(Mapping, MappingVersion)
        .join(
            MappingVersion,
            (col(MappingVersion.mapping_id) == col(Mapping.id))
            & (col(MappingVersion.version) == col(Mapping.current_version)),
            isouter=True,
        )
        .where(col(Mapping.deleted).is_(False))
        .order_by(Mapping.name)
    )
    headers = set(upload.headers)
    choices = []
    for mapping, version in (await db.exec(query)).all():
        missing: list[str] = []
        # JSON records vary in their keys (optional fields are simply absent): none is required.
        if version is not None and not is_record_file(upload.stored_as):
            try:
                spec = MappingSpec.model_validate(version.spec)
                # A filter on a column the file lacks would skip (or keep) every row: name it too.
                wanted = [*spec.source_columns(), *(f.column for f in spec.filters)]
                missing = [c for c in dict.fromkeys(wanted) if c not in headers]
            except ValueError:
                missing = []
        choices.append(
            {"id": mapping.id, "name": mapping.name, "kind": mapping.target_kind, "missing": missing}
        )
    return sorted(choices, key=lambda c: (bool(c["missing"]), c["name"].lower()))


# ---------------------------------------------------------------- analysis (runs in a worker thread)


@dataclass
class Analysis:
    status: UploadStatus
    encoding: str | None = None
    encoding_note: str | None = None
    delimiter: str | None = None
    headers: list[str] = field(default_factory=list)
    row_count: int | None = None
    preview: list[dict[str, Any]] = field(default_factory=list)
    problems: list[dict[str, Any]] = field(default_factory=list)
    stored_as: str | None = None  # JSON records converted to NDJSON are read from this file

    def apply(self, upload: Upload) -> None:
        if self.stored_as:
            upload.stored_as = self.stored_as
        for name in (
            "status",
            "encoding",
            "encoding_note",
            "delimiter",
            "headers",
            "row_count",
            "preview",
            "problems",
        ):
            setattr(upload, name, getattr(self, name))


class _Problems:
    """Keeps the first MAX_LISTED_PROBLEMS and a count per rule (a bad file can have millions)."""

    def __init__(self, file: str, stored: str) -> None:
        self.file, self.stored = file, stored
        self.listed: list[dict[str, Any]] = []
        self.counts: Counter[str] = Counter()
        self.severity: dict[str, str] = {}
        self.blocking = False

    def add(
        self,
        rule: str,
        message: str,
        row: int | None = None,
        column: str | None = None,
        severity: str = "error",
        blocking: bool = False,
    ) -> None:
        self.counts[rule] += 1
        self.severity.setdefault(rule, severity)
        if blocking and not self.blocking:
            self.blocking = True
        elif len(self.listed) >= MAX_LISTED_PROBLEMS:
            return
        else:
            blocking = False
        entry: dict[str, Any] = {
            "file": self.file,
            "row": row,
            "column": column,
            "rule": rule,
            # The reader names the stored file (<id>.upload); operators know their own name.
            "message": message.replace(self.stored, self.file),
            "severity": severity,
        }
        if blocking:
            entry["blocking"] = True
            self.listed.insert(0, entry)
        else:
            self.listed.append(entry)

    def add_source(self, problem: SourceProblem, blocking: bool = False) -> None:
        self.add(problem.rule, problem.message, problem.row, problem.column, problem.severity, blocking)

    def result(self) -> list[dict[str, Any]]:
        listed = Counter(p["rule"] for p in self.listed)
        totals = [
            {
                "file": self.file,
                "row": None,
                "column": None,
                "rule": rule,
                "severity": self.severity[rule],
                "count": count,
                "message": f"{count:,} in all; the first {listed[rule]:,} are listed",
            }
            for rule, count in self.counts.items()
            if count > listed[rule]
        ]
        return self.listed + totals


def _clip(value: str) -> str:
    return value if len(value) <= PREVIEW_CELL_CHARS else value[:PREVIEW_CELL_CHARS] + "…"


def _utf16_note(path: Path) -> str:
    with open(path, "rb") as handle:
        bom = handle.read(2)
    order = "little-endian" if bom == codecs.BOM_UTF16_LE else "big-endian"
    return f"UTF-16 {order} with a byte-order mark (as Excel's 'Unicode text' export writes it)"


class _SerialDates:
    """Notices Excel serial day numbers (45292 = 2024-01-01) in columns whose name says date/time."""

    def __init__(self, headers: list[str]) -> None:
        self.columns = [h for h in headers if _DATE_HINT.search(h) or _DATE_HINT.search(h.lower())]
        self.found: dict[str, list[Any]] = {}  # column -> [count, first row, example]

    def check(self, number: int, row: dict[str, str]) -> None:
        for column in self.columns:
            value = row.get(column, "").strip()
            if value and _EXCEL_SERIAL.fullmatch(value) and _EXCEL_RANGE[0] <= float(value) < _EXCEL_RANGE[1]:
                seen = self.found.setdefault(column, [0, number, value])
                seen[0] += 1

    def report(self, problems: _Problems) -> None:
        for column, (count, first, example) in self.found.items():
            day = (_EXCEL_EPOCH + timedelta(days=float(example))).strftime("%Y-%m-%d")
            problems.add(
                "excel_serial_date",
                f"Excel serial day numbers such as {example} (= {day}) in "
                f"{count:,} row{'s' if count != 1 else ''}, first at row {first}. Format the column as dates "
                "in the spreadsheet before exporting, or read it with the 'excel' date format in the mapping",
                first,
                column,
                "warning",
            )


def analyse_file(path: Path, name: str) -> Analysis:
    """Read the whole file once with sync.readers: encoding, delimiter, headers, rows, problems."""
    problems = _Problems(name, path.name)
    if not path.exists():
        problems.add("missing_file", "the stored file is missing; upload it again", blocking=True)
        return Analysis(UploadStatus.INVALID, problems=problems.result())
    if name.lower().endswith(RECORD_SUFFIXES) or is_record_file(path.name):
        return analyse_records(path, problems)
    try:
        encoding, note = detect_encoding(path)
    except SourceError as exc:
        problems.add_source(exc.problem, blocking=True)
        return Analysis(UploadStatus.INVALID, problems=problems.result())
    result = Analysis(UploadStatus.READY, encoding=encoding, encoding_note=note)
    if note:
        problems.add("encoding_fallback", note, severity="warning")
    elif encoding == "utf-16":
        result.encoding_note = _utf16_note(path)
    try:
        reader = CsvReader(path, encoding=encoding)
    except SourceError as exc:
        problems.add_source(exc.problem, blocking=True)
        result.status, result.problems = UploadStatus.INVALID, problems.result()
        return result
    result.delimiter, result.headers = reader.delimiter, reader.headers
    dates = _SerialDates(reader.headers)
    rows = number = 0
    try:
        with reader:
            for number, row in reader:
                rows += 1
                if len(result.preview) < PREVIEW_ROWS:
                    result.preview.append({key: _clip(value) for key, value in row.items()})
                if max(map(len, row.values()), default=0) * 4 > MAX_CELL_BYTES:
                    _check_cells(problems, number, row)
                if dates.columns:
                    dates.check(number, row)
                if reader.problems:  # drained as we go: the reader's own list is unbounded
                    for problem in reader.problems:
                        problems.add_source(problem)
                    reader.problems.clear()
    except SourceError as exc:
        problems.add_source(exc.problem, blocking=True)
    else:
        _check_cut_inside_quotes(problems, reader, number)
    for problem in reader.problems:
        problems.add_source(problem)
    dates.report(problems)
    result.row_count = rows
    if not problems.blocking and rows == 0:
        problems.add(
            "no_rows", "none of the data rows can be imported (see the problems below)", blocking=True
        )
    if problems.blocking:
        result.status = UploadStatus.INVALID
    result.problems = problems.result()
    return result


def analyse_records(path: Path, problems: _Problems) -> Analysis:
    """JSON records: stored as NDJSON beside the upload (``<id>.ndjson``), then counted; columns are
    the records' top-level keys and the preview shows nested values as JSON."""
    target = path if is_record_file(path.name) else path.with_suffix(".ndjson")
    result = Analysis(UploadStatus.READY, encoding="utf-8", stored_as=target.name)
    keys: dict[str, None] = {}
    rows = 0
    try:
        if target != path:
            _to_ndjson(path, target)
        for _, record in read_ndjson_file(target):
            rows += 1
            if rows <= HEADER_SCAN:
                keys.update(dict.fromkeys(record))
            if len(result.preview) < PREVIEW_ROWS:
                result.preview.append({key: _clip(_cell(value)) for key, value in record.items()})
    except SourceError as exc:
        problems.add_source(exc.problem, blocking=True)
    result.headers, result.row_count = list(keys), rows
    if not problems.blocking and rows == 0:
        problems.add("no_rows", "the file holds no records", blocking=True)
    if problems.blocking:
        result.status = UploadStatus.INVALID
    result.problems = problems.result()
    return result


_JSON_KINDS = {int: "a number", float: "a number", str: "text", list: "an array", bool: "true or false"}


def _cell(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _to_ndjson(path: Path, target: Path) -> None:
    """Write the upload's records one per line: an array is read whole, NDJSON line by line."""
    with open(path, "rb") as handle:
        head = handle.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    partial = target.with_suffix(".part")
    try:
        _write_records(path, head, partial)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, target)


def _write_records(path: Path, head: bytes, partial: Path) -> None:
    with open(partial, "wb") as out:
        if head.startswith(b"["):
            if path.stat().st_size > MAX_JSON_ARRAY_BYTES:
                raise SourceError(
                    SourceProblem(
                        path.name,
                        "malformed_json",
                        "a JSON array over 256 MB is not read whole: upload the records one per line "
                        "(NDJSON, .ndjson) instead",
                    )
                )
            try:
                document = orjson.loads(path.read_bytes().decode("utf-8-sig"))
            except (orjson.JSONDecodeError, UnicodeDecodeError) as exc:
                raise SourceError(
                    SourceProblem(path.name, "malformed_json", f"the file is not valid JSON: {exc}")
                ) from None
            for number, record in enumerate(document, start=1):
                if not isinstance(record, dict):
                    raise SourceError(
                        SourceProblem(
                            path.name,
                            "not_an_object",
                            f"record {number} is {_JSON_KINDS.get(type(record), 'a value')}, not an object",
                            number,
                        )
                    )
                out.write(orjson.dumps(record) + b"\n")
        else:
            for _, record in read_ndjson_file(path):
                out.write(orjson.dumps(record) + b"\n")


def _check_cut_inside_quotes(problems: _Problems, reader: CsvReader, last_row: int) -> None:
    """A last row cut inside a quoted value, with all its cells, passes the reader's width check.

    Work-around: sync.readers only suspects truncation when the cell count is off, so such a row
    is imported with a partial last value. Same heuristic as the reader: no final newline and an
    odd number of quotes on the last line.
    """
    tail: str = getattr(reader, "_last_line", "")
    cut = last_row and not tail.endswith(("\n", "\r")) and tail.count('"') % 2 == 1
    if cut and not any(p.rule == "truncated_row" for p in reader.problems):
        problems.add(
            "truncated_row",
            f"row {last_row} stops inside a quoted value at the end of the file (the file looks cut "
            "off); its last value is probably incomplete",
            last_row,
        )


def _check_cells(problems: _Problems, number: int, row: dict[str, str]) -> None:
    for column, value in row.items():
        size = len(value.encode("utf-8")) if len(value) * 4 > MAX_CELL_BYTES else 0
        if size > MAX_CELL_BYTES:
            problems.add(
                "cell_too_large",
                f"a cell of {human_size(size)} (the limit is {human_size(MAX_CELL_BYTES)} per cell): "
                "often an unclosed quote swallowing the rows after it",
                number,
                column,
                blocking=True,
            )
