"""`nixtest history`: the recorded runs, and one test's outcomes across them, as text."""

from __future__ import annotations

from datetime import datetime

from nixtest.history.store import HistoryStore, ResultRecord, RunRecord

#: how many characters of an input key are shown
KEY_SHOWN = 12


def _when(t: float) -> str:
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def run_line(run: RunRecord, newly_failing: list[str]) -> str:
    c = run.counts
    total = sum(c.get(o, 0) for o in ("passed", "failed", "error", "skipped", "xfailed"))
    parts = [f"{c.get(o, 0)} {o}" for o in ("passed", "failed", "error", "skipped") if c.get(o)]
    for extra in ("cached", "flaky"):
        if c.get(extra):
            parts.append(f"{c[extra]} {extra}")
    state = "" if run.end is not None else ", unfinished"
    if run.interrupted:
        state = ", interrupted"
    line = (
        f"run {run.id}  {_when(run.start)}  {run.set_spec}  {run.tests_dir}  "
        f"{total} tests{': ' if parts else ''}{', '.join(parts)}{state}"
    )
    if newly_failing:
        line += f"; newly failing: {', '.join(newly_failing)}"
    return line


def runs_lines(store: HistoryStore, limit: int = 20) -> list[str]:
    runs = store.runs(limit=limit)
    if not runs:
        return [f"no runs recorded in {store.path}"]
    lines = []
    for run in runs:
        newly = [r.nodeid for r in store.run_results(run.id, details=False) if r.change == "newly-failing"]
        lines.append(run_line(run, newly))
    return lines


def verdict(records: list[ResultRecord]) -> str:
    """flaky when one input key both passed and failed, or a pass needed retries."""
    by_key: dict[str, set[str]] = {}
    for r in records:
        by_key.setdefault(r.input_key, set()).add("bad" if r.is_bad else r.outcome)
    mixed = [k for k, outcomes in by_key.items() if "bad" in outcomes and "passed" in outcomes]
    if mixed:
        return f"flaky: input key {mixed[0][:KEY_SHOWN]} both passed and failed"
    retried = [r for r in records if r.flaky]
    if retried:
        return f"flaky: passed after failing in run {retried[0].run_id}"
    if all(r.is_bad for r in records):
        return "failing"
    if not any(r.is_bad for r in records):
        return "stable"
    return "not flaky: each input key gave one outcome"


def test_lines(store: HistoryStore, package: str, test: str | None, limit: int = 20) -> list[str]:
    """One test's outcomes (or those of every test of a package), the latest first."""
    records = store.test_results(package, test, limit=limit, details=False)
    if not records:
        what = f"{package}::{test}" if test else f"package {package}"
        return [f"no results of {what} recorded in {store.path}"]
    lines = []
    names = sorted({r.nodeid for r in records})
    for name in names:
        mine = [r for r in records if r.nodeid == name]
        lines.append(f"{name}: {verdict(mine)}")
        for r in mine:
            facts = [r.outcome + (" (cached)" if r.cached else "")]
            if r.attempts > 1:
                facts.append(f"{r.attempts} attempts")
            if r.flaky:
                facts.append("flaky")
            if r.change:
                facts.append(r.change)
            lines.append(
                f"  run {r.run_id}  {_when(r.recorded)}  {', '.join(facts)}  key {r.input_key[:KEY_SHOWN]}"
                f"  {r.duration:.2f} s" + (f"  {r.message}" if r.message and r.is_bad else "")
            )
    return lines
