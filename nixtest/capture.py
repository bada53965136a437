"""Bounded capture of a process's output, with secrets masked.

Standard library only: the driver inside a wrapper uses it too.
"""

from __future__ import annotations

import os
import selectors
import time
from collections import deque
from collections.abc import Iterable
from typing import Callable

MASK = b"***"
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
        values = {s.encode("utf-8", "surrogateescape") for s in secrets if s}
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
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, MASK.decode())
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
