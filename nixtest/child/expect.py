"""`expect:` of a `run:` test, checked on the command's exit code and output.

One function for both sides: the driver calls it in a wrapper run by hand,
nixtest's runner on the output it captured in its own runs (no Python process
for the test there).  Standard library only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

#: output kept per stream for the patterns to match against
MATCH_LIMIT = 16 * 1024 * 1024


def problems(code: int, output: Mapping[str, str], expect: Mapping[str, Any]) -> list[str]:
    """What is wrong with a command's result: empty when it did what `expect` says.

    `output` maps "stdout"/"stderr" to the text the command wrote there;
    `expect` is the definition's `{exit, stdout, stderr}` (patterns in multi-line mode).
    """
    wanted = int(expect.get("exit", 0))
    found = []
    if code != wanted:
        found.append(f"exited {code}, expected {wanted}")
    for stream in ("stdout", "stderr"):
        patterns: Sequence[str] = expect.get(stream) or ()
        text = output.get(stream, "")
        for pattern in patterns:
            if not re.search(pattern, text, re.MULTILINE):
                found.append(f"{stream} does not match {pattern!r}")
    return found


def failure_message(command: str, found: Sequence[str]) -> str:
    """The test's message when `problems` found some."""
    return f"{command!r} " + "; ".join(found)
