"""The history database: SQLite in the state folder.

Several runs may write it at once, and a run may be killed at any point:

* WAL journal: readers never block the writer, and a killed writer leaves the
  database as it was before its last unfinished transaction;
* every write is one short ``BEGIN IMMEDIATE`` transaction (a run records its
  results a batch at a time, at most 0.25 s after they end: see
  history/recorder.py; a killed run keeps what it finished before that);
* a busy timeout: a writer waits for another instead of failing.

The query API (`runs`, `last_run`, `run_results`, `test_results`,
`results_with_key`, `result`, `log`) is what the cache, the comparison and the
`nixtest history` views read.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from nixtest.errors import NixtestError
from nixtest.results import SCHEMA_VERSION, TestResult

#: how long a writer waits for another one before giving up (seconds)
BUSY_TIMEOUT = 60.0

#: a passing test's log is kept (compressed) for the cache up to this size
LOG_LIMIT = 4 * 1024 * 1024

_TABLES = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    set_spec TEXT NOT NULL,
    tests_dir TEXT NOT NULL,
    start REAL NOT NULL,
    end REAL,
    command TEXT NOT NULL,
    interrupted INTEGER NOT NULL DEFAULT 0,
    baseline TEXT
);
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER NOT NULL REFERENCES runs(id),
    set_spec TEXT NOT NULL,
    package TEXT NOT NULL,
    test TEXT NOT NULL,
    input_key TEXT NOT NULL,
    outcome TEXT NOT NULL,
    cached INTEGER NOT NULL,
    flaky INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    duration REAL NOT NULL,
    message TEXT NOT NULL,
    change TEXT NOT NULL DEFAULT '',
    packages TEXT NOT NULL,
    inputs TEXT NOT NULL,
    recorded REAL NOT NULL,
    schema INTEGER NOT NULL,
    result TEXT NOT NULL,
    log BLOB
);
CREATE INDEX IF NOT EXISTS results_strip ON results
    (package, test, set_spec, id, run_id, outcome, cached, flaky, duration, recorded, message);
CREATE INDEX IF NOT EXISTS results_key ON results (input_key);
CREATE INDEX IF NOT EXISTS results_key_outcome ON results (input_key, outcome, flaky, cached);
CREATE INDEX IF NOT EXISTS results_run_outcome ON results
    (run_id, package, test, outcome, cached, flaky, change);
CREATE INDEX IF NOT EXISTS runs_where ON runs (set_spec, tests_dir);
"""


#: the covering index the cache and the flaky check read (an input key's outcomes) instead of
#: its records, which are about 10 KiB each (their closure, their result, their log)
_KEY_INDEX = "results_key_outcome"

#: the covering index of a test's results (`strip_records`): a strip's 20 records were each a
#: look-up in the table, whose `recorded` comes after the closure (an overflow page or more);
#: it replaces results_test (package, test, set_spec), its first columns
_STRIP_INDEX = "results_strip"

#: the covering index of a run's results, what a comparison and a run's counts read: a run's
#: outcomes, or the latest of the last 20 runs' (90 ms from the table at 20 host runs of 842
#: tests, 6 ms from it); it replaces results_run (run_id), its first column
_RUN_INDEX = "results_run_outcome"

#: the indexes the ones above replace (dropped when an older database is opened)
_OLD_INDEXES = ("results_test", "results_run")

#: input keys looked up in one query (SQLite allows 999 parameters a statement at the least)
_KEYS_A_QUERY = 500


class HistoryError(NixtestError):
    """The history database cannot be opened or written."""


@dataclass
class RunRecord:
    id: int
    set_spec: str
    tests_dir: str
    start: float
    end: float | None
    command: list[str]
    interrupted: bool
    baseline: str | None
    #: outcome -> number of results, and "cached", "flaky", and each change
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class ResultRecord:
    id: int
    run_id: int
    set_spec: str
    package: str
    test: str
    input_key: str
    outcome: str
    cached: bool
    flaky: bool
    attempts: int
    duration: float
    message: str
    change: str
    packages: dict[str, str]
    inputs: dict[str, Any]
    recorded: float

    @property
    def nodeid(self) -> str:
        return f"{self.package}::{self.test}"

    @property
    def is_bad(self) -> bool:
        return self.outcome in ("failed", "error")


class StripRecord(NamedTuple):
    """A recorded result as a history strip shows it (`HistoryStore.strip_records`): the columns
    of the strip index, read without the table."""

    id: int
    run_id: int
    package: str
    test: str
    outcome: str
    cached: int
    flaky: int
    duration: float
    message: str
    recorded: float

    @property
    def is_bad(self) -> bool:
        return self.outcome in ("failed", "error")


@dataclass(frozen=True)
class KeyHistory:
    """The results recorded under one input key, summed up (`HistoryStore.key_history`)."""

    count: int = 0
    #: one of them passed; one failed or errored; one was flaky; one did not pass
    passed: bool = False
    bad: bool = False
    flaky: bool = False
    other: bool = False

    @property
    def is_flaky(self) -> bool:
        """Passed and failed with these inputs, or flaky once (as `history.cache.is_flaky`)."""
        return (self.passed and self.bad) or self.flaky

    def adding(self, result: TestResult) -> KeyHistory:
        """The same with `result` recorded too."""
        return KeyHistory(
            count=self.count + 1,
            passed=self.passed or result.outcome == "passed",
            bad=self.bad or result.is_bad,
            flaky=self.flaky or result.flaky,
            other=self.other or result.outcome != "passed",
        )


_INSERT = (
    "INSERT INTO results (run_id, set_spec, package, test, input_key, outcome, cached, flaky, "
    "attempts, duration, message, change, packages, inputs, recorded, schema, result, log) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

_RESULT_COLUMNS = (
    "id, run_id, set_spec, package, test, input_key, outcome, cached, flaky, attempts, "
    "duration, message, change, packages, inputs, recorded"
)


#: the same without the closure and the input key's parts: what strips and listings show
_BRIEF_COLUMNS = _RESULT_COLUMNS.replace("packages, inputs, ", "")


#: what a strip shows of a result: the strip index's columns, in StripRecord's order
_STRIP_COLUMNS = "id, run_id, package, test, outcome, cached, flaky, duration, message, recorded"


def _result_record(row: sqlite3.Row, details: bool = True) -> ResultRecord:
    """A row as a record; without `details`, its `packages` and `inputs` are left empty (not read)."""
    return ResultRecord(
        id=row["id"],
        run_id=row["run_id"],
        set_spec=row["set_spec"],
        package=row["package"],
        test=row["test"],
        input_key=row["input_key"],
        outcome=row["outcome"],
        cached=bool(row["cached"]),
        flaky=bool(row["flaky"]),
        attempts=row["attempts"],
        duration=row["duration"],
        message=row["message"],
        change=row["change"],
        packages=json.loads(row["packages"]) if details else {},
        inputs=json.loads(row["inputs"]) if details else {},
        recorded=row["recorded"],
    )


class HistoryStore:
    """One connection to the history database (one per process and thread)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # autocommit mode: every transaction below is explicit
            self._db = sqlite3.connect(
                str(self.path), timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
            )
            self._db.row_factory = sqlite3.Row
            self._db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
            mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise HistoryError(f"{self.path}: SQLite cannot use a WAL journal here ({mode})")
            # WAL + NORMAL: a committed transaction survives a killed process
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._create()
        except sqlite3.Error as exc:
            raise HistoryError(f"cannot open the history {self.path}: {exc}") from exc
        except OSError as exc:
            raise HistoryError(f"cannot open the history {self.path}: {exc.strerror or exc}") from exc

    def _create(self) -> None:
        try:
            known = self._db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        except sqlite3.OperationalError:
            known = None  # a new database: no tables yet
        if known is not None and int(known[0]) == SCHEMA_VERSION and self._has_indexes():
            return  # made already: no write lock taken just to open it
        with self._write() as db:
            for statement in _TABLES.split(";"):
                if statement.strip():
                    db.execute(statement)
            # their first columns begin the new ones: an index less to write a result
            for name in _OLD_INDEXES:
                db.execute(f"DROP INDEX IF EXISTS {name}")
            row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) > SCHEMA_VERSION:
                raise HistoryError(
                    f"{self.path} was written by a newer nixtest (schema {row[0]}, this one reads "
                    f"{SCHEMA_VERSION}): use another --state folder"
                )

    def _has_index(self, name: str) -> bool:
        row = self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?", (name,))
        return row.fetchone() is not None

    def _has_indexes(self) -> bool:
        """The indexes added since the first schema are there (made by `_create` otherwise)."""
        wanted = (_KEY_INDEX, _STRIP_INDEX, _RUN_INDEX)
        marks = ", ".join("?" * len(wanted))
        row = self._db.execute(
            f"SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name IN ({marks})", wanted
        ).fetchone()
        return int(row[0]) == len(wanted)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction: all of it is recorded, or none of it."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        # one connection, used by the scheduler's threads too: one statement at a time
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _row(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Row | None:
        rows = self._rows(sql, args)
        return rows[0] if rows else None

    def close(self) -> None:
        self._db.close()

    # -- writing ----------------------------------------------------------------

    def begin_run(self, set_spec: str, tests_dir: str, command: list[str], start: float | None = None) -> int:
        with self._write() as db:
            cursor = db.execute(
                "INSERT INTO runs (set_spec, tests_dir, start, command) VALUES (?, ?, ?, ?)",
                (set_spec, tests_dir, time.time() if start is None else start, json.dumps(command)),
            )
            return int(cursor.lastrowid or 0)

    def finish_run(
        self, run_id: int, *, interrupted: bool, baseline: str | None, end: float | None = None
    ) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE runs SET end = ?, interrupted = ?, baseline = ? WHERE id = ?",
                (time.time() if end is None else end, int(interrupted), baseline, run_id),
            )

    def add(self, run_id: int, set_spec: str, result: TestResult, log: bytes | None = None) -> int:
        """Records one result (and, for a pass, its log, so that the cache can give it back)."""
        return self.add_many(run_id, set_spec, [(result, log)])[0]

    def add_many(
        self, run_id: int, set_spec: str, entries: Sequence[tuple[TestResult, bytes | None]]
    ) -> list[int]:
        """Records results (each with its log or None) in one transaction; their record ids.

        A transaction costs a commit (and the write lock); a run records its results a batch at a
        time (history/recorder.py).  The rows are encoded before the lock is taken.
        """
        rows = [self._result_row(run_id, set_spec, result, log) for result, log in entries]
        with self._write() as db:
            return [int(db.execute(_INSERT, row).lastrowid or 0) for row in rows]

    @staticmethod
    def _result_row(run_id: int, set_spec: str, result: TestResult, log: bytes | None) -> tuple[Any, ...]:
        blob = zlib.compress(log) if log is not None and len(log) <= LOG_LIMIT else None
        data = result.to_dict()
        data["schema"] = SCHEMA_VERSION
        return (
            run_id,
            set_spec,
            result.package,
            result.test,
            result.input_key,
            result.outcome,
            int(result.cached),
            int(result.flaky),
            result.attempts,
            result.duration,
            result.message,
            result.change,
            json.dumps(result.packages),
            json.dumps(result.inputs),
            time.time(),
            SCHEMA_VERSION,
            json.dumps(data),
            blob,
        )

    def set_changes(self, run_id: int, changes: dict[str, str], ids: dict[str, int] | None = None) -> None:
        """Each test's change against the run's baseline, once the run is compared.

        `ids`: the record id of each test's result, when the caller knows it: then each
        update finds its row by its key, not among every result the test ever had.
        """
        by_change: dict[str, list[int]] = {}
        others = []
        for nodeid, change in changes.items():
            if ids and nodeid in ids:
                by_change.setdefault(change, []).append(ids[nodeid])
            else:
                others.append((nodeid, change))
        with self._write() as db:
            # a statement for each change and `_KEYS_A_QUERY` records, not one a record: a
            # run's changes are mostly one word ("still-succeeding")
            for change, record_ids in by_change.items():
                for start in range(0, len(record_ids), _KEYS_A_QUERY):
                    chunk = record_ids[start : start + _KEYS_A_QUERY]
                    db.execute(
                        f"UPDATE results SET change = ? WHERE id IN ({', '.join('?' * len(chunk))})",
                        (change, *chunk),
                    )
            for nodeid, change in others:
                package, _, test = nodeid.partition("::")
                db.execute(
                    "UPDATE results SET change = ? WHERE run_id = ? AND package = ? AND test = ?",
                    (change, run_id, package, test),
                )

    # -- reading ----------------------------------------------------------------

    def _run_record(self, row: sqlite3.Row) -> RunRecord:
        counts: dict[str, int] = {}
        for outcome, n in self._rows(
            "SELECT outcome, count(*) FROM results WHERE run_id = ? GROUP BY outcome", (row["id"],)
        ):
            counts[outcome] = n
        for column in ("cached", "flaky"):
            counts[column] = self._rows(
                f"SELECT count(*) FROM results WHERE run_id = ? AND {column}", (row["id"],)
            )[0][0]
        for change, n in self._rows(
            "SELECT change, count(*) FROM results WHERE run_id = ? AND change != '' GROUP BY change",
            (row["id"],),
        ):
            counts[change] = n
        return RunRecord(
            id=row["id"],
            set_spec=row["set_spec"],
            tests_dir=row["tests_dir"],
            start=row["start"],
            end=row["end"],
            command=json.loads(row["command"]),
            interrupted=bool(row["interrupted"]),
            baseline=row["baseline"],
            counts=counts,
        )

    def run(self, run_id: int) -> RunRecord | None:
        row = self._row("SELECT * FROM runs WHERE id = ?", (run_id,))
        return self._run_record(row) if row is not None else None

    def runs(
        self, set_spec: str | None = None, tests_dir: str | None = None, limit: int = 20
    ) -> list[RunRecord]:
        """The most recent runs first (of one set and tests folder, if given)."""
        where, args = self._where(set_spec=set_spec, tests_dir=tests_dir)
        rows = self._rows(f"SELECT * FROM runs {where} ORDER BY id DESC LIMIT ?", (*args, limit))
        return [self._run_record(row) for row in rows]

    def has_run(self, run_id: int) -> bool:
        return self._row("SELECT 1 FROM runs WHERE id = ?", (run_id,)) is not None

    def last_run_id(self, set_spec: str, tests_dir: str, before: int | None = None) -> int | None:
        """`last_run`'s id, without the counts of its results (four queries over them)."""
        row = self._row(
            "SELECT id FROM runs WHERE set_spec = ? AND tests_dir = ? AND end IS NOT NULL AND id < ? "
            "ORDER BY id DESC LIMIT 1",
            (set_spec, tests_dir, before if before is not None else 2**62),
        )
        return int(row[0]) if row is not None else None

    def last_run(self, set_spec: str, tests_dir: str, before: int | None = None) -> RunRecord | None:
        """The last finished run of this set and tests folder (before run `before`)."""
        row = self._row(
            "SELECT * FROM runs WHERE set_spec = ? AND tests_dir = ? AND end IS NOT NULL AND id < ? "
            "ORDER BY id DESC LIMIT 1",
            (set_spec, tests_dir, before if before is not None else 2**62),
        )
        return self._run_record(row) if row is not None else None

    def latest_outcomes(self, set_spec: str, tests_dir: str, before: int, runs: int = 20) -> dict[str, str]:
        """Each test's outcome in the latest of the last `runs` finished runs before `before` that had it.

        One row a test: SQLite picks each test's latest result (a bare column beside max() comes
        from the row of the maximum), not Python from every result of `runs` runs.
        """
        rows = self._rows(
            "SELECT r.package, r.test, r.outcome, max(r.id) FROM results r JOIN ("
            "  SELECT id FROM runs WHERE set_spec = ? AND tests_dir = ? AND end IS NOT NULL AND id < ?"
            "  ORDER BY id DESC LIMIT ?) u ON r.run_id = u.id GROUP BY r.package, r.test",
            (set_spec, tests_dir, before, runs),
        )
        return {f"{package}::{test}": outcome for package, test, outcome, _ in rows}

    def run_outcomes(self, run_id: int) -> dict[str, str]:
        """Each test of a run ("pkg::test") -> its outcome: three short columns a result, nothing else.

        What a comparison needs; `run_results` decodes every result's closure and inputs
        (about 20 KiB a test at the peak, 200 MB at 10,000 tests).
        """
        with self._lock:
            cursor = self._db.execute(
                "SELECT package, test, outcome FROM results WHERE run_id = ? ORDER BY id", (run_id,)
            )
            return {f"{package}::{test}": outcome for package, test, outcome in cursor}

    def key_history(self, input_key: str) -> KeyHistory:
        """What the results of one input key did: from the covering index alone, no record read."""
        return self.key_histories([input_key]).get(input_key, KeyHistory())

    def key_histories(self, input_keys: Iterable[str]) -> dict[str, KeyHistory]:
        """`key_history` of many keys, a query for up to `_KEYS_A_QUERY` of them; a key with no
        result is left out."""
        keys = list(input_keys)
        found: dict[str, KeyHistory] = {}
        for start in range(0, len(keys), _KEYS_A_QUERY):
            chunk = keys[start : start + _KEYS_A_QUERY]
            rows = self._rows(
                "SELECT input_key, count(*), max(outcome = 'passed'), max(outcome IN ('failed', 'error')), "
                f"max(flaky), max(outcome != 'passed') FROM results "
                f"WHERE input_key IN ({', '.join('?' * len(chunk))}) GROUP BY input_key",
                tuple(chunk),
            )
            for key, count, passed, bad, flaky, other in rows:
                found[key] = KeyHistory(
                    count=count, passed=bool(passed), bad=bool(bad), flaky=bool(flaky), other=bool(other)
                )
        return found

    def key_source(self, input_key: str) -> tuple[int, int] | None:
        """(record id, run id) of the latest result of an input key that ran (not from the cache),
        else of its latest result; None when it has none."""
        row = self._row(
            "SELECT id, run_id FROM results WHERE input_key = ? ORDER BY cached, id DESC LIMIT 1",
            (input_key,),
        )
        return (int(row[0]), int(row[1])) if row is not None else None

    def key_latest_outcome(self, input_key: str) -> str | None:
        row = self._row(
            "SELECT outcome FROM results WHERE input_key = ? ORDER BY id DESC LIMIT 1", (input_key,)
        )
        return str(row[0]) if row is not None else None

    def run_results(self, run_id: int, details: bool = True) -> list[ResultRecord]:
        """Every result of a run; without `details`, no closure or inputs read (see `test_results`)."""
        columns = _RESULT_COLUMNS if details else _BRIEF_COLUMNS
        rows = self._rows(
            f"SELECT {columns} FROM results WHERE run_id = ? ORDER BY package, test, id", (run_id,)
        )
        return [_result_record(row, details) for row in rows]

    def test_results(
        self,
        package: str,
        test: str | None = None,
        set_spec: str | None = None,
        limit: int = 20,
        details: bool = True,
    ) -> list[ResultRecord]:
        """The results of a test (or of every test of a package) across runs, the latest first.

        Without `details` their `packages` and `inputs` are empty: a strip shows outcomes,
        and decoding 20 closures a test was most of log.html's strips (0.5 ms a test).
        """
        where, args = self._where(package=package, test=test, set_spec=set_spec)
        columns = _RESULT_COLUMNS if details else _BRIEF_COLUMNS
        rows = self._rows(f"SELECT {columns} FROM results {where} ORDER BY id DESC LIMIT ?", (*args, limit))
        return [_result_record(row, details) for row in rows]

    def strip_records(
        self, package: str, test: str | None = None, set_spec: str | None = None, limit: int = 20
    ) -> list[StripRecord]:
        """The results of a test as a strip shows them, the latest first: from the strip index
        alone (no record read), as plain tuples."""
        where, args = self._where(package=package, test=test, set_spec=set_spec)
        with self._lock:
            cursor = self._db.cursor()
            cursor.row_factory = None  # no sqlite3.Row a result: StripRecord is a tuple
            cursor.execute(
                f"SELECT {_STRIP_COLUMNS} FROM results {where} ORDER BY id DESC LIMIT ?", (*args, limit)
            )
            return list(map(StripRecord._make, cursor.fetchall()))

    def results_with_key(self, input_key: str) -> list[ResultRecord]:
        """Every result recorded under one input key, the latest first."""
        rows = self._rows(
            f"SELECT {_RESULT_COLUMNS} FROM results WHERE input_key = ? ORDER BY id DESC", (input_key,)
        )
        return [_result_record(row) for row in rows]

    def result(self, record_id: int) -> TestResult:
        """The full recorded result (steps, output) of a record."""
        row = self._row("SELECT result FROM results WHERE id = ?", (record_id,))
        if row is None:
            raise HistoryError(f"{self.path}: no result {record_id}")
        return TestResult.from_json(row[0])

    def log(self, record_id: int) -> bytes | None:
        row = self._row("SELECT log FROM results WHERE id = ?", (record_id,))
        if row is None or row[0] is None:
            return None
        return zlib.decompress(row[0])

    @staticmethod
    def _where(**conditions: str | None) -> tuple[str, tuple[str, ...]]:
        used = {k: v for k, v in conditions.items() if v is not None}
        if not used:
            return "", ()
        return "WHERE " + " AND ".join(f"{k} = ?" for k in used), tuple(used.values())
