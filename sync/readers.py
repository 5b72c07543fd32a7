"""Source readers: CSV files streamed with bounded memory, and JSON / NDJSON records.

Every reader yields ``(row_number, row_dict)`` with 1-based data row numbers (the first row after
the header is 1), so errors point at the row an operator sees in a spreadsheet (row n + 1).
"""

from __future__ import annotations

import codecs
import csv
import os
import re
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import charset_normalizer
import orjson

from sync.issues import Issue, Severity

SAMPLE_BYTES = 64 * 1024
FALLBACK_ENCODING = "cp1252"
# Single-byte code pages for other scripts, worth naming when charset-normalizer detects them.
_OTHER_SCRIPTS = {
    "cp1251": "Cyrillic",
    "koi8_r": "Cyrillic",
    "cp1253": "Greek",
    "cp1254": "Turkish",
    "cp1255": "Hebrew",
    "cp1256": "Arabic",
    "cp874": "Thai",
    "shift_jis": "Japanese",
    "cp932": "Japanese",
    "gb2312": "Chinese",
    "gb18030": "Chinese",
    "big5": "Chinese",
    "euc_kr": "Korean",
}
DEFAULT_MAX_CELL_BYTES = 32 * 1024 * 1024
_DELIMITERS = ",;\t|"
# The menu path spelled out: "export as CSV" alone leaves people hunting for it.
SAVE_AS_CSV = "save it as CSV (File > Save as > CSV UTF-8), then upload the .csv file"
_MAGIC = {
    b"PK\x03\x04": "a ZIP archive, such as an Excel .xlsx workbook: open it in your spreadsheet and "
    + SAVE_AS_CSV,
    b"\xd0\xcf\x11\xe0": "an old Excel .xls workbook: open it in Excel and " + SAVE_AS_CSV,
    b"%PDF": "a PDF document",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"\x1f\x8b": "a gzip archive: decompress it first",
}


@dataclass(slots=True, frozen=True)
class SourceProblem:
    """A problem with the source file: which file, row and column, the rule broken, and why."""

    file: str
    rule: str
    message: str
    row: int | None = None
    column: str | None = None
    severity: Severity = "error"

    def to_issue(self) -> Issue:
        """The problem as a row Issue (for dry-run summaries and RowError records)."""
        return Issue(self.rule, self.message, self.column, self.severity, self.row)


CsvProblem = SourceProblem


class SourceError(ValueError):
    """The source cannot be read at all (binary, empty, bad header, undecodable)."""

    def __init__(self, problem: SourceProblem) -> None:
        super().__init__(problem.message)
        self.problem = problem


def _fail(
    file: str, rule: str, message: str, row: int | None = None, column: str | None = None
) -> SourceError:
    return SourceError(SourceProblem(file, rule, message, row, column))


# ---------------------------------------------------------------- encoding


def detect_encoding(path: str | os.PathLike[str]) -> tuple[str, str | None]:
    """(codec name, note for the operator or None); SourceError for binary or empty files."""
    name = os.fspath(path)
    with open(name, "rb") as handle:
        head = handle.read(SAMPLE_BYTES)
        if not head.strip(b" \t\r\n\xef\xbb\xbf\xff\xfe\x00"):
            raise _fail(name, "empty_file", f"{Path(name).name} is empty")
        if head.startswith(codecs.BOM_UTF8):
            return "utf-8-sig", None
        if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return "utf-16", None
        for magic, what in _MAGIC.items():
            if head.startswith(magic):
                raise _fail(name, "binary_file", f"{Path(name).name} is not a CSV file: it looks like {what}")
        if b"\x00" in head:
            if head[1::2].count(0) > len(head) // 3 or head[0::2].count(0) > len(head) // 3:
                raise _fail(
                    name,
                    "binary_file",
                    f"{Path(name).name} looks like UTF-16 text without a byte-order mark: "
                    "save it again as CSV UTF-8",
                )
            raise _fail(
                name, "binary_file", f"{Path(name).name} contains NUL bytes: it is a binary file, not CSV"
            )
        handle.seek(0)
        bad_offset = _first_invalid_utf8(handle)
    if bad_offset is None:
        return "utf-8", None
    note = (
        f"the file is not valid UTF-8 (first bad byte at offset {bad_offset}); it was read as Windows-1252 "
        "(Western European). Check accented letters in the preview, or re-export the file as UTF-8"
    )
    guess = charset_normalizer.from_bytes(head).best()
    if guess is not None and guess.encoding in _OTHER_SCRIPTS:
        note += (
            f"; it may rather be {guess.encoding} ({_OTHER_SCRIPTS[guess.encoding]}): choose that encoding"
        )
    return FALLBACK_ENCODING, note


def _first_invalid_utf8(handle: IO[bytes]) -> int | None:
    """Offset of the first byte that is not UTF-8, scanning in chunks (bounded memory)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    while chunk := handle.read(1024 * 1024):
        try:
            decoder.decode(chunk, final=False)
        except UnicodeDecodeError as exc:
            return offset + exc.start
        offset += len(chunk)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return offset
    return None


def sniff_delimiter(sample: str) -> str:
    """Guess the delimiter from a text sample (csv.Sniffer, then the most frequent candidate)."""
    cut = sample.rfind("\n")
    text = sample[:cut] if cut > 0 else sample
    first_line = text.split("\n", 1)[0]
    try:
        found = csv.Sniffer().sniff(text, delimiters=_DELIMITERS).delimiter
        if found in first_line:
            return found
    except csv.Error:
        pass
    counts = {delim: first_line.count(delim) for delim in _DELIMITERS}
    best = max(counts, key=lambda delim: counts[delim])
    return best if counts[best] else ","


# ---------------------------------------------------------------- CSV


class CsvReader:
    """Streams the data rows of one CSV file; opens and checks the header on construction.

    Fatal problems raise SourceError; row problems (missing or extra cells, a truncated last line)
    are collected in ``problems`` while iteration continues. Rows with missing cells are yielded
    without those keys (missing differs from empty); rows with extra cells are not yielded.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        encoding: str | None = None,
        delimiter: str | None = None,
        max_cell_bytes: int = DEFAULT_MAX_CELL_BYTES,
    ) -> None:
        self.path = os.fspath(path)
        self.file = Path(self.path).name
        self.problems: list[SourceProblem] = []
        self.encoding_note: str | None = None
        if encoding is None:
            encoding, self.encoding_note = detect_encoding(self.path)
            if self.encoding_note:
                self.problems.append(
                    SourceProblem(self.file, "encoding_fallback", self.encoding_note, None, None, "warning")
                )
        self.encoding = encoding
        # csv's limit is process-wide; raising it only ever widens what every reader accepts.
        csv.field_size_limit(max(csv.field_size_limit(), max_cell_bytes))
        self.max_cell_bytes = max_cell_bytes
        # cp1252 leaves five byte values undefined; replace them rather than fail half-way through.
        errors = "replace" if encoding == FALLBACK_ENCODING else "strict"
        self._handle = open(self.path, encoding=encoding, newline="", errors=errors)  # noqa: SIM115
        try:
            self.delimiter = delimiter or sniff_delimiter(self._handle.read(SAMPLE_BYTES))
            self._handle.seek(0)
            self._last_line = self._read_last_line()
            self._records = -1  # the header is record 0, data rows count from 1
            self._reader = csv.reader(self._handle, delimiter=self.delimiter)
            self.headers = self._read_header()
            self._pending = self._next_record()
            if self._pending is None:
                raise _fail(self.file, "header_only", f"{self.file} has a header row but no data rows")
        except BaseException:
            self._handle.close()
            raise
        self._iterated = False

    def _read_last_line(self) -> str:
        """The file's last physical line ("" when the file ends with a newline), to spot a cut-off file."""
        with open(self.path, "rb") as raw:
            head = raw.read(2)
            size = raw.seek(0, os.SEEK_END)
            start = max(0, size - SAMPLE_BYTES)
            if self.encoding == "utf-16":
                start += start % 2
            raw.seek(start)
            tail = raw.read()
        if self.encoding == "utf-16":
            codec = "utf-16-be" if head == codecs.BOM_UTF16_BE else "utf-16-le"
            text = tail.decode(codec, errors="replace")
        else:
            text = tail.decode(self.encoding, errors="replace")
        return re.split(r"\r\n|\n|\r", text)[-1]

    def _next_record(self) -> tuple[int, list[str]] | None:
        """The next non-blank record and its data row number, or None at the end."""
        while True:
            try:
                cells = next(self._reader)
            except StopIteration:
                return None
            except csv.Error as exc:
                raise self._csv_error(exc) from None
            except UnicodeDecodeError as exc:
                raise _fail(
                    self.file, "bad_encoding", f"cannot decode {self.file} as {self.encoding}: {exc}"
                ) from None
            self._records += 1  # blank records count too, so numbers match spreadsheet rows
            if cells and any(cells):
                return self._records, cells

    def _csv_error(self, exc: csv.Error) -> SourceError:
        row = self._records + 1
        if "field larger than field limit" in str(exc):
            return _fail(
                self.file,
                "cell_too_large",
                f"row {row} has a cell larger than {self.max_cell_bytes // (1024 * 1024)} MB "
                "(often an unclosed quote swallowing the rest of the file)",
                row,
            )
        return _fail(self.file, "malformed_csv", f"row {row} cannot be read as CSV: {exc}", row)

    def _read_header(self) -> list[str]:
        record = self._next_record()
        if record is None:
            raise _fail(self.file, "empty_file", f"{self.file} has no header row")
        headers = [cell.strip().lstrip("\ufeff").strip() for cell in record[1]]
        while len(headers) > 1 and headers[-1] == "" and self._only_trailing_blank(headers):
            headers.pop()  # "a,b,c," exports: a trailing delimiter is not a column
        seen: dict[str, int] = {}
        for index, name in enumerate(headers, start=1):
            if not name:
                after = f" (after {headers[index - 2]!r})" if index > 1 else ""
                raise _fail(self.file, "empty_header", f"column {index}{after} has no header name", 0)
            if name in seen:
                raise _fail(
                    self.file,
                    "duplicate_header",
                    f"the header {name!r} appears twice (columns {seen[name]} and {index}); rename one",
                    0,
                    name,
                )
            seen[name] = index
        return headers

    @staticmethod
    def _only_trailing_blank(headers: list[str]) -> bool:
        return any(headers[:-1]) and headers[-1] == ""

    def __iter__(self) -> Iterator[tuple[int, dict[str, str]]]:
        if self._iterated:
            raise RuntimeError("a CsvReader can be iterated once; open the file again")
        self._iterated = True
        try:
            yield from self._rows()
        finally:
            self._handle.close()

    def _rows(self) -> Iterator[tuple[int, dict[str, str]]]:
        headers = self.headers
        width = len(headers)
        record = self._pending
        while record is not None:
            number, cells = record
            if len(cells) == width:
                yield number, dict(zip(headers, cells, strict=True))
                record = yield from self._well_formed_rows(headers, width)
                continue
            following = self._next_record()
            if following is None and self._last_line and self._is_truncated(cells):
                self.problems.append(
                    SourceProblem(
                        self.file,
                        "truncated_row",
                        f"row {number} stops mid-row at the end of the file (the file looks cut off); "
                        "it was not imported",
                        number,
                    )
                )
            elif len(cells) < width:
                missing = headers[len(cells) :]
                self.problems.append(
                    SourceProblem(
                        self.file,
                        "missing_cells",
                        f"row {number} has {len(cells)} cells for {width} columns; "
                        f"{', '.join(missing)} treated as missing",
                        number,
                        missing[0],
                        "warning",
                    )
                )
                yield number, dict(zip(headers, cells, strict=False))
            elif not any(cell.strip() for cell in cells[width:]):
                yield number, dict(zip(headers, cells[:width], strict=True))  # trailing empty cells
            else:
                self.problems.append(
                    SourceProblem(
                        self.file,
                        "extra_cells",
                        f"row {number} has {len(cells)} cells but the header has {width} columns "
                        "(an unquoted delimiter inside a value?); it was not imported",
                        number,
                    )
                )
            record = following

    def _well_formed_rows(
        self, headers: list[str], width: int
    ) -> Generator[tuple[int, dict[str, str]], None, tuple[int, list[str]] | None]:
        """Fast loop over rows with the right cell count; returns the first other record (None at the end)."""
        try:
            for cells in self._reader:
                self._records += 1
                if len(cells) == width:
                    yield self._records, dict(zip(headers, cells, strict=False))
                elif cells and any(cells):
                    return self._records, cells
        except csv.Error as exc:
            raise self._csv_error(exc) from None
        except UnicodeDecodeError as exc:
            raise _fail(
                self.file, "bad_encoding", f"cannot decode {self.file} as {self.encoding}: {exc}"
            ) from None
        return None

    def _is_truncated(self, cells: list[str]) -> bool:
        return len(cells) < len(self.headers) or self._last_line.count('"') % 2 == 1

    def issues(self) -> list[Issue]:
        """Row problems found so far, as Issues for ``pipeline.dry_run(source_problems=...)``."""
        return [problem.to_issue() for problem in self.problems]

    def close(self) -> None:
        """Close the file (iteration closes it too)."""
        self._handle.close()

    def __enter__(self) -> CsvReader:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def read_csv(path: str | os.PathLike[str], **options: Any) -> CsvReader:
    """Open a CSV file for streaming; see CsvReader."""
    return CsvReader(path, **options)


# ---------------------------------------------------------------- JSON


def read_json(data: str | bytes, *, source: str = "JSON") -> Iterator[tuple[int, dict[str, Any]]]:
    """Rows from a JSON array of objects, a single object, or NDJSON (one object per line)."""
    text = data.decode("utf-8-sig") if isinstance(data, bytes) else data.lstrip("\ufeff")
    stripped = text.strip()
    if not stripped:
        raise _fail(source, "empty_file", f"{source} is empty")
    if stripped.startswith("["):
        try:
            records = orjson.loads(stripped)
        except orjson.JSONDecodeError as exc:
            raise _fail(source, "malformed_json", f"{source} is not valid JSON: {exc}") from None
        for number, record in enumerate(records, start=1):
            yield number, _as_record(record, source, number)
        return
    try:
        whole = orjson.loads(stripped)
    except orjson.JSONDecodeError:
        whole = None
    if isinstance(whole, dict):
        yield 1, whole
        return
    yield from _ndjson_lines(stripped.splitlines(), source)


def read_ndjson_file(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Stream an NDJSON file line by line (bounded memory)."""
    name = os.fspath(path)
    with open(name, encoding="utf-8-sig") as handle:
        yield from _ndjson_lines(handle, Path(name).name)


def _ndjson_lines(lines: Any, source: str) -> Iterator[tuple[int, dict[str, Any]]]:
    number = 0
    for line in lines:
        if not line.strip():
            continue
        number += 1
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise _fail(
                source, "malformed_json", f"record {number} is not valid JSON: {exc}", number
            ) from None
        yield number, _as_record(record, source, number)


def _as_record(record: Any, source: str, number: int) -> dict[str, Any]:
    if not isinstance(record, dict):
        kind = type(record).__name__
        raise _fail(
            source, "not_an_object", f"record {number} is a {kind}, not an object with named fields", number
        )
    return record
