"""Bounded capture of a process's output, with secrets masked.

Standard library only: the driver inside a wrapper uses it too.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import shlex
import time
from collections import deque
from collections.abc import Iterable
from typing import Callable

MASK = b"***"

# Terminal escape sequences (ECMA-48).  Order matters: the string commands
# (OSC, DCS, SOS, PM, APC) and CSI first, then any other two-character escape,
# then a lone ESC.  A string command without terminator ends at the line's end,
# so a stray "ESC ]" cannot swallow megabytes of output.  The reports remove
# them; a secret is masked again after that (see `mask_clean`).
ESCAPES = re.compile(
    r"""
      \x1b[\]PX^_][^\x07\x1b\n]*(?:\x07|\x1b\\)?   # OSC/DCS/SOS/PM/APC ... BEL or ST
    | \x1b\[[0-?]*[ -/]*[@-~]                      # CSI: ESC [ params intermediates final
    | \x9b[0-?]*[ -/]*[@-~]                        # CSI, 8-bit form
    | \x1b[ -/]*[0-~]                              # nF/Fp/Fe/Fs: ESC ( B, ESC 7, ESC c ...
    | \x1b                                         # whatever ESC is left
    """,
    re.VERBOSE,
)


def renderings(secret: str) -> set[str]:
    """The secret, and each way nixtest itself may write it: shell-quoted, repr, JSON."""
    forms = {
        secret,
        shlex.quote(secret),
        # inside a longer single-quoted word, as shlex and plumbum write a quote
        secret.replace("'", "'\"'\"'"),
        secret.replace("'", "'\\''"),
        repr(secret)[1:-1],
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
    }
    return {form for form in forms if form}


def _all_forms(secrets: Iterable[str]) -> list[str]:
    forms: set[str] = set()
    for secret in secrets:
        if secret:
            forms |= renderings(secret)
    return sorted(forms, key=len, reverse=True)


#: how much of a test's output is kept in memory (the log file has all of it)
DEFAULT_TAIL = 256 * 1024


class Masker:
    """Replaces secret values in a byte stream, also across read boundaries.

    It holds back the end of the data only when it could be the start of a
    secret (at most `len(longest secret) - 1` bytes), until more data or
    `flush()` shows whether it is: other output is never held, so it is not
    reordered against the other stream.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        values = {s.encode("utf-8", "surrogateescape") for s in _all_forms(secrets)}
        self.secrets = sorted(values, key=len, reverse=True)
        self.hold = max((len(s) for s in self.secrets), default=1) - 1
        self.pending = b""

    def mask(self, data: bytes) -> bytes:
        for secret in self.secrets:
            data = data.replace(secret, MASK)
        return data

    def feed(self, data: bytes) -> bytes:
        if not self.secrets:
            return data
        data = self.mask(self.pending + data)
        keep = self._partial(data)
        if keep:
            data, self.pending = data[:-keep], data[-keep:]
        else:
            self.pending = b""
        return data

    def _partial(self, data: bytes) -> int:
        """The length of the longest end of `data` that is the start of a secret."""
        for size in range(min(self.hold, len(data)), 0, -1):
            end = data[-size:]
            if any(secret.startswith(end) for secret in self.secrets):
                return size
        return 0

    def flush(self) -> bytes:
        data, self.pending = self.mask(self.pending), b""
        return data


def mask_text(text: str, secrets: Iterable[str]) -> str:
    for secret in _all_forms(secrets):
        text = text.replace(secret, MASK.decode())
    return text


def mask_clean(text: str, secrets: Iterable[str]) -> str:
    """`text` as the reports show it, escape sequences removed, and then masked.

    A test that prints a secret's halves around `ESC[31m` shows the whole
    secret once the escape is gone: masking must come after.
    """
    forms = _all_forms(secrets)
    if not forms or not text:
        return text
    if "\x1b" in text or "\x9b" in text:
        text = ESCAPES.sub("", text)
    for form in forms:
        text = text.replace(form, MASK.decode())
    return text


class Tail:
    """The last `limit` bytes of interleaved (stream, data) chunks."""

    def __init__(self, limit: int = DEFAULT_TAIL) -> None:
        self.limit = limit
        self.chunks: deque[tuple[str, bytes]] = deque()
        self.size = 0
        self.total = 0

    @property
    def dropped(self) -> int:
        return self.total - self.size

    def add(self, stream: str, data: bytes) -> None:
        if not data:
            return
        self.total += len(data)
        if len(data) > self.limit:
            data = data[-self.limit :]
        if self.chunks and self.chunks[-1][0] == stream:
            previous = self.chunks.pop()[1]
            self.size -= len(previous)
            data = previous + data
        self.chunks.append((stream, data))
        self.size += len(data)
        while self.size > self.limit and self.chunks:
            first_stream, first = self.chunks[0]
            excess = self.size - self.limit
            if len(first) <= excess:
                self.chunks.popleft()
                self.size -= len(first)
            else:
                self.chunks[0] = (first_stream, first[excess:])
                self.size -= excess

    def text_chunks(self) -> list[tuple[str, str]]:
        return [(s, d.decode("utf-8", "replace")) for s, d in self.chunks]

    def text(self, stream: str | None = None) -> str:
        return "".join(d for s, d in self.text_chunks() if stream is None or s == stream)


def pump(
    fds: dict[int, str],
    on_data: Callable[[str, bytes], None],
    deadline: float | None = None,
    stop: Callable[[], bool] | None = None,
) -> dict[int, str]:
    """Reads the file descriptors until all reach EOF, `deadline` (monotonic) passes or `stop()`.

    `fds` maps a readable fd to its stream name; each read goes to `on_data`.
    Returns the fds not yet at EOF (empty when all are).
    """
    remaining = dict(fds)
    selector = selectors.DefaultSelector()
    try:
        for fd, stream in remaining.items():
            os.set_blocking(fd, False)
            selector.register(fd, selectors.EVENT_READ, stream)
        while remaining:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            if stop is not None and stop():
                break
            wait = None if deadline is None else deadline - now
            if stop is not None:
                wait = 0.1 if wait is None else min(wait, 0.1)
            for key, _ in selector.select(wait):
                try:
                    data = os.read(key.fd, 65536)
                except BlockingIOError:
                    continue
                if data:
                    on_data(key.data, data)
                else:
                    selector.unregister(key.fd)
                    del remaining[key.fd]
        return remaining
    finally:
        selector.close()
