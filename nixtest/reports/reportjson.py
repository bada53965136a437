"""OUT/report.json: the run, machine-readable, for bots and scripts (see DESIGN.md)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from json.encoder import encode_basestring
from pathlib import Path
from typing import Any, Callable

from nixtest.reports.common import log_path, relative_to_out
from nixtest.reports.text import atomic_stream
from nixtest.results import SCHEMA_VERSION, RunSummary, TestResult

#: a string as JSON, non-ASCII characters as they are (json's C function)
_string: Callable[[str], str] = encode_basestring

OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed")
CHANGES = ("newly-failing", "newly-succeeding", "still-failing", "new", "removed")


def _in_out(path: str, out: Path) -> str:
    """A path inside OUT relative to it (as DESIGN.md shows them); any other as it is."""
    if not path:
        return ""
    return relative_to_out(path, out) or path


def test_entry(result: TestResult, out: Path) -> dict[str, Any]:
    return {
        "id": result.nodeid,
        "package": result.package,
        "test": result.test,
        "outcome": result.outcome,
        "message": result.message,
        "cached": result.cached,
        "flaky": result.flaky,
        "attempts": result.attempts,
        "change": result.change or None,
        "duration": round(result.duration, 3),
        "input": result.input_key,
        "packages": dict(sorted(result.packages.items())),
        "log": _in_out(log_path(result, out), out) if result.log_path else "",
        "wrapper": _in_out(result.wrapper, out),
    }


def render(run: RunSummary, out: Path) -> str:
    return "".join(_pieces(run, out))


def head(run: RunSummary) -> dict[str, Any]:
    """The document but its tests."""
    counts: dict[str, int] = {o: run.count(o) for o in OUTCOMES}
    counts["cached"] = sum(1 for r in run.results if r.cached)
    counts["flaky"] = sum(1 for r in run.results if r.flaky)
    for change in CHANGES:
        counts[change] = run.count_change(change)
    return {
        "schema": SCHEMA_VERSION,
        "run": run.run_id or None,
        "set": run.set_spec,
        "baseline": run.baseline,
        "interrupted": run.interrupted,
        "counts": counts,
        "removed": list(run.removed),
    }


def _float(value: float) -> str:
    if math.isfinite(value):
        return float.__repr__(value)
    return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")


def encode(value: Any, level: int = 0) -> str:
    """`value` as `json.dumps(value, indent=1, ensure_ascii=False)` gives it, `level` deep.

    json's indenting encoder is written in Python, a generator a container: a
    test's entry (its closure's packages among them) cost about 35 µs; this
    makes the same text in about a third of that (issue 8).
    """
    if isinstance(value, str):
        return _string(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        return _float(value)
    inner = "\n" + " " * (level + 1)
    if isinstance(value, dict):
        if not value:
            return "{}"
        # a closure's packages: strings, encoded without a call each
        items = [
            f"{_key(k)}: {_string(v) if type(v) is str else encode(v, level + 1)}" for k, v in value.items()
        ]
        return "{" + inner + ("," + inner).join(items) + inner[:-1] + "}"
    if isinstance(value, (list, tuple)):
        if not value:
            return "[]"
        return "[" + inner + ("," + inner).join(encode(v, level + 1) for v in value) + inner[:-1] + "]"
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _key(key: Any) -> str:
    if type(key) is not str:
        raise TypeError(f"keys must be str, not {type(key).__name__}")
    return _string(key)


def _pieces(run: RunSummary, out: Path) -> Iterator[str]:
    """The document a test at a time: a 10,000-test report is never held whole, as a dict or as text."""
    text = encode(head(run))
    # the document ends with its tests: the head's closing brace comes after them
    yield text[: -len("\n}")] + ',\n "tests": ['
    first = True
    for results in run.by_package().values():
        for result in results:
            yield ("\n  " if first else ",\n  ") + encode(test_entry(result, out), 2)
            first = False
    yield "]\n}\n" if first else "\n ]\n}\n"


class ReportJSONReporter:
    """Writes OUT/report.json."""

    name = "report.json"

    def write(self, run: RunSummary, out: Path) -> list[Path]:
        # as `render`, written as it is encoded
        with atomic_stream(out / "report.json") as f:
            f.writelines(_pieces(run, out))
        return [out / "report.json"]
