"""A run compared with a baseline, in Hydra's words.

The baseline is a recorded run (by default the last one of the same set and
tests folder), or a `junit.xml` / `report.json` from elsewhere, e.g. another
machine's CI artifact.  Each test of the run gets a change: newly failing,
newly succeeding, still failing, still succeeding, or new; the baseline's
tests that no longer exist are removed.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from nixtest.errors import NixtestError
from nixtest.history.store import HistoryStore
from nixtest.results import TestResult

#: the order changes are shown in: what needs a look first
ORDER = ("newly-failing", "still-failing", "newly-succeeding", "new", "removed", "still-succeeding")

BAD = ("failed", "error")


class BaselineError(NixtestError):
    """A --baseline that names no run and no readable junit.xml or report.json."""


@dataclass
class Baseline:
    #: what the reports name: a run id, or the file as given
    label: str
    #: every test of the baseline ("pkg::test") -> its outcome
    outcomes: dict[str, str] = field(default_factory=dict)


def change_of(before: str | None, after: str) -> str:
    if before is None:
        return "new"
    was_bad, is_bad = before in BAD, after in BAD
    if is_bad:
        return "still-failing" if was_bad else "newly-failing"
    return "newly-succeeding" if was_bad else "still-succeeding"


def compare(
    results: Iterable[TestResult], baseline: Baseline, exists: Callable[[str], bool]
) -> tuple[dict[str, str], list[str]]:
    """(each result's nodeid -> its change, the baseline's tests that no longer `exist`)."""
    found: dict[str, str] = {}
    for result in results:
        found[result.nodeid] = change_of(baseline.outcomes.get(result.nodeid), result.outcome)
    removed = sorted(n for n in baseline.outcomes if n not in found and not exists(n))
    return found, removed


def from_run(store: HistoryStore, run_id: int) -> Baseline:
    if not store.has_run(run_id):
        raise BaselineError(f"--baseline {run_id}: no such run in {store.path} (see `nixtest history`)")
    # outcomes only: a whole record a test (its closure, its inputs) is 20 KiB at the peak
    return Baseline(str(run_id), store.run_outcomes(run_id))


def from_file(path: Path) -> Baseline:
    """A `report.json` or a `junit.xml` (nixtest's or any JUnit writer's)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BaselineError(f"--baseline {path}: cannot read: {exc.strerror or exc}") from None
    if raw.lstrip()[:1] in (b"{", b"["):
        return Baseline(str(path), _from_report(path, raw))
    return Baseline(str(path), _from_junit(path, raw))


def _from_report(path: Path, raw: bytes) -> dict[str, str]:
    try:
        data = json.loads(raw)
        return {str(t["id"]): str(t["outcome"]) for t in data["tests"]}
    except (ValueError, KeyError, TypeError) as exc:
        raise BaselineError(f"--baseline {path}: not a nixtest report.json: {exc}") from None


def _from_junit(path: Path, raw: bytes) -> dict[str, str]:
    try:
        root = ET.fromstring(raw)
    except ET.ParseError as exc:
        raise BaselineError(f"--baseline {path}: neither report.json nor junit.xml: {exc}") from None
    outcomes: dict[str, str] = {}
    for case in root.iter("testcase"):
        package = case.get("classname") or ""
        name = case.get("name") or ""
        if not name:
            continue
        if case.find("error") is not None:
            outcome = "error"
        elif case.find("failure") is not None:
            outcome = "failed"
        elif case.find("skipped") is not None:
            outcome = "skipped"
        else:
            outcome = "passed"
        outcomes[f"{package}::{name}"] = outcome
    if root.tag not in ("testsuites", "testsuite"):
        raise BaselineError(f"--baseline {path}: not a junit.xml (its root is <{root.tag}>)")
    return outcomes


def load(spec: str, store: HistoryStore | None) -> Baseline:
    """--baseline RUN|FILE: a run id of the history, else a file."""
    if spec.isdigit() and not Path(spec).exists():
        if store is None:
            raise BaselineError(f"--baseline {spec}: no history to find the run in")
        return from_run(store, int(spec))
    return from_file(Path(spec))
