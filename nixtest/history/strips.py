"""The history as pages show it: each test's last outcomes as strip cells, and their logs.

A cell links to the test's log of that run.  This run's log is OUT/logs/...;
an earlier run's log lives only in the history database, so the log of each
earlier *failed, errored or flaky* result is written next to the page
(`OUT/history/run-<id>/<package>/<test>.log` for log.html) — a passing result's
cell is a box with a title and no link: writing every past passing log on
every run would cost 20 files per test.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

from nixtest.errors import NixtestError
from nixtest.history.store import HistoryStore, StripRecord
from nixtest.reports.historyhtml import HistoryRow, RunRow, render_history
from nixtest.reports.strip import STRIP_LENGTH
from nixtest.reports.text import atomic_write
from nixtest.results import HistoryCell as Cell
from nixtest.results import RunSummary, TestResult
from nixtest.runner import format_failure

#: the folder, in OUT or beside a history page, holding earlier runs' logs
LOGS = "history"


def _write_log(store: HistoryStore, record: StripRecord, folder: Path, page_dir: Path) -> str:
    """Writes an earlier result's log under `folder`; its address from the page, or ""."""
    path = folder / f"run-{record.run_id}" / record.package / f"{record.test}.log"
    if path.exists():  # a run's log never changes once recorded: not read again every run
        return os.path.relpath(path, page_dir)
    data = store.log(record.id)
    if data is None:
        # not kept (over the size limit, or recorded before logs of failures were):
        # what the history has of it, the result's report
        try:
            result = store.result(record.id)
        except NixtestError:
            return ""
        note = "nixtest: the full log of this result was not kept; its report as recorded:\n"
        data = (note + format_failure(result) + "\n").encode("utf-8", "replace")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return os.path.relpath(path, page_dir)


def cells(
    store: HistoryStore,
    records: Iterable[StripRecord],
    folder: Path,
    page_dir: Path,
    current: tuple[str, str] | None = None,
) -> list[Cell]:
    """`records` (latest first, as the store gives them) as strip cells, oldest first.

    `current` is (run id, address of its log) for the run a page is about.
    """
    made = []
    current_run = current[0] if current is not None else None
    for record in list(records)[:STRIP_LENGTH][::-1]:
        run = str(record.run_id)
        is_current = run == current_run
        if is_current:
            log = current[1] if current is not None else ""
        elif record.flaky or record.outcome in ("failed", "error"):
            log = _write_log(store, record, folder, page_dir)
        else:
            log = ""
        made.append(
            Cell(
                run=run,
                outcome=record.outcome,
                when=record.recorded,
                duration=record.duration,
                message=record.message,
                flaky=bool(record.flaky),
                cached=bool(record.cached),
                log=log,
                current=is_current,
            )
        )
    return made


class Strips(Mapping[str, list[Cell]]):
    """Each result's strip, read from the history when a report asks for it.

    log.html reads a test's strip as it writes the test; the strips are never
    all held at once: 20 cells a test were the largest part of a 10,000-test
    run's memory once its history had 20 runs (about 4 KiB a test).  An
    earlier result's log is written under OUT/history/ when its strip is read.
    """

    def __init__(
        self,
        run: RunSummary,
        store: HistoryStore,
        out: Path,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        #: says once why strips are missing: the history never fails a report
        self._warn = warn
        self._failed = False
        self.out = Path(os.path.abspath(out))
        self._prefix = os.path.join(str(self.out), "")
        self._logs = self.out / LOGS
        self.run_id = run.run_id
        self.set_spec = run.set_spec
        self._results = {result.nodeid: result for result in run.results}
        #: the tests whose strips were read, and the runs whose logs they link to
        self._read: set[str] = set()
        self._kept: set[str] = set()
        #: the last strip read: log.html reads a flaky or changed test's twice
        self._last: tuple[str, list[Cell]] | None = None

    def __getitem__(self, nodeid: str) -> list[Cell]:
        if self._last is not None and self._last[0] == nodeid:
            return self._last[1]
        result = self._results[nodeid]
        if self._failed:
            return []
        try:
            made = self._read_strip(result)
        except Exception as exc:  # noqa: BLE001 - the history never fails a run or a report
            self._failed = True
            if self._warn is not None:
                self._warn(f"cannot read the strips of this run's tests: {type(exc).__name__}: {exc}")
            return []
        self._read.add(nodeid)
        self._kept.update(f"run-{cell.run}" for cell in made if cell.log)
        self._last = (nodeid, made)
        return made

    def _read_strip(self, result: TestResult) -> list[Cell]:
        records = self.store.strip_records(result.package, result.test, self.set_spec, STRIP_LENGTH)
        log = ""
        if result.log_path and os.path.exists(result.log_path):
            log = self._relative(result.log_path)
        current = (self.run_id, log) if self.run_id else None
        return cells(self.store, records, self._logs, self.out, current)

    def _relative(self, path: str) -> str:
        """`os.path.relpath(path, self.out)`, without its work a test for a log under OUT."""
        if path.startswith(self._prefix) and os.path.normpath(path) == path:
            return path[len(self._prefix) :]
        return os.path.relpath(path, self.out)

    def __iter__(self) -> Iterator[str]:
        return iter(self._results)

    def __len__(self) -> int:
        return len(self._results)

    def prune(self) -> None:
        """Removes the logs of runs no strip links to any more, once every strip was read
        (log.html was written); otherwise keeps them all."""
        if not self._failed and self._read >= self._results.keys():
            _prune(self.out / LOGS, self._kept)


def attach_strips(
    run: RunSummary, store: HistoryStore, out: Path, warn: Callable[[str], None] | None = None
) -> None:
    """Each result's strip, for log.html: its last 20 results of this set, this run's last.

    Read when log.html asks for it (`Strips`); `prune_strips` once the reports are written.
    """
    run.strips = Strips(run, store, out, warn)


def prune_strips(run: RunSummary) -> None:
    """OUT/history without the runs no strip of this run links to: it does not grow run after run."""
    if isinstance(run.strips, Strips):
        run.strips.prune()


def _prune(folder: Path, kept: set[str]) -> None:
    """Removes the logs of runs no strip shows any more: OUT/history does not grow run after run."""
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        if entry.name.startswith("run-") and entry.name not in kept and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)


def write_history_page(store: HistoryStore, page: Path, limit: int = STRIP_LENGTH) -> Path:
    """`nixtest history --html FILE`: the last `limit` runs, every test of them with its strip.

    Earlier results' logs go to a folder beside the page, `<FILE's stem>-logs/`.
    """
    page = Path(os.path.abspath(page))
    folder = page.with_name(f"{page.stem}-logs")
    runs = store.runs(limit=limit)
    rows: list[RunRow] = []
    tests: dict[tuple[str, str, str], str] = {}
    latest = runs[0].id if runs else None
    for run in runs:
        results = store.run_results(run.id, details=False)
        rows.append(
            RunRow(
                run=str(run.id),
                when=run.start,
                set_spec=run.set_spec,
                tests_dir=run.tests_dir,
                counts=run.counts,
                newly_failing=[r.nodeid for r in results if r.change == "newly-failing"],
            )
        )
        for r in results:
            key = (r.set_spec, r.package, r.test)
            if key not in tests:
                tests[key] = r.change if run.id == latest else ""
    several_sets = len({key[0] for key in tests}) > 1
    history_rows = []
    for (set_spec, package, test), change in tests.items():
        records = store.strip_records(package, test, set_spec, STRIP_LENGTH)
        name = f"{package}::{test}" + (f" ({set_spec})" if several_sets else "")
        history_rows.append(HistoryRow(name, cells(store, records, folder, page.parent), change))
    page.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(page, render_history(rows, history_rows, str(store.path)))
