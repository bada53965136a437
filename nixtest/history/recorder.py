"""The history's reporter: records each result as it arrives, compares the run at its end.

Results are written a batch at a time: a result is committed at once when the
last commit is older than `BATCH_SECONDS`, otherwise it waits for the next
commit, which a timer makes at most `BATCH_SECONDS` later (or sooner, with
`BATCH_SIZE` results waiting).  A run of fast tests thus costs a few
transactions a second instead of one a test (a commit, and the database's
write lock other runs wait for), while a run of slow tests still commits each
result as it ends.  The end of the run, Ctrl-C and SIGTERM (both end the run
through pytest's session finish) commit what is left.  A run that is killed
(SIGKILL, a power cut) keeps every result finished `BATCH_SECONDS` before it.

Whether a result is flaky (its input key both passed and failed) is found
when its batch is committed, for the whole batch in one query: a result's
`flaky` is final once it is committed (`close` commits the last ones, before
the comparison and the reports read it).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable

from nixtest.history import compare
from nixtest.history.store import HistoryStore, KeyHistory
from nixtest.results import RunSummary, TestResult

#: the longest a finished result waits to be committed (seconds)
BATCH_SECONDS = 0.25
#: results committed at once at the most
BATCH_SIZE = 256


def _log_of(result: TestResult) -> bytes | None:
    """The log the history keeps with a result: a clean pass's is what the cache gives back; a
    failure's or a flaky result's is what an earlier run's box in a history strip links to
    (history/strips.py).  A cached result repeats a log kept already."""
    keep = not result.cached and (result.outcome == "passed" or result.is_bad or result.flaky)
    if not keep or not result.log_path:
        return None
    try:
        with open(result.log_path, "rb") as f:
            return f.read()
    except OSError:
        return None


class HistoryRecorder:
    """One run's record in the history."""

    name = "history"

    def __init__(
        self,
        store: HistoryStore,
        set_spec: str,
        tests_dir: str,
        command: list[str] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        timer: bool = True,
    ) -> None:
        self.store = store
        self.set_spec = set_spec
        self.tests_dir = tests_dir
        self.run_id = store.begin_run(set_spec, tests_dir, list(sys.argv if command is None else command))
        self._clock = clock
        #: results waiting for their commit (their logs are read when it comes)
        self._pending: list[TestResult] = []
        #: each recorded test's record id, so that the comparison updates its row by key
        self.ids: dict[str, int] = {}
        self._last_commit = float("-inf")
        #: one commit at a time, in the order the results came
        self._commit_lock = threading.Lock()
        self._wake = threading.Condition(threading.Lock())
        self._closed = False
        #: an error of the timer's commit, raised by the next call of the run's thread
        self._error: BaseException | None = None
        self._timer: threading.Thread | None = None
        self._use_timer = timer

    def add(self, result: TestResult) -> None:
        """Records `result` with the next commit (see `flush`, which marks it flaky if need be).

        Nothing is read here: the run's thread only appends to the batch (a query a test
        was the largest part of what the history cost a warm run).
        """
        self._raise_timer_error()
        with self._wake:
            self._pending.append(result)
            due = len(self._pending) >= BATCH_SIZE or self._clock() - self._last_commit >= BATCH_SECONDS
            if not due and self._use_timer:
                self._start_timer()
                if len(self._pending) == 1:
                    self._wake.notify()
        if due:
            self.flush()

    def flush(self) -> None:
        """Commits the results waiting, in one transaction, each marked flaky first if it is."""
        with self._commit_lock:
            with self._wake:
                batch, self._pending = self._pending, []
                self._last_commit = self._clock()
            if not batch:
                return
            try:
                # under the commit lock: every earlier batch is committed, so the
                # history holds every earlier result of these keys but this batch's
                self._mark_flaky(batch)
                entries = [(result, _log_of(result)) for result in batch]
                ids = self.store.add_many(self.run_id, self.set_spec, entries)
            except BaseException:
                # rolled back (a busy database, Ctrl-C meanwhile): the next commit tries again
                with self._wake:
                    self._pending[:0] = batch
                raise
            for result, record in zip(batch, ids):
                self.ids[result.nodeid] = record

    def _mark_flaky(self, batch: list[TestResult]) -> None:
        """Marks flaky each result whose input key both passed and failed, counting every earlier
        result: the history's (one query for the batch) and the batch's own before it."""
        checked = [r for r in batch if r.input_key and not r.cached]
        if not checked:
            return
        earlier = self.store.key_histories({r.input_key for r in checked})
        for result in checked:
            before = earlier.get(result.input_key, KeyHistory())
            if before.count and result.outcome in ("passed", "failed", "error"):
                passed = result.outcome == "passed" or before.passed
                failed = result.is_bad or before.bad
                if (passed and failed) or (result.outcome == "passed" and before.is_flaky):
                    result.flaky = True
            earlier[result.input_key] = before.adding(result)

    def _start_timer(self) -> None:
        """The thread that commits what waits longer than `BATCH_SECONDS` (called holding `_wake`)."""
        if self._timer is None and not self._closed:
            self._timer = threading.Thread(target=self._tick, name="nixtest-history", daemon=True)
            self._timer.start()

    def _tick(self) -> None:
        while True:
            with self._wake:
                while not self._pending and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                # the oldest waiting result is due BATCH_SECONDS after the last commit
                delay = self._last_commit + BATCH_SECONDS - self._clock()
                if delay > 0:
                    self._wake.wait(delay)
                    continue
            try:
                self.flush()
            except Exception as exc:  # noqa: BLE001 - handed to the run's thread
                self._error = exc
                return

    def _raise_timer_error(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error

    def close(self) -> None:
        """Commits what is left and stops the timer."""
        with self._wake:
            self._closed = True
            self._wake.notify_all()
        timer = self._timer
        if timer is not None and timer is not threading.current_thread():
            timer.join()
        self.flush()
        self._raise_timer_error()

    def compare(
        self, run: RunSummary, baseline_spec: str | None, exists: Callable[[str], bool]
    ) -> compare.Baseline | None:
        """Sets each result's change and the removed tests against the baseline; None if there is none."""
        self.flush()
        if baseline_spec:
            baseline = compare.load(baseline_spec, self.store)
        else:
            last = self.store.last_run_id(self.set_spec, self.tests_dir, before=self.run_id)
            if last is None:
                return None
            # a test the last run did not select (`nixtest run sed`) is compared with
            # its latest result before: only a test never seen is new
            outcomes = self.store.latest_outcomes(self.set_spec, self.tests_dir, before=self.run_id)
            outcomes.update(self.store.run_outcomes(last))
            baseline = compare.Baseline(str(last), outcomes)
        changes, removed = compare.compare(run.results, baseline, exists)
        for result in run.results:
            result.change = changes.get(result.nodeid, "")
        run.removed = removed
        run.baseline = baseline.label
        self.store.set_changes(self.run_id, changes, self.ids)
        return baseline

    def finish(self, run: RunSummary) -> None:
        self.close()
        self.store.finish_run(self.run_id, interrupted=run.interrupted, baseline=run.baseline, end=run.end)
