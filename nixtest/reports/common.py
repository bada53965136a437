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
    if absout.startswith("//") or abspath.startswith("//"):
        # POSIX keeps a leading "//": leave it to commonpath and relpath
        if os.path.commonpath([absout, abspath]) != absout:
            return None
        return os.path.relpath(abspath, absout)
    if abspath == absout:
        return "."
    # both normalised: inside OUT is below its prefix (a tenth of commonpath's and relpath's time)
    prefix = absout if absout.endswith(os.sep) else absout + os.sep
    return abspath[len(prefix) :] if abspath.startswith(prefix) else None


def history_lines(result: TestResult) -> list[str]:
    """What the history says of a result: cached, flaky, attempts, change, packages, input key."""
    lines = []
    if result.cached:
        lines.append(f"cached: {result.reason or 'passed before with the same inputs'}")
    if result.flaky:
        lines.append(f"flaky: {flaky_note(result)}")
    if result.attempts > 1:
        lines.append(f"attempts: {result.attempts}")
    lines.extend(f"earlier {line}" for line in result.earlier_attempts)
    if result.change:
        lines.append(f"change: {change_words(result.change)}")
    if result.packages:
        lines.append(
            "packages: " + ", ".join(f"{n} {v}".rstrip() for n, v in sorted(result.packages.items()))
        )
    if result.input_key:
        lines.append(f"input key: {result.input_key}")
    return lines


def flaky_note(result: TestResult) -> str:
    if result.attempts > 1 and result.outcome == "passed":
        return f"passed at attempt {result.attempts}"
    return "passed and failed with the same inputs"


def change_words(change: str) -> str:
    """ "newly-failing" -> "newly failing"."""
    return change.replace("-", " ")


#: the changes of a comparison, in the order reports show them
CHANGES = ("newly-failing", "newly-succeeding", "still-failing", "still-succeeding", "new")


def suite_properties(
    run: RunSummary, package: str, results: list[TestResult], first: bool | None = None
) -> list[tuple[str, str]]:
    """A junit testsuite's properties: each test's change and flags; the run's on the first suite.

    Names are unique in the whole document (some readers keep one property
    table for every testsuite): the tests' are named by `pkg::test`.
    `first`: whether `package` is the run's first (by name), when the caller knows;
    else every result of the run is looked at (for each suite: quadratic in a whole report).
    """
    props: list[tuple[str, str]] = []
    if first is None:
        first = min((r.package for r in run.results), default=package) == package
    if first and run.run_id:
        props.append(("nixtest.run", run.run_id))
    if first and run.baseline is not None:
        props.append(("nixtest.baseline", run.baseline))
        for change in (*CHANGES, "removed"):
            props.append((f"nixtest.{change}", str(run.count_change(change))))
        props.append(("nixtest.removed.tests", " ".join(run.removed)))
    for r in results:
        if r.change:
            props.append((f"nixtest.change.{r.nodeid}", r.change))
        if r.cached:
            props.append((f"nixtest.cached.{r.nodeid}", r.cached_from or "true"))
        if r.flaky:
            props.append((f"nixtest.flaky.{r.nodeid}", f"attempts {r.attempts}"))
    return props


def comparison_lines(run: RunSummary) -> list[str]:
    """The comparison with the baseline in a few lines: counts, then the tests of each change."""
    if run.baseline is None:
        return []
    label = f"run {run.baseline}" if run.baseline.isdigit() else run.baseline
    words = [*CHANGES, "removed"]
    lines = [
        f"compared with {label}: " + ", ".join(f"{run.count_change(c)} {change_words(c)}" for c in words)
    ]
    for change in ("newly-failing", "still-failing", "newly-succeeding", "new"):
        names = sorted(r.nodeid for r in run.results if r.change == change)
        if names:
            lines.append(f"{change_words(change)}: {', '.join(names)}")
    if run.removed:
        lines.append(f"removed: {', '.join(run.removed)}")
    return lines
