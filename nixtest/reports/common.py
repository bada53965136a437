"""Descriptions of results shared by the writers, so every report says the same."""

from __future__ import annotations

import os
from pathlib import Path

from nixtest.reports.text import default_log_path
from nixtest.results import RunSummary, Step, TestResult


def seconds(value: float) -> str:
    """A duration as reports print it: "1.23"."""
    return f"{value:.2f}"


def outcome_label(result: TestResult) -> str:
    """ "passed", "failed", "failed (timed out)", "error", "skipped"."""
    if result.timed_out:
        return f"{result.outcome} (timed out)"
    return result.outcome


def is_bad(result: TestResult) -> bool:
    return result.outcome in ("failed", "error")


def log_path(result: TestResult, out: Path) -> str:
    """The test's full log: the executor's path, or where it puts it."""
    return result.log_path or default_log_path(out, result.package, result.test)


def known_log(result: TestResult, out: Path) -> str | None:
    """The test's full log if the executor named it or it exists, else None.

    A test whose definition could not be loaded never ran and has no log.
    """
    if result.log_path:
        return result.log_path
    path = default_log_path(out, result.package, result.test)
    return path if os.path.exists(path) else None


def step_lines(step: Step) -> list[str]:
    """What is known about a step besides its output, one fact a line."""
    lines = []
    if step.command:
        lines.append(f"command: {step.command}")
    if step.expected:
        lines.append(f"expected: {step.expected}")
    if step.exit_code is not None:
        lines.append(f"exit code: {step.exit_code}")
    return lines


def step_summary(step: Step) -> str:
    """One line: "[failed] message (exit code 1, 0.12 s)"."""
    facts = []
    if step.exit_code is not None:
        facts.append(f"exit code {step.exit_code}")
    facts.append(f"{seconds(step.duration)} s")
    return f"[{step.outcome}] {step.message} ({', '.join(facts)})"


def package_counts(results: list[TestResult]) -> str:
    """ "3 passed, 1 failed" (outcomes that occur, in a fixed order)."""
    parts = []
    for outcome in ("passed", "failed", "error", "skipped", "xfailed"):
        n = sum(1 for r in results if r.outcome == outcome)
        if n:
            parts.append(f"{n} {outcome}")
    return ", ".join(parts) or "no tests"


def run_counts(run: RunSummary) -> str:
    """ "5 tests: 2 passed, 2 failed, 1 error, 0 skipped"."""
    return (
        f"{len(run.results)} tests: {run.count('passed')} passed, "
        f"{run.count('failed')} failed, {run.count('error')} error, "
        f"{run.count('skipped')} skipped"
        + (f", {run.count('xfailed')} xfailed" if run.count("xfailed") else "")
    )


def relative_to_out(path: str, out: Path) -> str | None:
    """`path` relative to OUT if it lies inside OUT, else None."""
    absout = os.path.abspath(out)
    abspath = os.path.abspath(path)
    if os.path.commonpath([absout, abspath]) != absout:
        return None
    return os.path.relpath(abspath, absout)
