"""The history's reporter: records each result as it arrives, compares the run at its end.

Each result is its own transaction, so a run that is killed keeps every
result it finished, and runs writing at once lose nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from nixtest.history import compare
from nixtest.history.cache import is_flaky
from nixtest.history.store import HistoryStore
from nixtest.results import RunSummary, TestResult


def _read_log(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


class HistoryRecorder:
    """One run's record in the history."""

    name = "history"

    def __init__(
        self, store: HistoryStore, set_spec: str, tests_dir: str, command: list[str] | None = None
    ) -> None:
        self.store = store
        self.set_spec = set_spec
        self.tests_dir = tests_dir
        self.run_id = store.begin_run(set_spec, tests_dir, list(sys.argv if command is None else command))

    def add(self, result: TestResult) -> None:
        """Records `result`; marks it flaky when its input key both passed and failed before."""
        if result.input_key and not result.cached:
            earlier = self.store.results_with_key(result.input_key)
            if earlier and result.outcome in ("passed", "failed", "error"):
                passed = result.outcome == "passed" or any(r.outcome == "passed" for r in earlier)
                failed = result.is_bad or any(r.is_bad for r in earlier)
                if (passed and failed) or (result.outcome == "passed" and is_flaky(earlier)):
                    result.flaky = True
        # A clean pass's log is what the cache gives back; a failure's or a flaky
        # result's is what an earlier run's box in a history strip links to
        # (history/strips.py).  A cached result repeats a log kept already.
        keep_log = not result.cached and (result.outcome == "passed" or result.is_bad or result.flaky)
        log = _read_log(result.log_path) if keep_log and result.log_path else None
        self.store.add(self.run_id, self.set_spec, result, log)

    def compare(
        self, run: RunSummary, baseline_spec: str | None, exists: Callable[[str], bool]
    ) -> compare.Baseline | None:
        """Sets each result's change and the removed tests against the baseline; None if there is none."""
        if baseline_spec:
            baseline = compare.load(baseline_spec, self.store)
        else:
            last = self.store.last_run(self.set_spec, self.tests_dir, before=self.run_id)
            if last is None:
                return None
            # a test the last run did not select (`nixtest run sed`) is compared with
            # its latest result before: only a test never seen is new
            outcomes = self.store.latest_outcomes(self.set_spec, self.tests_dir, before=self.run_id)
            outcomes.update(compare.from_run(self.store, last.id).outcomes)
            baseline = compare.Baseline(str(last.id), outcomes)
        changes, removed = compare.compare(run.results, baseline, exists)
        for result in run.results:
            result.change = changes.get(result.nodeid, "")
        run.removed = removed
        run.baseline = baseline.label
        self.store.set_changes(self.run_id, changes)
        return baseline

    def finish(self, run: RunSummary) -> None:
        self.store.finish_run(self.run_id, interrupted=run.interrupted, baseline=run.baseline, end=run.end)
