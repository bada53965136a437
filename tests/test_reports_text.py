"""Unit tests of nixtest/reports/text.py: cleaning, bounding, atomic writes."""

from __future__ import annotations

import os
import random
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from nixtest.reports.text import (
    atomic_write,
    clean_tail_chunks,
    clean_text,
    output_lines,
    split_lines,
    tail,
    tail_chunks,
)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("\x1b[31mred\x1b[0m plain", "red plain"),
        ("\x1b[1;38;5;196mbold\x1b[m", "bold"),
        ("\x1b[?25lcursor\x1b[?25h", "cursor"),
        ("\x1b]0;window title\x07text", "text"),
        ("\x1b]8;;file:///x\x1b\\link\x1b]8;;\x1b\\", "link"),
        ("\x1b(Bcharset \x1b7saved\x1b8", "charset saved"),
        ("lone escape at the end\x1b", "lone escape at the end"),
        ("\x9b32mC1 CSI", "C1 CSI"),
        ("NUL\x00 BEL\x07 BS\x08", "NUL\ufffd BEL\ufffd BS\ufffd"),
        ("bad utf8 " + b"\xff\xfe".decode("utf-8", "surrogateescape"), "bad utf8 \ufffd\ufffd"),
        ("noncharacters \ufffe\uffff", "noncharacters \ufffd\ufffd"),
        ("kept: tab\t lf\n cr\r é € \U0001f600 \ufffd", "kept: tab\t lf\n cr\r é € \U0001f600 \ufffd"),
        ("unterminated \x1b]0;title\nnext line", "unterminated \nnext line"),
        ("", ""),
    ],
)
def test_clean_text(raw: str, clean: str) -> None:
    assert clean_text(raw) == clean


def test_clean_text_gives_well_formed_xml_for_every_code_point_below_0x10000() -> None:
    raw = "".join(chr(c) for c in range(0x10000))
    cleaned = clean_text(raw)
    assert "\x1b" not in cleaned
    # ET raises on any character XML 1.0 forbids
    element = ET.fromstring(f"<a>{cleaned.replace('&', '').replace('<', '')}</a>")
    assert element.text is not None and len(element.text) > 60000


def test_clean_text_is_idempotent() -> None:
    raw = "\x1b\x1b[31mx\x1b]2;t\x07\x00y\udcff"
    once = clean_text(raw)
    assert once == "x\ufffdy\ufffd"
    assert clean_text(once) == once


def test_tail_short_text_unchanged() -> None:
    assert tail("hello", 10, "/out/logs/p/t.log") == "hello"


def test_tail_bounds_and_notes_the_log() -> None:
    text = "".join(f"line {n}\n" for n in range(1000))
    bounded = tail(text, 100, "/out/logs/p/t.log")
    note, rest = bounded.split("\n", 1)
    assert rest == text[-100:]
    left_out = len(text) - 100
    assert note == f"[... {left_out} characters left out; full output: /out/logs/p/t.log]"


def test_tail_mentions_what_the_runner_dropped() -> None:
    bounded = tail("end\n", 100, "/l.log", dropped_bytes=5000)
    assert bounded.startswith("[... 0 characters left out (and 5000 bytes")
    assert bounded.endswith("\nend\n")


def test_tail_chunks_keeps_streams_and_order() -> None:
    chunks = [("stdout", "a" * 10), ("stderr", "b" * 10), ("stdout", "c" * 10)]
    kept, left_out = tail_chunks(chunks, 15)
    assert kept == [("stderr", "b" * 5), ("stdout", "c" * 10)]
    assert left_out == 15
    assert tail_chunks(chunks, 100) == (chunks, 0)


def test_clean_tail_chunks_cleans_only_what_it_keeps() -> None:
    raw = "A" * 100 + "\x1b[31m" + "B" * 50
    kept, left_out = clean_tail_chunks([("stdout", raw[:60]), ("stdout", raw[60:])], 52)
    assert kept == [("stdout", "AA" + "B" * 50)]
    assert left_out == 98


def test_clean_tail_chunks_no_residue_where_the_tail_starts() -> None:
    # the raw tail starts inside an escape sequence: "1m" must not be kept
    raw = "x" * 20 + "\x1b[31m" + "y" * 6
    kept, _ = clean_tail_chunks([("stderr", raw)], 4)
    assert kept == [("stderr", "yyyy")]
    # escapes fill the first tail looked at: a longer one is cleaned
    kept, left_out = clean_tail_chunks([("stdout", "ok" + "\x1b[0m" * 10000 + "end")], 5)
    assert (kept, left_out) == ([("stdout", "okend")], 0)


@pytest.mark.parametrize("seed", range(20))
def test_clean_tail_chunks_equals_cleaning_everything(seed: int) -> None:
    rng = random.Random(seed)
    pieces = ["word ", "\n", "\x1b[31m", "\x1b[0m", "\x1b[1;38;5;196m", "\x00", "\x1b(B", "é"]
    text = "".join(rng.choice(pieces) for _ in range(5000))
    limit = rng.randrange(1, 3000)
    cut = rng.randrange(len(text))
    kept, left_out = clean_tail_chunks([("stdout", text[:cut]), ("stdout", text[cut:])], limit)
    assert "".join(t for _, t in kept) == clean_text(text)[-limit:]
    assert left_out <= len(text)


def test_split_and_output_lines() -> None:
    assert split_lines("a\r\nb\rc\n\nd\n") == ["a", "b", "c", "", "d"]
    assert split_lines("") == [] and split_lines("one") == ["one"] and split_lines("\r") == [""]
    # a line printed in two chunks of one stream stays one line
    chunks = [("stdout", "hel"), ("stdout", "lo\n\x1b[32mok\x1b[0m\n"), ("stderr", "err\n")]
    assert output_lines(chunks) == [("stdout", "hello"), ("stdout", "ok"), ("stderr", "err")]


def test_atomic_write_writes_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "file.xml"
    assert atomic_write(target, "é\n") == target
    assert target.read_bytes() == "é\n".encode()
    atomic_write(target, b"bytes")
    assert target.read_bytes() == b"bytes"
    assert os.listdir(target.parent) == ["file.xml"]
    assert target.stat().st_mode & 0o777 == 0o644


def test_atomic_write_keeps_the_old_file_when_interrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "junit.xml"
    target.write_text("<old/>")

    def interrupted(src: str, dst: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, "<new/>")
    assert target.read_text() == "<old/>"
    assert os.listdir(tmp_path) == ["junit.xml"]


def test_clean_text_leaves_no_colour_residue_in_random_bytes() -> None:
    raw = os.urandom(1 << 16) + b"\x1b[31mRED\x1b[0m"
    cleaned = clean_text(raw.decode("utf-8", "surrogateescape"))
    assert "\x1b" not in cleaned
    assert cleaned.endswith("RED")
    assert not re.search("[\ud800-\udfff\x00-\x08]", cleaned)


def test_clean_text_of_printable_text_is_the_text() -> None:
    """Its shortcut (printable text is returned as it is) gives what the two substitutions give."""
    from nixtest.capture import ESCAPES
    from nixtest.reports.text import _XML_ILLEGAL, REPLACEMENT

    rng = random.Random(8)
    alphabet = [chr(c) for c in (*range(0x00, 0x2FF), *range(0xD7F0, 0xE010), *range(0xFDC0, 0x10010))]
    alphabet += ["\U0001f600", "\U0001fffe", "\U0010ffff", "\x1b[31m", "\x9b1m", "\x1b]0;t\x07"]
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 12)))
        assert clean_text(text) == _XML_ILLEGAL.sub(REPLACEMENT, ESCAPES.sub("", text)), repr(text)
