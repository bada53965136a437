"""`expect:` of a `run:` test, checked on the command's exit code and output.

One function for both sides: the driver calls it in a wrapper run by hand,
nixtest's runner on the output it captured in its own runs (no Python process
for the test there).  Standard library only.
"""

from __future__ import annotations

import mmap
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from typing import IO, Any

#: output kept in memory per stream for the patterns to match against; beyond it, a
#: stream goes on in an unnamed temporary file, and the patterns search all of it
MATCH_LIMIT = 16 * 1024 * 1024


class Spool:
    """All of one stream's output, for `expect` patterns: in memory, then in an unnamed file.

    A `^START$` line followed by 20 MB of output must still be found: no
    output is dropped.  The file is made with `tempfile.TemporaryFile` (an
    `O_TMPFILE` on Linux: it never has a name) and goes when the spool does;
    the callers feed it output with the secrets already masked.
    """

    def __init__(self, limit: int = MATCH_LIMIT) -> None:
        self.limit = limit
        self.memory = bytearray()
        self.file: IO[bytes] | None = None
        self.size = 0

    def add(self, stream: str, data: bytes) -> None:
        """Takes more output (the stream name is for `Tail`'s signature)."""
        if not data:
            return
        self.size += len(data)
        if self.file is None and len(self.memory) + len(data) <= self.limit:
            self.memory += data
            return
        if self.file is None:
            self.file = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
            self.file.write(self.memory)
            self.memory = bytearray()
        self.file.write(data)

    def text(self) -> str:
        """The output (only its last `limit` bytes once it is larger)."""
        if self.file is None:
            return self.memory.decode("utf-8", "replace")
        self.file.flush()
        self.file.seek(max(0, self.size - self.limit))
        data = self.file.read()
        self.file.seek(0, os.SEEK_END)
        return data.decode("utf-8", "replace")

    def search(self, pattern: str) -> bool:
        """Whether `pattern` (multi-line mode) matches anywhere in the whole output."""
        if self.file is None:
            return re.search(pattern, self.memory.decode("utf-8", "replace"), re.MULTILINE) is not None
        self.file.flush()
        # bytes against bytes, from the file mapped in memory: nothing is read in whole
        with mmap.mmap(self.file.fileno(), 0, access=mmap.ACCESS_READ) as view:
            return re.search(pattern.encode("utf-8", "surrogateescape"), view, re.MULTILINE) is not None

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def problems(code: int, output: Mapping[str, str | Spool], expect: Mapping[str, Any]) -> list[str]:
    """What is wrong with a command's result: empty when it did what `expect` says.

    `output` maps "stdout"/"stderr" to the text the command wrote there (or
    its `Spool`); `expect` is the definition's `{exit, stdout, stderr}`
    (patterns in multi-line mode).
    """
    wanted = int(expect.get("exit", 0))
    found = []
    if code != wanted:
        found.append(f"exited {code}, expected {wanted}")
    for stream in ("stdout", "stderr"):
        patterns: Sequence[str] = expect.get(stream) or ()
        text = output.get(stream, "")
        for pattern in patterns:
            if isinstance(text, Spool):
                matched = text.search(pattern)
            else:
                matched = re.search(pattern, text, re.MULTILINE) is not None
            if not matched:
                found.append(f"{stream} does not match {pattern!r}")
    return found


def failure_message(command: str, found: Sequence[str]) -> str:
    """The test's message when `problems` found some."""
    return f"{command!r} " + "; ".join(found)
