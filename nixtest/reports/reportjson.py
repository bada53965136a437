"""OUT/report.json: the run, machine-readable, for bots and scripts (see DESIGN.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nixtest.reports.common import log_path, relative_to_out
from nixtest.reports.text import atomic_stream
from nixtest.results import SCHEMA_VERSION, RunSummary, TestResult

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
    return json.dumps(_document(run, out), indent=1, ensure_ascii=False) + "\n"


def _document(run: RunSummary, out: Path) -> dict[str, Any]:
    counts: dict[str, int] = {o: run.count(o) for o in OUTCOMES}
    counts["cached"] = sum(1 for r in run.results if r.cached)
    counts["flaky"] = sum(1 for r in run.results if r.flaky)
    for change in CHANGES:
        counts[change] = run.count_change(change)
    data = {
        "schema": SCHEMA_VERSION,
        "run": run.run_id or None,
        "set": run.set_spec,
        "baseline": run.baseline,
        "interrupted": run.interrupted,
        "counts": counts,
        "removed": list(run.removed),
        "tests": [test_entry(r, out) for rs in run.by_package().values() for r in rs],
    }
    return data


class ReportJSONReporter:
    """Writes OUT/report.json."""

    name = "report.json"

    def write(self, run: RunSummary, out: Path) -> list[Path]:
        # as `render`, written as it is encoded
        with atomic_stream(out / "report.json") as f:
            json.dump(_document(run, out), f, indent=1, ensure_ascii=False)
            f.write("\n")
        return [out / "report.json"]
