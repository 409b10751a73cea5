"""Merging the inbox with large-group feeds into one sync page (pure logic)."""

from __future__ import annotations

import orjson
import pytest

from app.stores.feeds import Span
from app.usecases.sync import SyncCursor, feed_start, merge


def row(stream_id: str, seq: int, cid: str = "u:a:b") -> tuple[bytes, dict[bytes, bytes]]:
    return stream_id.encode(), {b"m": orjson.dumps({"seq": seq, "conversation_id": cid})}


def test_cursor_round_trips_and_keeps_the_plain_form_without_feeds() -> None:
    assert SyncCursor.parse("0") == SyncCursor()
    assert SyncCursor(inbox="5-1").encode() == "5-1"
    cursor = SyncCursor(inbox="7-0", feeds={"g:big": "9-2", "g:a.b": "3-0"})
    assert cursor.encode() == "7-0~g:a.b=3-0~g:big=9-2"
    assert SyncCursor.parse(cursor.encode()) == cursor


@pytest.mark.parametrize("bad", ["", "x", "5-", "5-1~u:a:b=1-0", "5-1~g:big", "5-1~g:big=x",
                                 "5-1~g:bad id=1-0"])
def test_bad_cursors_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        SyncCursor.parse(bad)


def test_pages_interleave_by_stream_id_and_each_source_keeps_its_own_position() -> None:
    inbox = [row("10-0", 1), row("30-0", 2)]
    feeds = {"g:big": [row("20-0", 1, "g:big"), row("30-0", 2, "g:big"), row("40-0", 3, "g:big")]}
    page = merge(inbox, feeds, SyncCursor(), limit=3)
    assert [(m["conversation_id"], m["seq"]) for m in page.messages] == [
        ("u:a:b", 1), ("g:big", 1), ("u:a:b", 2)]  # the inbox first on a tie
    assert page.has_more
    assert page.cursor == SyncCursor(inbox="30-0", feeds={"g:big": "20-0"})

    rest = merge([], {"g:big": feeds["g:big"][1:]}, page.cursor, limit=3)
    assert [m["seq"] for m in rest.messages] == [2, 3] and not rest.has_more
    assert rest.cursor == SyncCursor(inbox="30-0", feeds={"g:big": "40-0"})


def test_has_more_is_false_when_a_full_page_takes_the_last_entry() -> None:
    page = merge([row("1-0", 1)], {"g:big": [row("2-0", 1, "g:big")]}, SyncCursor(), limit=2)
    assert len(page.messages) == 2 and not page.has_more


def test_a_feed_is_read_from_the_later_of_cursor_span_start_and_retention_floor() -> None:
    span = Span(from_id="100-0", from_seq=4)
    assert feed_start(span, None, floor="50-0") == "100-0"  # inclusive: the join entry
    assert feed_start(span, None, floor="150-0") == "150-0"
    assert feed_start(span, "120-3", floor="50-0") == "(120-3"
    assert feed_start(span, "90-0", floor="50-0") == "100-0"  # an earlier span's position
