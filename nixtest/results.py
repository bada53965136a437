"""The result model: one `TestResult` per test run, made of `Step`s.

Reporters read only these objects.  They travel from pytest-xdist workers to
the controller as JSON (`to_json` / `from_json`), so every field is plain data.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

#: "xfailed": an autopkgtest marked `flaky` that failed; it does not fail the run
Outcome = Literal["passed", "failed", "error", "skipped", "xfailed"]
Stream = Literal["stdout", "stderr"]

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
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TestResult:
        data = dict(data)
        data["steps"] = [Step.from_dict(s) for s in data.get("steps", [])]
        data["output"] = [(str(s), str(t)) for s, t in data.get("output", [])]
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> TestResult:
        return cls.from_dict(json.loads(text))


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

    @property
    def duration(self) -> float:
        return max(0.0, (self.end or time.time()) - self.start)

    def by_package(self) -> dict[str, list[TestResult]]:
        packages: dict[str, list[TestResult]] = {}
        for result in sorted(self.results, key=lambda r: (r.package, r.test)):
            packages.setdefault(result.package, []).append(result)
        return packages

    def count(self, outcome: Outcome) -> int:
        return sum(1 for r in self.results if r.outcome == outcome)

    @property
    def any_failed(self) -> bool:
        return any(r.outcome in ("failed", "error") for r in self.results)
