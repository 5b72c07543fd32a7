"""Readers on good and bad files: encodings, delimiters, headers, ragged rows, binary, huge cells, JSON."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from sync.mapping import Mapping, Target, TargetKind, column
from sync.pipeline import dry_run, run_pipeline
from sync.readers import CsvReader, SourceError, read_csv, read_json, read_ndjson_file


def _write(tmp_path: Path, data: bytes, name: str = "f.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _rows(path: Path, **options: object) -> list[tuple[int, dict[str, str]]]:
    return list(read_csv(path, **options))


SIMPLE = 'Email,Name,Total\na@x.com,Zoë,"1,234.50"\nb@x.com,Łukasz,5\n'
EXPECTED = [
    (1, {"Email": "a@x.com", "Name": "Zoë", "Total": "1,234.50"}),
    (2, {"Email": "b@x.com", "Name": "Łukasz", "Total": "5"}),
]


@pytest.mark.parametrize(
    ("encoded", "encoding"),
    [
        (SIMPLE.encode("utf-8"), "utf-8"),
        (b"\xef\xbb\xbf" + SIMPLE.encode("utf-8"), "utf-8-sig"),
        (b"\xff\xfe" + SIMPLE.encode("utf-16-le"), "utf-16"),
        (b"\xfe\xff" + SIMPLE.encode("utf-16-be"), "utf-16"),
    ],
)
def test_encodings_with_and_without_bom(tmp_path: Path, encoded: bytes, encoding: str) -> None:
    reader = read_csv(_write(tmp_path, encoded))
    assert reader.encoding == encoding
    assert reader.headers == ["Email", "Name", "Total"]  # no BOM glued to the first header
    assert list(reader) == EXPECTED
    assert reader.problems == []


def test_cp1252_fallback_is_reported(tmp_path: Path) -> None:
    text = "Email,City\na@x.com,Café München\nb@x.com,“Quoted” – €5\n"
    reader = read_csv(_write(tmp_path, text.encode("cp1252")))
    assert reader.encoding == "cp1252"
    assert reader.encoding_note and "not valid UTF-8" in reader.encoding_note
    assert "offset 22" in reader.encoding_note  # the é of Café
    rows = list(reader)
    assert rows[0][1]["City"] == "Café München"
    assert rows[1][1]["City"] == "“Quoted” – €5"
    assert [p.rule for p in reader.problems] == ["encoding_fallback"]
    assert reader.problems[0].severity == "warning"


def test_non_utf8_byte_late_in_a_large_file_is_found(tmp_path: Path) -> None:
    body = "Email,Note\n" + "a@x.com,plain ascii text\n" * 20000 + "b@x.com,na\xefve\n"
    reader = read_csv(_write(tmp_path, body.encode("cp1252")))
    assert reader.encoding == "cp1252"
    assert list(reader)[-1][1]["Note"] == "naïve"


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_delimiter_sniffing(tmp_path: Path, delimiter: str) -> None:
    text = f'Email{delimiter}Amount{delimiter}Note\na@x.com{delimiter}"1,5"{delimiter}"x, y; z"\n'
    reader = read_csv(_write(tmp_path, text.encode()))
    assert reader.delimiter == delimiter
    assert list(reader) == [(1, {"Email": "a@x.com", "Amount": "1,5", "Note": "x, y; z"})]


def test_quoted_newlines_and_blank_lines_keep_row_numbers(tmp_path: Path) -> None:
    text = 'Email,Note\na@x.com,"line one\nline two"\n\nc@x.com,third\r\n'
    rows = _rows(_write(tmp_path, text.encode()))
    assert rows == [
        (1, {"Email": "a@x.com", "Note": "line one\nline two"}),
        (3, {"Email": "c@x.com", "Note": "third"}),
    ]


def test_empty_header_is_named(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as err:
        read_csv(_write(tmp_path, b"Email,,Total\na,b,c\n"))
    assert err.value.problem.rule == "empty_header"
    assert "column 2" in str(err.value) and "'Email'" in str(err.value)


def test_trailing_delimiter_is_not_a_column(tmp_path: Path) -> None:
    assert _rows(_write(tmp_path, b"Email,Total,\na@x.com,5,\n")) == [(1, {"Email": "a@x.com", "Total": "5"})]


def test_duplicate_header_is_named(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as err:
        read_csv(_write(tmp_path, b"Email,Total, Email \na,b,c\n"))
    assert err.value.problem.rule == "duplicate_header"
    assert err.value.problem.column == "Email"
    assert "columns 1 and 3" in str(err.value)


def test_missing_and_extra_cells_are_reported_with_row_numbers(tmp_path: Path) -> None:
    text = "Email,First,Last\na@x.com,Ann,Lee\nb@x.com,Bo\nc@x.com,Cy,Do,EXTRA\nd@x.com,Di,Ek,,\n"
    reader = read_csv(_write(tmp_path, text.encode()))
    rows = list(reader)
    assert rows == [
        (1, {"Email": "a@x.com", "First": "Ann", "Last": "Lee"}),
        (2, {"Email": "b@x.com", "First": "Bo"}),  # Last is missing, not empty
        (4, {"Email": "d@x.com", "First": "Di", "Last": "Ek"}),  # trailing empty cells are harmless
    ]
    assert [(p.rule, p.row, p.severity) for p in reader.problems] == [
        ("missing_cells", 2, "warning"),
        ("extra_cells", 3, "error"),
    ]
    assert reader.problems[0].column == "Last"


def test_truncated_last_line(tmp_path: Path) -> None:
    reader = read_csv(_write(tmp_path, b'Email,Note,Total\na@x.com,ok,1\nb@x.com,"cut off mid'))
    assert list(reader) == [(1, {"Email": "a@x.com", "Note": "ok", "Total": "1"})]
    assert [(p.rule, p.row) for p in reader.problems] == [("truncated_row", 2)]


def test_last_line_without_newline_is_fine(tmp_path: Path) -> None:
    assert _rows(_write(tmp_path, b"Email,Total\na@x.com,1")) == [(1, {"Email": "a@x.com", "Total": "1"})]


def test_ten_megabyte_cell(tmp_path: Path) -> None:
    big = "x" * (10 * 1024 * 1024)
    path = _write(tmp_path, f"Email,Body\na@x.com,{big}\nb@x.com,small\n".encode())
    rows = _rows(path)
    assert len(rows[0][1]["Body"]) == len(big)
    # The reader delivers it; validation refuses it because Klaviyo strings stop at 100 KB.
    mapping = Mapping(
        name="m",
        target=Target(kind=TargetKind.EVENT, metric="Note"),
        fields=[column("Email", "email"), column("Body", "properties.Body")],
    )
    results = list(run_pipeline(mapping, rows))
    assert [e.rule for e in results[0].errors] == ["string_too_long"]
    assert results[1].ok


def test_cell_over_the_limit_is_a_clear_error(tmp_path: Path) -> None:
    path = _write(tmp_path, b'Email,Body\na@x.com,ok\nb@x.com,"' + b"y" * 3000 + b'"\n')
    reader = read_csv(path, max_cell_bytes=1000)
    import csv

    limit = csv.field_size_limit()
    try:
        csv.field_size_limit(1000)  # the process-wide limit may have been raised by another test
        reader = read_csv(path, max_cell_bytes=1000)
        with pytest.raises(SourceError) as err:
            list(reader)
        assert err.value.problem.rule == "cell_too_large"
        assert err.value.problem.row == 2
    finally:
        csv.field_size_limit(limit)


def test_excel_serial_dates_in_a_csv(tmp_path: Path) -> None:
    path = _write(tmp_path, b"Email,Ordered\na@x.com,45306.75\nb@x.com,45306\n")
    mapping = Mapping(
        name="m",
        target=Target(kind=TargetKind.EVENT, metric="Placed Order"),
        fields=[column("Email", "email"), column("Ordered", "time")],
    )
    results = list(run_pipeline(mapping, read_csv(path)))
    times = [r.items[0]["attributes"]["events"]["data"][0]["attributes"]["time"] for r in results]
    assert times == ["2024-01-15T18:00:00+00:00", "2024-01-15T00:00:00+00:00"]
    assert [w.rule for w in results[1].warnings] == ["date_without_time"]


@pytest.mark.parametrize("data", [b"", b"\n\n  \n", b"\xef\xbb\xbf"])
def test_empty_file(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(SourceError) as err:
        read_csv(_write(tmp_path, data))
    assert err.value.problem.rule == "empty_file"


def test_header_only_file(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as err:
        read_csv(_write(tmp_path, b"Email,Total\n\n"))
    assert err.value.problem.rule == "header_only"


@pytest.mark.parametrize(
    ("data", "hint"),
    [
        (
            b"PK\x03\x04\x14\x00\x06\x00" + b"\x00" * 50,
            "xlsx workbook: open it in your spreadsheet and save it as CSV (File > Save as > CSV UTF-8)",
        ),
        (
            b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 50,
            "xls workbook: open it in Excel and save it as CSV (File > Save as > CSV UTF-8)",
        ),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, "PNG"),
        (b"Email,Total\na\x00b,1\n", "NUL"),
    ],
)
def test_binary_file_renamed_csv(tmp_path: Path, data: bytes, hint: str) -> None:
    with pytest.raises(SourceError) as err:
        read_csv(_write(tmp_path, data, "export.csv"))
    assert err.value.problem.rule == "binary_file"
    assert hint in str(err.value)
    assert err.value.problem.file.endswith("export.csv")


def test_reader_streams_with_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    with path.open("w") as out:
        out.write("Email,Total,Note\n")
        for i in range(100_000):
            out.write(f"user{i}@x.com,{i}.50,some note text for row {i}\n")
    tracemalloc.start()
    count = sum(1 for _ in read_csv(path))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == 100_000
    assert peak < 3 * 1024 * 1024  # the file is ~4.5 MB; the reader holds a window, not the file


def test_reader_iterates_once_and_closes(tmp_path: Path) -> None:
    reader = read_csv(_write(tmp_path, SIMPLE.encode()))
    assert isinstance(reader, CsvReader)
    list(reader)
    with pytest.raises(RuntimeError):
        list(reader)


def test_problems_feed_the_dry_run(tmp_path: Path) -> None:
    reader = read_csv(_write(tmp_path, b"Email,Total\na@x.com,1\nb@x.com,2,3\n"))
    mapping = Mapping(
        name="m",
        target=Target(kind=TargetKind.EVENT, metric="X"),
        fields=[column("Email", "email"), column("Total", "value")],
    )
    summary = dry_run(mapping, reader)
    assert (summary.rows, summary.rows_ok, summary.rows_rejected) == (2, 1, 1)
    assert summary.errors["extra_cells"].examples == [2]
    again = dry_run(mapping, [], source_problems=reader.issues())
    assert again.errors["extra_cells"].count == 1


def test_utf16_without_bom_gets_a_hint(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as err:
        read_csv(_write(tmp_path, "Email,Total\na@x.com,1\n".encode("utf-16-le")))
    assert "UTF-16" in str(err.value)


# ---------------------------------------------------------------- JSON


def test_json_array() -> None:
    data = '[{"email": "a@x.com", "customer": {"id": 1}}, {"email": "b@x.com"}]'
    assert list(read_json(data)) == [
        (1, {"email": "a@x.com", "customer": {"id": 1}}),
        (2, {"email": "b@x.com"}),
    ]


def test_ndjson_and_single_object() -> None:
    assert list(read_json(b'{"a": 1}\n\n{"a": 2}\n')) == [(1, {"a": 1}), (2, {"a": 2})]
    assert list(read_json('\ufeff{"a": {"b": [1, 2]}}')) == [(1, {"a": {"b": [1, 2]}})]


@pytest.mark.parametrize(
    ("data", "rule"),
    [
        ("", "empty_file"),
        ("[1, 2]", "not_an_object"),
        ("[{]", "malformed_json"),
        ('{"a": 1}\n{oops', "malformed_json"),
    ],
)
def test_bad_json(data: str, rule: str) -> None:
    with pytest.raises(SourceError) as err:
        list(read_json(data))
    assert err.value.problem.rule == rule


def test_cp1252_undefined_bytes_do_not_crash(tmp_path: Path) -> None:
    reader = read_csv(_write(tmp_path, b"Email,Note\na@x.com,odd \x81 byte \xe9\n"))
    assert list(reader)[0][1]["Note"] == "odd \ufffd byte é"


def test_ndjson_file(tmp_path: Path) -> None:
    path = _write(tmp_path, b'{"a": 1}\n{"a": "\xc3\xa9"}\n', "feed.ndjson")
    assert list(read_ndjson_file(path)) == [(1, {"a": 1}), (2, {"a": "é"})]


def test_short_last_row_in_a_complete_file_is_missing_cells_not_truncation(tmp_path: Path) -> None:
    reader = read_csv(_write(tmp_path, b"Email,Note,Total\na@x.com,ok,1\nb@x.com,short\n"))
    assert [row for _, row in reader][-1] == {"Email": "b@x.com", "Note": "short"}
    assert [p.rule for p in reader.problems] == ["missing_cells"]


def test_truncated_utf16_file(tmp_path: Path) -> None:
    data = b"\xff\xfe" + 'Email,Note,Total\na@x.com,ok,1\nb@x.com,"cut'.encode("utf-16-le")
    reader = read_csv(_write(tmp_path, data))
    assert len(list(reader)) == 1
    assert [p.rule for p in reader.problems] == ["truncated_row"]
