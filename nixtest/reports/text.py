"""Text helpers shared by the report writers: cleaning, bounding, atomic writes."""

from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from nixtest.capture import ESCAPES as _ESCAPES

#: How much of a test's (or a step's) output a report keeps: its last 64 KiB.
#: The full output is in OUT/logs/<package>/<test>.log, written by the executor.
OUTPUT_LIMIT = 64 * 1024

REPLACEMENT = "\ufffd"

# Everything XML 1.0 does not allow: legal are #x9 #xA #xD #x20-#xD7FF
# #xE000-#xFFFD #x10000-#x10FFFF.  Lone surrogates (from errors="surrogateescape")
# fall in the forbidden #xD800-#xDFFF range.
_XML_ILLEGAL = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

_NEWLINES = re.compile(r"\r\n|\r|\n")


def clean_text(s: str) -> str:
    """Return `s` safe for XML 1.0 and HTML.

    Terminal escape sequences (CSI such as ``ESC[31m``, OSC ``ESC]...BEL``,
    ``ESC ( B``...) are removed whole, so no ``[31m`` residue stays.  Every other
    character XML 1.0 forbids (NUL, other C0 controls, lone surrogates from
    undecodable bytes, U+FFFE, U+FFFF) is *replaced* by U+FFFD, so the reader
    sees that something was there.
    """
    if not s or s.isprintable():
        # nothing to remove: escape sequences start with ESC or CSI, and every
        # character XML forbids is unprintable (most names, heads and facts)
        return s
    s = _ESCAPES.sub("", s)
    return _XML_ILLEGAL.sub(REPLACEMENT, s)


def split_lines(text: str) -> list[str]:
    """Split on LF, CRLF or CR; a final newline does not make an empty last line."""
    if "\n" not in text and "\r" not in text:
        return [text] if text else []
    lines = _NEWLINES.split(text)
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def omission_note(left_out: int, log_path: str = "", dropped_bytes: int = 0) -> str:
    """The note that replaces the beginning of a bounded output."""
    what = f"{left_out} characters left out"
    if dropped_bytes:
        what += f" (and {dropped_bytes} bytes the runner already left out)"
    if log_path:
        what += f"; full output: {log_path}"
    return f"[... {what}]"


def tail(text: str, limit: int = OUTPUT_LIMIT, log_path: str = "", dropped_bytes: int = 0) -> str:
    """Bound `text` to its last `limit` characters, starting with a note if cut.

    The note reads "[... N characters left out; full output: LOG]" and is
    followed by a newline.  `dropped_bytes` is what the runner had already cut
    (`TestResult.output_dropped`); it makes a note even when `text` fits.
    """
    cut = max(0, len(text) - limit)
    if not cut and not dropped_bytes:
        return text
    return omission_note(cut, log_path, dropped_bytes) + "\n" + text[cut:]


def tail_chunks(
    chunks: Iterable[tuple[str, str]], limit: int = OUTPUT_LIMIT
) -> tuple[list[tuple[str, str]], int]:
    """Keep the last `limit` characters of (stream, text) chunks, streams kept.

    Returns the kept chunks, in order, and how many characters were left out.
    """
    kept: list[tuple[str, str]] = []
    room = limit
    left_out = 0
    for stream, text in reversed(list(chunks)):
        if room >= len(text):
            kept.append((stream, text))
            room -= len(text)
        else:
            if room > 0:
                kept.append((stream, text[len(text) - room :]))
            left_out += len(text) - room
            room = 0
    kept.reverse()
    return kept, left_out


def merge_chunks(chunks: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Join neighbouring chunks of the same stream, so lines are not split."""
    merged: list[tuple[str, str]] = []
    for stream, text in chunks:
        if merged and merged[-1][0] == stream:
            merged[-1] = (stream, merged[-1][1] + text)
        elif text:
            merged.append((stream, text))
    return merged


def _safe_start(text: str, start: int) -> int:
    """Move `start` back to the escape sequence it falls into, if it does."""
    lo = max(0, start - 256)
    esc = max(text.rfind("\x1b", lo, start), text.rfind("\x9b", lo, start))
    if esc >= 0:
        match = _ESCAPES.match(text, esc)
        if match and match.end() > start:
            return esc
    return start


def clean_tail_chunks(
    chunks: Iterable[tuple[str, str]], limit: int = OUTPUT_LIMIT
) -> tuple[list[tuple[str, str]], int]:
    """Cleaned (stream, text) chunks, their last `limit` characters; and how many were left out.

    Only a tail of the raw text is cleaned, twice the limit to start with:
    cleaning megabytes of output for every report is slow.  The tail never
    starts inside an escape sequence, so no residue of one is kept.
    """
    merged = merge_chunks(chunks)
    budget = 2 * limit
    while True:
        raw, skipped = tail_chunks(merged, budget)
        if raw and skipped:
            stream, whole = merged[len(merged) - len(raw)]
            start = len(whole) - len(raw[0][1])
            safe = _safe_start(whole, start)
            raw[0] = (stream, whole[safe:])
            skipped -= start - safe
        cleaned = [(s, clean_text(t)) for s, t in raw]
        if not skipped or sum(len(t) for _, t in cleaned) >= limit:
            kept, cut = tail_chunks(cleaned, limit)
            return kept, skipped + cut
        # escape sequences took up most of the tail: clean a longer one
        budget *= 4


def output_lines(chunks: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """(stream, line) pairs of cleaned output, one per printed line."""
    lines: list[tuple[str, str]] = []
    for stream, text in merge_chunks(chunks):
        lines.extend((stream, line) for line in split_lines(clean_text(text)))
    return lines


def default_log_path(out: Path, package: str, test: str) -> str:
    """Where the executor writes a test's full output: OUT/logs/<pkg>/<test>.log."""
    return os.path.join(os.path.abspath(out), "logs", package, f"{test}.log")


#: (temporary file, final path) of the writes `deferred_replace` holds back
_pending: list[tuple[str, Path]] | None = None


@contextlib.contextmanager
def deferred_replace() -> Iterator[list[tuple[str, Path]]]:
    """Inside it, `atomic_write` writes each file in full but does not move it into place.

    The caller moves all of them (or none): the reports of one run never mix
    with an earlier run's.
    """
    global _pending
    _pending = []
    try:
        yield _pending
    finally:
        _pending = None


def will_exist(path: Path | str) -> bool:
    """Whether `path` exists, or is written and waits to be moved into place."""
    return os.path.exists(path) or any(
        os.path.abspath(final) == os.path.abspath(path) for _, final in _pending or []
    )


def atomic_write(path: Path | str, data: bytes | str) -> Path:
    """Write `data` (str as UTF-8) to `path` via a temporary file and os.replace.

    A reader, or a run that is killed half-way, sees the old file or the new
    one, never a half-written file.  Missing parent directories are created.
    """
    with atomic_stream(path) as f:
        if isinstance(data, bytes):
            f.flush()
            f.buffer.write(data)
        else:
            f.write(data)
    return Path(path)


@contextlib.contextmanager
def atomic_stream(path: Path | str) -> Iterator[io.TextIOWrapper]:
    """`atomic_write` for a report written piece by piece into the UTF-8 text file given.

    A 10,000-test report is tens of MB: written as it is made, it is never also held
    whole as one string and its bytes (issue 8, peak memory).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # newline="": no translation, the text is written as it is
        with open(fd, "w", encoding="utf-8", newline="") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file 0600; reports are for everyone to read.
        os.chmod(tmp, 0o644)
        if _pending is not None:
            _pending.append((tmp, path))
        else:
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
