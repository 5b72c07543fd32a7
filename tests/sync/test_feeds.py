"""Feed parsing and the incremental selection, without a network (the fetch is covered end to end
in tests/workers/test_schedules.py against a loopback feed server)."""

from __future__ import annotations

import pytest

from sync.feeds import (
    FeedError,
    FeedSpec,
    FeedState,
    _select_new,
    check_url,
    cursor_key,
    parse_page,
    record_key,
)


def test_json_records_by_path_and_next_page():
    body = b'{"data": {"orders": [{"id": 1}, {"id": 2}]}, "meta": {"next": "abc"}}'
    page = parse_page(
        body, FeedSpec(url="https://x.test", records_path="data.orders", next_page_path="meta.next")
    )
    assert page.records == [{"id": 1}, {"id": 2}] and page.next_token == "abc"


def test_a_json_object_without_a_records_path_says_which_key_to_use():
    with pytest.raises(FeedError, match="Set the records path, e.g. 'orders'"):
        parse_page(b'{"orders": [], "count": 0}', FeedSpec(url="https://x.test"))
    with pytest.raises(FeedError, match="nothing at the records path 'items' \\(its keys: count, orders\\)"):
        parse_page(b'{"orders": [], "count": 0}', FeedSpec(url="https://x.test", records_path="items"))


def test_ndjson_and_bad_json():
    assert parse_page(b'{"a": 1}\n{"a": 2}\n', FeedSpec(url="https://x.test")).records == [{"a": 1}, {"a": 2}]
    with pytest.raises(FeedError, match="Page 3 is not valid JSON"):
        parse_page(b"[{", FeedSpec(url="https://x.test"), page=3)


def test_csv_records_with_a_sniffed_delimiter():
    page = parse_page(
        b"\xef\xbb\xbfid;email\n1;a@x.test\n\n2;b@x.test\n", FeedSpec(url="https://x.test", format="csv")
    )
    assert page.records == [{"id": "1", "email": "a@x.test"}, {"id": "2", "email": "b@x.test"}]


def test_xml_catalog_records_namespaces_repeats_and_attributes():
    body = b"""<?xml version="1.0"?>
    <rss xmlns:g="http://base.google.com/ns/1.0"><channel>
      <item><g:id>A1</g:id><title>Mug</title><g:price>9.50 USD</g:price><tag>x</tag><tag>y</tag>
        <img size="l">a.png</img></item>
      <item><g:id>B2</g:id><title>Cup</title></item>
    </channel></rss>"""
    records = parse_page(body, FeedSpec(url="https://x.test", format="xml", records_path="item")).records
    assert records[0] == {
        "id": "A1",
        "title": "Mug",
        "price": "9.50 USD",
        "tag": ["x", "y"],
        "img": {"@size": "l", "#text": "a.png"},
    }
    assert records[1] == {"id": "B2", "title": "Cup"}


def test_xml_with_a_doctype_is_refused():
    bomb = b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa">]><r><i>&a;</i></r>'
    with pytest.raises(FeedError, match="DOCTYPE are refused"):
        parse_page(bomb, FeedSpec(url="https://x.test", format="xml"))


def test_cursor_values_order_as_instants_then_numbers():
    assert cursor_key("2026-01-01T10:00:00Z") == cursor_key("2026-01-01T11:00:00+01:00")
    assert cursor_key("9") < cursor_key("10")


def test_records_below_the_mark_are_dropped_and_the_mark_advances():
    spec = FeedSpec(url="https://x.test", cursor_kind="field", cursor_field="updated_at")
    records = [
        {"updated_at": "2026-01-01"},
        {"updated_at": "2026-01-03"},
        {"updated_at": "2026-01-02"},
        {"x": 1},
    ]
    fetched = _select_new(records, spec, FeedState(cursor_value="2026-01-02"), 1, None)
    assert fetched.records == records[1:] and fetched.older == 1
    assert fetched.state.cursor_value == "2026-01-03"


def test_record_keys_use_the_key_field_else_the_content():
    assert record_key({"id": 1, "v": "a"}, "id") == record_key({"id": 1, "v": "b"}, "id")
    assert record_key({"id": 1, "v": "a"}, None) != record_key({"id": 1, "v": "b"}, None)


def test_feed_urls_must_be_http():
    assert check_url("https://shop.test/feed.json") is None
    assert "http:// or https://" in (check_url("file:///etc/passwd") or "")
