"""The result model: one `TestResult` per test run, made of `Step`s.

Reporters read only these objects.  They travel from pytest-xdist workers to
the controller as JSON (`to_json` / `from_json`), so every field is plain data.
Persisted results (the history, `report.json`) carry `SCHEMA_VERSION`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

#: "xfailed": an autopkgtest marked `flaky` that failed; it does not fail the run
Outcome = Literal["passed", "failed", "error", "skipped", "xfailed"]
Stream = Literal["stdout", "stderr"]

#: The version of the persisted form of a result (history database, report.json);
#: raised when a field changes meaning, so that an old record is read knowingly.
SCHEMA_VERSION = 1

#: A test's change against the baseline run, in Hydra's words ("" when not compared).
CHANGES = ("newly-failing", "newly-succeeding", "still-failing", "still-succeeding", "new")

#: What a result's output holds: (stream, text) chunks, in the order printed.
Chunks = list[tuple[str, str]]

#: The kinds of test whose wrapper takes --ipdb: a classic script, a pytest module.
IPDB_KINDS = ("classic", "pytest")


@dataclass
class Step:
    """One checked action of a test: a `succeeds`/`fails`, an import, a pytest function."""

    message: str
    command: str = ""
    exit_code: int | None = None
    outcome: Outcome = "passed"
    #: what was expected of the command, e.g. "exit 0" or "exit != 0"
    expected: str = ""
    #: the tail of the step's output (bounded; secrets masked)
    output: Chunks = field(default_factory=list)
    #: bytes of output left out of `output` (see the full log)
    output_dropped: int = 0
    start: float = 0.0
    end: float = 0.0
    #: for a failure: the traceback or the explanation, short
    detail: str = ""

    @property
    def duration(self) -> float:
        return max(0.0, self.end - self.start)

    def to_dict(self) -> dict[str, Any]:
        """As `dataclasses.asdict` makes it, without its deep copy of every value."""
        data = {name: getattr(self, name) for name in _STEP_FIELDS}
        data["output"] = list(self.output)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Step:
        data = dict(data)
        data["output"] = [(str(s), str(t)) for s, t in data.get("output", [])]
        return cls(**data)


@dataclass
class TestResult:
    """Everything known about one run of one package test."""

    __test__ = False  # not a pytest test class, whatever its name

    package: str
    test: str
    outcome: Outcome = "passed"
    #: one line saying why it did not pass ("" when it passed)
    message: str = ""
    kind: str = ""
    #: the command that ran the test (the wrapper and its arguments)
    command: list[str] = field(default_factory=list)
    exit_code: int | None = None
    timed_out: bool = False
    #: the tail of what the test printed outside its steps (bounded; secrets
    #: masked); all it printed when the driver could not tell (a kill, a wrapper error)
    output: Chunks = field(default_factory=list)
    output_dropped: int = 0
    start: float = field(default_factory=time.time)
    end: float = 0.0
    steps: list[Step] = field(default_factory=list)
    #: the wrapper that reproduces this run ("" if none could be written)
    wrapper: str = ""
    #: the full, unbounded output on disk
    log_path: str = ""
    #: warnings that do not fail the test (e.g. profile collisions)
    warnings: list[str] = field(default_factory=list)
    #: the profile the test ran in
    profile: str = ""
    #: facts the reports show as "name: value" (an autopkgtest's Depends, Restrictions...)
    properties: dict[str, str] = field(default_factory=dict)
    #: the hash of everything the result depends on (see nixtest.run.inputs)
    input_key: str = ""
    #: what went into `input_key`, so that a later run can say what changed
    inputs: dict[str, Any] = field(default_factory=dict)
    #: every package of the test's closure -> its version (or store path)
    packages: dict[str, str] = field(default_factory=dict)
    #: a recorded pass with the same input key was reported instead of running
    cached: bool = False
    #: the run whose pass this cached result repeats
    cached_from: str = ""
    #: why the test ran rather than came from the cache ("" when no cache was asked)
    reason: str = ""
    #: how many times it ran (more than 1 with --retries)
    attempts: int = 1
    #: passed after failing, or passed and failed with the same input key
    flaky: bool = False
    #: one line per earlier attempt: "attempt 1: failed: ..."
    earlier_attempts: list[str] = field(default_factory=list)
    #: against the baseline: one of CHANGES, "" when there is none
    change: str = ""

    @property
    def nodeid(self) -> str:
        return f"{self.package}::{self.test}"

    @property
    def duration(self) -> float:
        return max(0.0, self.end - self.start)

    @property
    def failed_step(self) -> Step | None:
        for step in self.steps:
            if step.outcome in ("failed", "error"):
                return step
        return None

    @property
    def is_bad(self) -> bool:
        """Failed or errored: what makes a run fail."""
        return self.outcome in ("failed", "error")

    @property
    def rerun_lines(self) -> list[str]:
        """The two lines every failure report ends with."""
        if not self.wrapper:
            return []
        # --ipdb needs a Python frame of the test's: a classic script or a pytest
        # module; other wrappers refuse it, and offer --shell (so does this line)
        flag = "--ipdb" if self.kind in IPDB_KINDS else "--shell"
        return [
            f"to reproduce: {self.wrapper}",
            f"    to debug: {self.wrapper} {flag}",
        ]

    def output_text(self) -> str:
        return "".join(text for _, text in self.output)

    def to_dict(self) -> dict[str, Any]:
        """What `dataclasses.asdict` gives, equal to it, made without its deep copy.

        `asdict` copies every value recursively: the closure's `packages` and
        the input key's parts (hundreds of strings) cost about 0.45 ms a test
        here, and every caller only encodes the dict.  The lists and dicts are
        new ones; the strings in them, and `inputs`' inner dicts, are shared:
        read them only.
        """
        data = {name: getattr(self, name) for name in _RESULT_FIELDS}
        data["command"] = list(self.command)
        data["output"] = list(self.output)
        data["steps"] = [step.to_dict() for step in self.steps]
        data["warnings"] = list(self.warnings)
        data["properties"] = dict(self.properties)
        data["inputs"] = dict(self.inputs)
        data["packages"] = dict(self.packages)
        data["earlier_attempts"] = list(self.earlier_attempts)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TestResult:
        # a record written by another version may have fields this one does not know
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if k in known}
        data["steps"] = [Step.from_dict(s) for s in data.get("steps", [])]
        data["output"] = [(str(s), str(t)) for s, t in data.get("output", [])]
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> TestResult:
        return cls.from_dict(json.loads(text))


_STEP_FIELDS = tuple(f.name for f in fields(Step))
_RESULT_FIELDS = tuple(f.name for f in fields(TestResult))


@dataclass
class HistoryCell:
    """One recorded result of a test, as the history strip of log.html shows it (reports/strip.py)."""

    run: str
    outcome: str
    when: float
    duration: float = 0.0
    message: str = ""
    flaky: bool = False
    cached: bool = False
    #: the log's address relative to the page, or "" when no log is kept
    log: str = ""
    #: the result of the run the page is about
    current: bool = False

    @property
    def bad(self) -> bool:
        return self.outcome in ("failed", "error")


@dataclass
class RunSummary:
    """A whole run, as the reporters see it."""

    results: list[TestResult] = field(default_factory=list)
    set_spec: str = "host"
    out_dir: str = ""
    start: float = field(default_factory=time.time)
    end: float = 0.0
    #: True when the run was cut short (Ctrl-C, a crashed worker)
    interrupted: bool = False
    #: the run's id in the history ("" when it has none)
    run_id: str = ""
    #: what the run was compared with: a run id or a file; None when nothing
    baseline: str | None = None
    #: tests of the baseline that no longer exist ("pkg::test")
    removed: list[str] = field(default_factory=list)
    #: each test's last recorded results ("pkg::test" -> oldest first), from the history
    #: (history/strips.py reads each when a report asks for it)
    strips: Mapping[str, list[HistoryCell]] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return max(0.0, (self.end or time.time()) - self.start)

    def by_package(self) -> dict[str, list[TestResult]]:
        packages: dict[str, list[TestResult]] = {}
        for result in sorted(self.results, key=lambda r: (r.package, r.test)):
            packages.setdefault(result.package, []).append(result)
        return packages

    def count(self, outcome: str) -> int:
        return sum(1 for r in self.results if r.outcome == outcome)

    def count_change(self, change: str) -> int:
        """How many tests have `change` ("removed" counts the removed ones)."""
        if change == "removed":
            return len(self.removed)
        return sum(1 for r in self.results if r.change == change)

    @property
    def any_failed(self) -> bool:
        return any(r.outcome in ("failed", "error") for r in self.results)
