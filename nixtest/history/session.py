"""The history as one pytest session uses it: opened on first use, never fatal.

A state folder that cannot hold the database costs the cache and the
comparison, with one warning, not the run.
"""

from __future__ import annotations

import sys
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from nixtest.definitions import TestDef
from nixtest.errors import NixtestError
from nixtest.history import database_path
from nixtest.history.cache import HistoryCache
from nixtest.history.compare import BaselineError
from nixtest.history.recorder import HistoryRecorder
from nixtest.history.store import HistoryStore
from nixtest.results import RunSummary, TestResult
from nixtest.run.cache import CacheAnswer
from nixtest.run.inputs import Inputs

FAIL_ON = ("failures", "regressions")

#: how many tests of one change the terminal names
SHOWN = 20


def parse_retries(value: object) -> int:
    try:
        n = int(str(value))
    except ValueError:
        raise ValueError(f"expected a number of retries, got {value!r}") from None
    if n < 0:
        raise ValueError(f"expected 0 or more retries, got {n}")
    return n


class _LazyCache:
    """The cache protocol, opening the history on the first lookup."""

    def __init__(self, session: HistorySession) -> None:
        self.session = session

    def lookup(self, test: TestDef, inputs: Inputs) -> CacheAnswer:
        cache = self.session.history_cache()
        if cache is None:
            return CacheAnswer(None, "no history to look in")
        return cache.lookup(test, inputs)

    def after_fork(self) -> _LazyCache:
        """This cache in a forked worker process (nixtest.run.workers): a connection of its own.

        SQLite's connections must not cross a fork: the worker opens the same
        database again on its first lookup.
        """
        return _LazyCache(self.session.forked())


class HistorySession:
    def __init__(self, state: Path, set_spec: str, *, no_cache: bool = False) -> None:
        self.state = state
        self.path = database_path(state)
        self.set_spec = set_spec
        self.no_cache = no_cache
        self._store: HistoryStore | None = None
        self._failed = False
        self._recorder: HistoryRecorder | None = None
        self._lock = threading.Lock()
        #: the cache to inject into the run context (None with --no-cache)
        self.cache = None if no_cache else _LazyCache(self)
        self.errors: list[str] = []

    def forked(self) -> HistorySession:
        """The same history, none of it opened yet: for a forked process."""
        return HistorySession(self.state, self.set_spec, no_cache=self.no_cache)

    def _warn(self, message: str) -> None:
        self.errors.append(message)
        print(f"nixtest: warning: {message}", file=sys.stderr)

    def store(self) -> HistoryStore | None:
        with self._lock:  # the scheduler's threads look up the cache at once
            return self._open()

    def _open(self) -> HistoryStore | None:
        if self._store is None and not self._failed:
            try:
                self._store = HistoryStore(self.path)
            except NixtestError as exc:
                self._failed = True
                self._warn(f"{exc.message}: no cache and no comparison for this run")
        return self._store

    def history_cache(self) -> HistoryCache | None:
        store = self.store()
        return HistoryCache(store, self.set_spec) if store is not None else None

    def _recorder_for(self, tests_dir: Path) -> HistoryRecorder | None:
        """This run's record: made with its first result (None without a history)."""
        store = self.store()
        if store is not None and self._recorder is None:
            self._recorder = HistoryRecorder(store, self.set_spec, str(tests_dir))
        return self._recorder

    def add(self, result: TestResult, tests_dir: Path) -> None:
        """Records a result as it arrives."""
        try:
            recorder = self._recorder_for(tests_dir)
            if recorder is not None:
                recorder.add(result)
        except Exception as exc:  # noqa: BLE001 - the history never fails a run
            self._warn(f"cannot record {result.nodeid} in {self.path}: {type(exc).__name__}: {exc}")

    def finish(self, run: RunSummary, baseline: str | None, exists: Callable[[str], bool]) -> None:
        """Compares the run with its baseline and closes its record."""
        try:
            # a run that finished no test (--collect-only, an early Ctrl-C) is no run to compare with
            recorder = self._recorder
            if recorder is None:
                return
            run.run_id = str(recorder.run_id)
            try:
                try:
                    recorder.compare(run, baseline, exists)
                except BaselineError as exc:
                    self._warn(exc.message)
            finally:
                recorder.close()  # every result committed, whatever the comparison did
            recorder.finish(run)
        except Exception as exc:  # noqa: BLE001 - the history never fails a run
            self._warn(f"cannot finish the run's record in {self.path}: {type(exc).__name__}: {exc}")

    def attach_strips(self, run: RunSummary, out: Path) -> None:
        """Each test's last outcomes, for log.html (history/strips.py); never fatal."""
        if not run.run_id or self._store is None:
            return
        try:
            from nixtest.history.strips import attach_strips

            attach_strips(run, self._store, out, self._warn)
        except Exception as exc:  # noqa: BLE001 - the history never fails a run
            self._warn(
                f"cannot read the strips of this run's tests from {self.path}: {type(exc).__name__}: {exc}"
            )

    def prune_strips(self, run: RunSummary) -> None:
        """Once the reports are written: the earlier runs' logs no strip links to, removed; never fatal."""
        if not run.run_id or self._store is None:
            return
        try:
            from nixtest.history.strips import prune_strips

            prune_strips(run)
        except Exception as exc:  # noqa: BLE001 - the history never fails a run
            self._warn(f"cannot remove old logs of earlier runs: {type(exc).__name__}: {exc}")

    # -- the terminal ---------------------------------------------------------------

    def terminal_lines(self, run: RunSummary | None, fail_on: str) -> list[str]:
        if run is None:
            return []
        lines = cache_lines(run, self.no_cache)
        lines += flaky_lines(run)
        lines += change_lines(run)
        if fail_on == "regressions" and run.any_failed:
            newly = run.count_change("newly-failing")
            verdict = f"{newly} newly failing: exit 1" if newly else "nothing newly failing: exit 0"
            lines.append(f"nixtest: --fail-on regressions: {verdict}")
        return lines


def cache_lines(run: RunSummary, no_cache: bool) -> list[str]:
    """How many came from the cache, and why the others ran."""
    cached = [r for r in run.results if r.cached]
    ran = [r for r in run.results if not r.cached]
    if no_cache:
        return [f"nixtest: --no-cache: all {len(ran)} tests ran"] if ran else []
    if not any(r.reason for r in ran) and not cached:
        return []
    reasons = Counter(_why(r) for r in ran)
    lines = [f"nixtest: {len(cached)} cached (passed before with the same inputs), {len(ran)} ran"]
    if len(ran) <= SHOWN:
        lines += [f"  {r.nodeid}: {_why(r)}" for r in sorted(ran, key=lambda r: r.nodeid)]
    else:
        lines += [f"  {n} x {reason}" for reason, n in reasons.most_common(SHOWN)]
    return lines


def _why(result: TestResult) -> str:
    """Why a test was not taken from the cache."""
    if result.reason:
        return result.reason
    # the cache is asked with an input key, which only a prepared test has
    return f"{result.outcome} before it could run" if result.outcome != "passed" else "no input key"


def flaky_lines(run: RunSummary) -> list[str]:
    flaky = sorted((r for r in run.results if r.flaky), key=lambda r: r.nodeid)
    lines = []
    for r in flaky:
        how = (
            f"passed at attempt {r.attempts}"
            if r.attempts > 1
            else f"{r.outcome}; it passed and failed with the same inputs before"
        )
        lines.append(f"nixtest: flaky: {r.nodeid} ({how})")
    return lines


def change_lines(run: RunSummary) -> list[str]:
    """The comparison with the baseline: newly failing first, each with its reproduce line."""
    if run.baseline is None:
        return []
    words = ("newly-failing", "newly-succeeding", "still-failing", "still-succeeding", "new", "removed")
    counts = ", ".join(f"{run.count_change(c)} {c.replace('-', ' ')}" for c in words)
    lines = [f"nixtest: compared with {_label(run.baseline)}: {counts}"]
    by_change: dict[str, list[TestResult]] = {}
    for r in sorted(run.results, key=lambda r: r.nodeid):
        by_change.setdefault(r.change, []).append(r)
    for change in ("newly-failing", "still-failing"):
        tests = by_change.get(change, [])
        if tests:
            lines.append(f"{change.replace('-', ' ')}:")
        for r in tests[:SHOWN]:
            lines.append(f"  {r.nodeid}: {r.outcome}: {r.message}")
            lines += [f"    {line.strip()}" for line in r.rerun_lines[:1]]
        if len(tests) > SHOWN:
            lines.append(f"  ... and {len(tests) - SHOWN} more (see log.html)")
    for change in ("newly-succeeding", "new"):
        names = [r.nodeid for r in by_change.get(change, [])]
        if names:
            lines.append(f"{change.replace('-', ' ')}: {_names(names)}")
    if run.removed:
        lines.append(f"removed: {_names(run.removed)}")
    return lines


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN])
    return shown + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def _label(baseline: str) -> str:
    return f"run {baseline}" if baseline.isdigit() else baseline
