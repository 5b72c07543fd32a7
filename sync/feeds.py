"""Feed sources: fetch every page of a JSON, CSV or XML feed over HTTP(S), parse it into records,
and keep only what is new since the last tick (a high-water mark, or the feed's own page cursor).

Plain domain code: the caller hands in an httpx client and the schedule's stored state, and gets
back the records plus the state to store once a run has been made from them.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from xml.etree import ElementTree

import httpx
import orjson

from sync.outbound import OutboundRefused, check_syntax
from sync.readers import SourceProblem, read_ndjson_file, sniff_delimiter

FeedFormatName = Literal["json", "csv", "xml"]
CursorKindName = Literal["none", "field", "page"]
MAX_PAGES = 1000
MAX_PAGE_BYTES = 64 * 1024 * 1024
MAX_REDIRECTS = 5
TIMEOUT_S = 30.0
# An XML feed never needs a DTD; refusing one shuts out entity expansion and external entities.
_DTD = re.compile(rb"<!(DOCTYPE|ENTITY)", re.IGNORECASE)


class FeedError(Exception):
    """The feed could not be fetched or read; the message is for the operator (never holds secrets)."""


@dataclass(frozen=True, slots=True)
class FeedSpec:
    """Where a feed lives and how to walk it."""

    url: str
    format: FeedFormatName = "json"
    records_path: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    cursor_kind: CursorKindName = "none"
    cursor_field: str | None = None
    cursor_param: str | None = None
    key_field: str | None = None
    next_page_path: str | None = None
    page_param: str | None = None
    max_pages: int = MAX_PAGES
    timeout_s: float = TIMEOUT_S


@dataclass(frozen=True, slots=True)
class FeedState:
    """What the last tick left behind: the high-water mark and the page cursor to resume from."""

    cursor_value: str | None = None
    page_cursor: str | None = None


@dataclass(slots=True)
class FeedFetch:
    """One tick's fetch: records not older than the mark, and the state to store after."""

    records: list[dict[str, Any]]
    pages: int
    fetched: int
    older: int  # records below the high-water mark (a feed that ignores the cursor parameter)
    state: FeedState


@dataclass(slots=True)
class _Page:
    records: list[dict[str, Any]]
    next_token: str | None


def check_url(url: str) -> str | None:
    """Why a feed URL cannot be used, judged without a DNS lookup (the fetch checks every address)."""
    return check_syntax(url, "feed URL")


def describe(url: str | httpx.URL) -> str:
    """The URL without its query string: enough to recognise it, without tokens passed in the query."""
    parsed = httpx.URL(str(url))
    return f"{parsed.scheme}://{parsed.netloc.decode()}{parsed.path}"


async def fetch_feed(http: httpx.AsyncClient, spec: FeedSpec, state: FeedState) -> FeedFetch:
    """Fetch every page from where the last tick stopped; raise FeedError with a clear reason."""
    params: dict[str, str] = {}
    if spec.cursor_kind == "field" and spec.cursor_param and state.cursor_value:
        params[spec.cursor_param] = state.cursor_value
    if spec.cursor_kind == "page" and spec.page_param and state.page_cursor:
        params[spec.page_param] = state.page_cursor
    url = httpx.URL(spec.url).copy_merge_params(params) if params else httpx.URL(spec.url)
    records: list[dict[str, Any]] = []
    seen_urls: set[str] = set()
    page_cursor = state.page_cursor
    pages = 0
    while True:
        if str(url) in seen_urls:
            break  # a feed that links a page to itself: stop rather than loop
        if pages >= spec.max_pages:
            raise FeedError(f"The feed has more than {spec.max_pages} pages; stopped at {describe(url)}.")
        seen_urls.add(str(url))
        pages += 1
        body, link_next = await _get(http, url, spec, pages)
        page = parse_page(body, spec, pages)
        records.extend(page.records)
        if page.next_token is not None:
            if page.next_token.startswith(("http://", "https://", "/")):
                url = _join(url, page.next_token, pages)
            elif spec.page_param:
                page_cursor = page.next_token
                url = httpx.URL(spec.url).copy_merge_params({spec.page_param: page.next_token})
            else:
                raise FeedError(
                    f"Page {pages} names a next page ({page.next_token!r}) that is not a URL; "
                    "set the page parameter it should be passed as."
                )
            if not page.records:
                break  # an empty page with a cursor: the feed has nothing newer yet
        elif link_next is not None:
            url = _join(url, link_next, pages)
        else:
            break
    return _select_new(records, spec, state, pages, page_cursor)


def _join(url: httpx.URL, link: str, page: int) -> httpx.URL:
    try:
        return url.join(link)
    except httpx.InvalidURL:
        raise FeedError(f"Page {page} links to an invalid next page.") from None


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return (url.scheme, url.host, url.port)


async def _get(
    http: httpx.AsyncClient, url: httpx.URL, spec: FeedSpec, page: int
) -> tuple[bytes, str | None]:
    """One page, following redirects itself: the feed's auth header goes only to the feed's own
    origin (scheme, host, port), and every hop is a new connection the client's guard checks."""
    home = _origin(httpx.URL(spec.url))
    where = f"page {page} ({describe(url)})"
    try:
        for _hop in range(MAX_REDIRECTS + 1):
            headers = spec.headers if _origin(url) == home else {}
            async with http.stream("GET", url, headers=headers, timeout=spec.timeout_s) as answer:
                location = answer.headers.get("location")
                if answer.is_redirect and location:
                    url = url.join(location)
                    if url.scheme not in ("http", "https"):
                        raise FeedError(f"{where} redirects to a {url.scheme or 'relative'} URL; refused.")
                    continue
                if answer.status_code >= 400:
                    # Only the status line: a body may be an internal service's error page.
                    hint = " Check the auth header." if answer.status_code in (401, 403) else ""
                    raise FeedError(f"The feed answered HTTP {answer.status_code} on {where}.{hint}")
                chunks: list[bytes] = []
                size = 0
                async for chunk in answer.aiter_bytes():
                    size += len(chunk)
                    if size > MAX_PAGE_BYTES:
                        raise FeedError(
                            f"{where} is larger than {MAX_PAGE_BYTES // (1024 * 1024)} MB; page the feed."
                        )
                    chunks.append(chunk)
                link = answer.links.get("next", {}).get("url")
                return b"".join(chunks), link
        raise FeedError(f"{where} redirects more than {MAX_REDIRECTS} times.")
    except OutboundRefused as exc:
        raise FeedError(f"Refused {where}: {exc}. An admin can allow it with OUTBOUND_ALLOW.") from None
    except httpx.TimeoutException:
        raise FeedError(f"The feed did not answer within {spec.timeout_s:g} s on {where}.") from None
    except httpx.InvalidURL:
        raise FeedError(f"{where} leads to an invalid URL.") from None
    except httpx.HTTPError as exc:
        raise FeedError(f"Cannot fetch {where}: {type(exc).__name__} {exc}".strip()) from None


# ---------------------------------------------------------------- parsing


def parse_page(body: bytes, spec: FeedSpec, page: int = 1) -> _Page:
    """The records of one page, and the token or URL of the next page if the body names one."""
    if spec.format == "csv":
        return _Page(parse_csv(body, page), None)
    if spec.format == "xml":
        root = _xml_root(body, page)
        token = root.findtext(spec.next_page_path) if spec.next_page_path else None
        return _Page(xml_records(root, spec.records_path), (token or "").strip() or None)
    document = _json_document(body, page)
    records = json_records(document, spec.records_path, page)
    token = (
        _lookup(document, spec.next_page_path) if spec.next_page_path and isinstance(document, dict) else None
    )
    return _Page(records, str(token) if token not in (None, "") else None)


def _json_document(body: bytes, page: int) -> Any:
    text = body.decode("utf-8-sig", "replace").strip()
    if not text:
        return []
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        lines = [line for line in text.splitlines() if line.strip()]
        if len(lines) > 1:  # NDJSON: one object per line
            try:
                return [orjson.loads(line) for line in lines]
            except orjson.JSONDecodeError:
                pass
        raise FeedError(f"Page {page} is not valid JSON: {exc}") from None


def json_records(document: Any, path: str, page: int = 1) -> list[dict[str, Any]]:
    """The array of record objects at ``path`` (dotted) in a JSON document."""
    found = _lookup(document, path) if path else document
    if found is None and path:
        keys = ", ".join(sorted(document)) if isinstance(document, dict) else "none"
        raise FeedError(f"Page {page} has nothing at the records path {path!r} (its keys: {keys}).")
    if isinstance(found, dict) and not path:
        lists = [k for k, v in found.items() if isinstance(v, list)]
        hint = f" Set the records path, e.g. {lists[0]!r}." if lists else ""
        raise FeedError(f"Page {page} is a JSON object, not an array of records.{hint}")
    if not isinstance(found, list):
        raise FeedError(
            f"Page {page}: {path or 'the document'} is a {type(found).__name__}, not an array of records."
        )
    for number, record in enumerate(found, start=1):
        if not isinstance(record, dict):
            raise FeedError(f"Page {page}, record {number} is a {type(record).__name__}, not an object.")
    return found


def parse_csv(body: bytes, page: int = 1) -> list[dict[str, Any]]:
    """CSV records keyed by the header row."""
    text = body.decode("utf-8-sig", "replace")
    if not text.strip():
        return []
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sniff_delimiter(text[:65536]))
    try:
        header = next(reader)
        rows = [row for row in reader if any(cell.strip() for cell in row)]
    except csv.Error as exc:
        raise FeedError(f"Page {page} is not readable CSV: {exc}") from None
    names = [name.strip() for name in header]
    if not all(names) or len(set(names)) != len(names):
        raise FeedError(f"Page {page}: the CSV header needs distinct, non-empty column names.")
    return [dict(zip(names, row + [""] * (len(names) - len(row)), strict=False)) for row in rows]


def _xml_root(body: bytes, page: int) -> ElementTree.Element:
    if _DTD.search(body):
        raise FeedError(f"Page {page} declares a DTD or entities; XML feeds with a DOCTYPE are refused.")
    try:
        # Safe without defusedxml: no DTD got this far, so no entity can expand or load a file.
        return ElementTree.fromstring(body)  # noqa: S314
    except ElementTree.ParseError as exc:
        raise FeedError(f"Page {page} is not valid XML: {exc}") from None


def xml_records(root: ElementTree.Element, tag: str = "") -> list[dict[str, Any]]:
    """Each record element as a dict: child text by tag (namespaces dropped), repeats as lists."""
    elements = [e for e in root.iter() if _local(e.tag) == tag] if tag else list(root)
    return [_element_dict(element) for element in elements]


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1].split(":")[-1]


def _element_value(element: ElementTree.Element) -> Any:
    if len(element) == 0 and not element.attrib:
        return (element.text or "").strip()
    return _element_dict(element)


def _element_dict(element: ElementTree.Element) -> dict[str, Any]:
    record: dict[str, Any] = {f"@{_local(k)}": v for k, v in element.attrib.items()}
    for child in element:
        name, value = _local(child.tag), _element_value(child)
        if name in record:
            existing = record[name]
            record[name] = [*existing, value] if isinstance(existing, list) else [existing, value]
        else:
            record[name] = value
    text = (element.text or "").strip()
    if text and len(element) == 0:
        record["#text"] = text
    return record


def _lookup(document: Any, path: str | None) -> Any:
    """A value by dotted path (``meta.next``); None when any step is missing."""
    value = document
    for part in (path or "").split("."):
        if not part:
            continue
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


# ---------------------------------------------------------------- incremental selection


def cursor_key(value: Any) -> tuple[int, Any]:
    """Order cursor values: timestamps as instants, then numbers, then text."""
    text = str(value).strip()
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return (0, stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC))
    except ValueError:
        pass
    try:
        return (1, float(text))
    except ValueError:
        return (2, text)


def _select_new(
    records: list[dict[str, Any]], spec: FeedSpec, state: FeedState, pages: int, page_cursor: str | None
) -> FeedFetch:
    mark = state.cursor_value
    if spec.cursor_kind != "field" or not spec.cursor_field:
        return FeedFetch(records, pages, len(records), 0, FeedState(mark, page_cursor))
    floor = cursor_key(mark) if mark else None
    kept: list[dict[str, Any]] = []
    high, high_key = mark, floor
    for record in records:
        value = _lookup(record, spec.cursor_field)
        if value in (None, ""):
            kept.append(record)  # no cursor to judge by: the ledger decides
            continue
        key = cursor_key(value)
        if floor is not None and key < floor:
            continue
        kept.append(record)
        if high_key is None or key > high_key:
            high, high_key = str(value), key
    return FeedFetch(kept, pages, len(records), len(records) - len(kept), FeedState(high, page_cursor))


def record_key(record: dict[str, Any], key_field: str | None) -> str:
    """A stable hash naming the record: its key field when set and present, else its whole content."""
    value = _lookup(record, key_field) if key_field else None
    raw = (
        orjson.dumps(value) if value not in (None, "") else orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    )
    return hashlib.sha256(raw).hexdigest()


def record_digest(record: dict[str, Any]) -> str:
    """A hash of the record's content: a record seen before with another digest has changed."""
    return hashlib.sha256(orjson.dumps(record, option=orjson.OPT_SORT_KEYS)).hexdigest()


# ---------------------------------------------------------------- the stored records file


def write_ndjson(path: Path, records: list[dict[str, Any]]) -> int:
    """Store records one JSON object per line (the run reads them back with RecordFileReader)."""
    with open(path, "wb") as out:
        for record in records:
            out.write(orjson.dumps(record, option=orjson.OPT_NON_STR_KEYS))
            out.write(b"\n")
        return out.tell()


class RecordFileReader:
    """Rows of a stored NDJSON records file, shaped like CsvReader for the run loop."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.problems: list[SourceProblem] = []

    def __iter__(self) -> Iterator[tuple[int, dict[str, Any]]]:
        return read_ndjson_file(self.path)

    def close(self) -> None:
        """Nothing held open between rows."""

    def __enter__(self) -> RecordFileReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def is_record_file(stored_as: str) -> bool:
    """Feed ticks store their records as ``*.ndjson``; uploads are CSV."""
    return stored_as.endswith(".ndjson")


# ---------------------------------------------------------------- testing a feed before saving


@dataclass(slots=True)
class FirstPage:
    """A feed's first page as "Test feed" shows it: records, and where they were found."""

    records: list[dict[str, Any]]
    records_path: str
    detected: bool  # the records path was found here, not given
    candidates: list[str]  # every path of the page that holds an array of objects


def record_arrays(document: Any, prefix: str = "", depth: int = 0) -> list[str]:
    """Dotted paths of a JSON document that hold a non-empty array of objects (records)."""
    if not isinstance(document, dict) or depth > 2:
        return []
    found: list[str] = []
    for key, value in document.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            found.append(path)
        elif isinstance(value, dict):
            found.extend(record_arrays(value, path, depth + 1))
    return found


async def fetch_first_page(http: httpx.AsyncClient, spec: FeedSpec) -> FirstPage:
    """Fetch and read only the feed's first page; an empty JSON records path is detected."""
    url = httpx.URL(spec.url)
    body, _ = await _get(http, url, spec, 1)
    if spec.format != "json":
        return FirstPage(parse_page(body, spec, 1).records, spec.records_path, False, [])
    document = _json_document(body, 1)
    candidates = record_arrays(document)
    path, detected = spec.records_path, False
    if not path and isinstance(document, dict) and candidates:
        path, detected = candidates[0], True
    return FirstPage(json_records(document, path, 1), path, detected, candidates)
