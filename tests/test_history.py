"""The run history end to end: cache, comparison, flaky tests, report.json, `nixtest history`.

Every run is the real `nixtest run` command in a subprocess, on a real
`prefix:` package set whose YAML file is edited between runs, with its own
state folder (and so its own history database).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import nixtest_command, pids_matching, remove_tree, world_readable_dir
from nixtest.history import database_path
from nixtest.history.store import HistoryStore

#: seconds a whole run may take before the test gives up on it
RUN_TIMEOUT = 180

#: in ../shared/reference/ (the `reference` fixture of the checkout's conftest.py)
JUNIT_XSD = "junit/jenkins-xunit-junit-10.xsd"


class Done:
    def __init__(self, proc: subprocess.CompletedProcess[str], out: Path) -> None:
        self.code = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.out = out
        # read now: the next run into the same folder replaces it
        path = out / "report.json"
        self.report: dict[str, Any] = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}

    @property
    def text(self) -> str:
        return self.stdout + "\n" + self.stderr

    def tests(self) -> dict[str, dict[str, Any]]:
        return {t["id"]: t for t in self.report["tests"]}

    def cached(self) -> set[str]:
        return {i for i, t in self.tests().items() if t["cached"]}

    def ran(self) -> set[str]:
        return {i for i, t in self.tests().items() if not t["cached"]}

    def changes(self) -> dict[str, str]:
        return {i: t["change"] for i, t in self.tests().items()}


class World:
    """A prefix set (set.yaml and its prefixes), a tests folder, a state folder of its own."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tests = root / "pt"
        self.state = root / "state"
        self.out = root / "out"
        self.set_file = root / "set.yaml"
        self.tests.mkdir()
        self.packages: dict[str, dict[str, Any]] = {}

    def package(self, name: str, version: str, depends: list[str] | None = None) -> None:
        prefix = self.root / "prefixes" / name
        (prefix / "bin").mkdir(parents=True, exist_ok=True)
        self.packages[name] = {"prefix": str(prefix), "version": version, "depends": depends or []}
        self.write_set()

    def write_set(self) -> None:
        lines = [
            f'{n}: {{prefix: {p["prefix"]}, version: "{p["version"]}", depends: [{", ".join(p["depends"])}]}}'
            for n, p in self.packages.items()
        ]
        self.set_file.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def tests_of(self, package: str, tests_yaml: str, files: dict[str, str] | None = None) -> Path:
        folder = self.tests / package
        folder.mkdir(exist_ok=True)
        (folder / "tests.yaml").write_text(textwrap.dedent(tests_yaml), encoding="utf-8")
        for rel, content in (files or {}).items():
            path = folder / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")
        for path in [folder, *folder.rglob("*")]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        return folder

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NIXTEST_")}
        env["NIXTEST_STATE"] = str(self.state)
        env.update(extra)
        return env

    def nixtest(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            nixtest_command(*args),
            capture_output=True,
            text=True,
            env=self.env(**env),
            cwd=self.root,
            timeout=RUN_TIMEOUT,
        )

    def run(self, *args: str, out: Path | None = None, **env: str) -> Done:
        out = out or self.out
        proc = self.nixtest(
            "run",
            "--tests",
            str(self.tests),
            "--set",
            f"prefix:{self.set_file}",
            "--out",
            str(out),
            *args,
            **env,
        )
        return Done(proc, out)


@pytest.fixture
def world() -> Iterator[World]:
    root = world_readable_dir("nixtest-history-")
    yield World(root)
    remove_tree(root)


def chain(world: World) -> None:
    """zlib <- libpng <- app, and other on its own; one passing test each, one failing test."""
    world.package("zlib", "1:1.2.13")
    world.package("libpng", "1.6.39", ["zlib"])
    world.package("app", "2.0", ["libpng"])
    world.package("other", "7")
    for name in ("zlib", "libpng", "app", "other"):
        world.tests_of(name, "tests:\n  works:\n    run: /bin/true\n")
    world.tests_of(
        "other",
        """\
        tests:
          works:
            run: /bin/true
          broken:
            run: /bin/false
        """,
    )


ALL = {"zlib::works", "libpng::works", "app::works", "other::works", "other::broken"}


def test_an_unchanged_rerun_caches_every_pass_and_reruns_every_failure(world: World) -> None:
    chain(world)
    first = world.run()
    assert first.code == 1, first.text
    assert first.cached() == set() and first.ran() == ALL
    second = world.run()
    assert second.code == 1, second.text
    assert second.cached() == ALL - {"other::broken"}
    assert second.ran() == {"other::broken"}
    tests = second.tests()
    assert tests["other::broken"]["outcome"] == "failed"
    assert all(tests[i]["outcome"] == "passed" for i in second.cached())
    # the terminal says how many and why the others ran
    assert "nixtest: 4 cached (passed before with the same inputs), 1 ran" in second.stdout
    assert "other::broken: failed last time" in second.stdout
    # a cached test keeps its steps and its log
    assert "cached: passed in run 1 with the same inputs" in (second.out / "log.xml").read_text()
    assert (second.out / "logs" / "zlib" / "works.log").is_file()
    assert second.report["counts"]["cached"] == 4
    # --no-cache runs everything; its environment variable too
    assert world.run("--no-cache").cached() == set()
    assert world.run(NIXTEST_NO_CACHE="1").cached() == set()


def test_a_version_bump_reruns_the_package_and_its_reverse_dependencies_only(world: World) -> None:
    chain(world)
    world.run()
    world.packages["zlib"]["version"] = "1:1.3"
    world.write_set()
    listed = world.nixtest(
        "list", "--changed", "--tests", str(world.tests), "--set", f"prefix:{world.set_file}"
    )
    assert listed.returncode == 0, listed.stderr
    lines = set(listed.stdout.splitlines())
    assert "zlib::works: zlib 1:1.2.13 -> 1:1.3" in lines
    assert "libpng::works: zlib 1:1.2.13 -> 1:1.3" in lines
    assert "app::works: zlib 1:1.2.13 -> 1:1.3" in lines
    assert "other::broken: failed last time" in lines
    assert not any(line.startswith("other::works") for line in lines)
    done = world.run()
    assert done.ran() == {"zlib::works", "libpng::works", "app::works", "other::broken"}
    assert done.tests()["app::works"]["packages"] == {"app": "2.0", "libpng": "1.6.39", "zlib": "1:1.3"}
    assert "app::works: zlib 1:1.2.13 -> 1:1.3" in done.stdout
    # a changed depends reruns as well: libpng now also depends on other
    world.packages["libpng"]["depends"] = ["zlib", "other"]
    world.write_set()
    done = world.run()
    assert done.ran() == {"libpng::works", "app::works", "other::broken"}
    assert "libpng::works: libpng changed" in done.stdout
    assert "other 7 added to the closure" in done.stdout


def test_editing_a_skel_file_reruns_that_test(world: World) -> None:
    world.package("tool", "1")
    world.tests_of(
        "tool",
        """\
        tests:
          reads:
            run: "read line < data.txt; [ \\"$line\\" != broken ]"
            skel: skel/
          plain:
            run: /bin/true
        """,
        {"skel/data.txt": "one\n"},
    )
    assert world.run().code == 0
    (world.tests / "tool" / "skel" / "data.txt").write_text("two\n")
    done = world.run()
    assert done.code == 0, done.text
    assert done.ran() == {"tool::reads"}
    assert "tool::reads: skel/data.txt changed" in done.stdout
    # the definition itself
    (world.tests / "tool" / "tests.yaml").write_text(
        (world.tests / "tool" / "tests.yaml").read_text().replace("/bin/true", "/bin/true --x")
    )
    done = world.run()
    assert done.ran() == {"tool::plain"}
    assert "tool::plain: definition changed" in done.stdout


def test_changes_against_the_last_run_and_fail_on_regressions(world: World) -> None:
    world.package("pkg", "1")
    world.tests_of(
        "pkg",
        """\
        tests:
          turns-bad: {run: /bin/true}
          gets-fixed: {run: /bin/false}
          always-bad: {run: /bin/false}
          stays-good: {run: /bin/true}
          goes-away: {run: /bin/true}
        """,
    )
    first = world.run()
    assert first.report["baseline"] is None
    assert set(first.changes().values()) == {None}
    world.tests_of(
        "pkg",
        """\
        tests:
          turns-bad: {run: /bin/false}
          gets-fixed: {run: /bin/true}
          always-bad: {run: /bin/false}
          stays-good: {run: /bin/true}
          added: {run: /bin/true}
        """,
    )
    done = world.run("--fail-on", "regressions")
    assert done.changes() == {
        "pkg::turns-bad": "newly-failing",
        "pkg::gets-fixed": "newly-succeeding",
        "pkg::always-bad": "still-failing",
        "pkg::stays-good": "still-succeeding",
        "pkg::added": "new",
    }
    report = done.report
    assert report["baseline"] == first.report["run"]
    assert report["removed"] == ["pkg::goes-away"]
    assert report["counts"]["newly-failing"] == 1 and report["counts"]["removed"] == 1
    # a newly failing test fails the run also with --fail-on regressions
    assert done.code == 1
    # the terminal: newly failing first, with its reproduce line
    tail = done.stdout[done.stdout.index("nixtest: compared with run") :]
    assert tail.index("newly failing:") < tail.index("still failing:")
    assert f"to reproduce: {done.out}/rerun/pkg/turns-bad" in tail
    assert "removed: pkg::goes-away" in tail
    # every report shows the comparison
    metrics = (done.out / "nix-support" / "hydra-metrics").read_text().splitlines()
    assert "newly-failing 1" in metrics and "removed 1" in metrics and "new 1" in metrics
    html = (done.out / "log.html").read_text()
    assert html.index("Newly failing") < html.index("package <span")
    junit = (done.out / "junit.xml").read_text()
    assert '<property name="nixtest.change.pkg::turns-bad" value="newly-failing"' in junit
    assert '<property name="nixtest.removed.tests" value="pkg::goes-away"' in junit

    # nothing changed since: everything that fails is still failing
    again = world.run("--fail-on", "regressions")
    assert again.code == 0, again.text
    assert again.report["counts"]["still-failing"] == 2
    assert "nixtest: --fail-on regressions: nothing newly failing: exit 0" in again.stdout
    assert world.run().code == 1  # the default: any failure
    assert world.run(NIXTEST_FAIL_ON="regressions").code == 0


def test_a_baseline_from_junit_xml_gives_the_changes_of_the_run_id(world: World, tmp_path: Path) -> None:
    world.package("pkg", "1")
    world.tests_of("pkg", "tests:\n  a: {run: /bin/true}\n  b: {run: /bin/false}\n  c: {run: /bin/true}\n")
    base = world.run(out=world.root / "base-out")
    artifact = tmp_path / "junit.xml"
    shutil.copy(base.out / "junit.xml", artifact)
    shutil.copy(base.out / "report.json", tmp_path / "report.json")
    world.tests_of("pkg", "tests:\n  a: {run: /bin/false}\n  b: {run: /bin/true}\n  d: {run: /bin/true}\n")
    by_id = world.run("--baseline", base.report["run"], "--no-cache")
    by_junit = world.run("--baseline", str(artifact), "--no-cache")
    by_report = world.run(NIXTEST_BASELINE=str(tmp_path / "report.json"), NIXTEST_NO_CACHE="1")
    expected = {"pkg::a": "newly-failing", "pkg::b": "newly-succeeding", "pkg::d": "new"}
    for done in (by_id, by_junit, by_report):
        assert done.changes() == expected, done.text
        assert done.report["removed"] == ["pkg::c"]
    assert by_junit.report["baseline"] == str(artifact)
    bad = world.run("--baseline", str(tmp_path / "nothing.xml"))
    assert bad.code == 4 and f"--baseline {tmp_path / 'nothing.xml'}: cannot read" in bad.stderr, bad.text
    (tmp_path / "bad.xml").write_text("<html>")
    assert world.run("--baseline", str(tmp_path / "bad.xml")).code == 4


def test_a_test_failing_every_other_attempt_is_flaky_under_retries(world: World) -> None:
    world.package("pkg", "1")
    flag = world.root / "flag"
    world.tests_of(
        "pkg",
        f"""\
        tests:
          wobbly:
            run: "if [ -e {flag} ]; then /bin/rm {flag}; exit 0; else : > {flag}; exit 1; fi"
        """,
    )
    done = world.run("--retries", "2")
    assert done.code == 0, done.text
    test = done.tests()["pkg::wobbly"]
    assert test["outcome"] == "passed" and test["flaky"] is True and test["attempts"] == 2
    assert done.report["counts"]["flaky"] == 1
    assert "nixtest: flaky: pkg::wobbly (passed at attempt 2)" in done.stdout
    assert (done.out / "logs" / "pkg" / "wobbly.attempt-1.log").is_file()
    # a flaky pass is never cached: the next run runs it (and it fails, then passes again)
    again = world.run(NIXTEST_RETRIES="2")
    assert again.tests()["pkg::wobbly"]["attempts"] == 2
    assert again.cached() == set()
    assert "pkg::wobbly: flaky: passed and failed with these inputs" in again.stdout
    # without retries it fails once, then passes: the same input key both passed and failed
    world.run()
    passing = world.run()
    assert passing.tests()["pkg::wobbly"]["outcome"] == "passed"
    assert passing.tests()["pkg::wobbly"]["flaky"] is True
    history = world.nixtest("history", "pkg::wobbly")
    assert history.returncode == 0, history.stderr
    assert history.stdout.splitlines()[0].startswith("pkg::wobbly: flaky")
    runs = world.nixtest("history")
    assert runs.stdout.splitlines()[0].startswith(f"run {passing.report['run']} ")
    assert "1 flaky" in runs.stdout.splitlines()[0]
    package = world.nixtest("history", "pkg", "--limit", "2")
    assert package.stdout.splitlines()[0].startswith("pkg::wobbly: flaky")
    assert len(package.stdout.splitlines()) == 3  # the verdict and two results


@pytest.mark.tools("xmllint")
def test_junit_validates_with_flaky_and_cached_tests(world: World, reference: Path) -> None:
    world.package("pkg", "1")
    flag = world.root / "flag"
    world.tests_of(
        "pkg",
        f"""\
        tests:
          wobbly:
            run: "if [ -e {flag} ]; then /bin/rm {flag}; exit 0; else : > {flag}; exit 1; fi"
          steady: {{run: /bin/true}}
          bad: {{run: /bin/false}}
        """,
    )
    world.run("-k", "steady or bad")
    done = world.run("--retries", "3")
    tests = done.tests()
    assert tests["pkg::steady"]["cached"] and tests["pkg::wobbly"]["flaky"], done.text
    junit = done.out / "junit.xml"
    check = subprocess.run(
        ["xmllint", "--noout", "--schema", str(reference / JUNIT_XSD), str(junit)],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr
    import xml.etree.ElementTree as ET

    cases = {c.get("name"): c for c in ET.parse(junit).getroot().iter("testcase")}
    assert sorted(cases) == ["bad", "steady", "wobbly"]  # one testcase per test
    for case in cases.values():
        assert case.find("properties") is None
        assert len(case.findall("system-out")) == 1
    assert "cached: passed in run" in (cases["steady"].findtext("system-out") or "")
    out = cases["wobbly"].findtext("system-out") or ""
    assert "flaky: passed at attempt 2" in out and "earlier attempt 1: failed" in out
    assert [e.tag for e in cases["wobbly"]][0] == "flakyFailure"
    # bad failed 4 times: its earlier attempts are reruns
    assert [e.tag for e in cases["bad"]].count("rerunFailure") == 3


def test_two_runs_writing_the_history_at_once_lose_no_record(world: World) -> None:
    world.package("pkg", "1")
    body = "".join(f"  t{i}: {{run: /bin/true}}\n" for i in range(12))
    world.tests_of("pkg", "tests:\n" + body)
    args = ["run", "--tests", str(world.tests), "--set", f"prefix:{world.set_file}", "--no-cache"]
    procs = [
        subprocess.Popen(
            nixtest_command(*args, "--out", str(world.root / f"out{n}")),
            env=world.env(),
            cwd=world.root,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(3)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=RUN_TIMEOUT)
        assert proc.returncode == 0, err
    import sqlite3

    db = sqlite3.connect(world.state / "history.sqlite")
    runs = db.execute("SELECT id FROM runs WHERE end IS NOT NULL").fetchall()
    assert len(runs) == 3
    for (run_id,) in runs:
        assert db.execute("SELECT count(*) FROM results WHERE run_id = ?", (run_id,)).fetchone()[0] == 12


def test_a_module_that_finds_no_test_and_an_empty_imports_are_errors(world: World) -> None:
    world.package("pkg", "1")
    world.tests_of(
        "pkg",
        """\
        tests:
          empty-module: {script: test_nothing.py}
          empty-imports: {imports: []}
        """,
        {"test_nothing.py": "X = 1\n"},
    )
    done = world.run("--no-cache")
    tests = done.tests()
    assert tests["pkg::empty-module"]["outcome"] == "error", done.text
    assert "ran nothing" in tests["pkg::empty-module"]["message"]
    assert tests["pkg::empty-imports"]["outcome"] == "error"
    assert done.code == 1
    # the cache is asked only for a test that could be prepared
    assert "pkg::empty-imports: error before it could run" in world.run().stdout


def _start(world: World, out: Path) -> subprocess.Popen[str]:
    # one at a time: the fast test has ended when the slow one starts
    args = [
        "run",
        "--tests",
        str(world.tests),
        "--set",
        f"prefix:{world.set_file}",
        "--out",
        str(out),
        "-j",
        "1",
    ]
    return subprocess.Popen(
        nixtest_command(*args),
        env=world.env(),
        cwd=world.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _wait_for(path: Path, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + RUN_TIMEOUT
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


#: the slow test's command, unique enough to find its process after its runner was killed
SLOW = "/bin/sleep 119.0101"


def _slow_world(world: World) -> None:
    world.package("pkg", "1")
    world.tests_of("pkg", f"tests:\n  a-fast: {{run: /bin/true}}\n  b-slow: {{run: {SLOW}}}\n")


def test_report_json_is_written_on_interrupt_and_the_run_recorded(world: World) -> None:
    _slow_world(world)
    proc = _start(world, world.out)
    _wait_for(world.out / "logs" / "pkg" / "b-slow.log", proc)
    os.killpg(proc.pid, signal.SIGINT)
    output, _ = proc.communicate(timeout=RUN_TIMEOUT)
    assert proc.returncode == 2, output
    report = json.loads((world.out / "report.json").read_text())
    assert report["interrupted"] is True
    assert {t["id"]: t["outcome"] for t in report["tests"]}["pkg::a-fast"] == "passed"
    runs = world.nixtest("history").stdout
    assert runs.startswith(f"run {report['run']} ") and "interrupted" in runs.splitlines()[0]


def test_sigterm_commits_the_results_still_waiting_for_their_batch(world: World) -> None:
    """Results are committed a batch at a time (history/recorder.py); SIGTERM ends the run as
    Ctrl-C does, and the session's finish commits every result that was still waiting."""
    world.package("pkg", "1")
    fast = "".join(f"  a-fast-{i:02}: {{run: /bin/true}}\n" for i in range(30))
    world.tests_of("pkg", f"tests:\n{fast}  b-slow: {{run: {SLOW}}}\n")
    proc = _start(world, world.out)
    _wait_for(world.out / "logs" / "pkg" / "b-slow.log", proc)
    os.killpg(proc.pid, signal.SIGTERM)
    output, _ = proc.communicate(timeout=RUN_TIMEOUT)
    assert proc.returncode == 2, output
    report = json.loads((world.out / "report.json").read_text())
    store = HistoryStore(database_path(world.state))
    try:
        outcomes = store.run_outcomes(int(report["run"]))
    finally:
        store.close()
    assert sum(1 for o in outcomes.values() if o == "passed") == 30, outcomes


def test_a_killed_run_keeps_what_it_finished(world: World) -> None:
    _slow_world(world)
    proc = _start(world, world.out)
    _wait_for(world.out / "logs" / "pkg" / "b-slow.log", proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=RUN_TIMEOUT)
    # the wrapper runs in a session of its own: nobody is left to stop it
    for pid in pids_matching(SLOW):
        os.kill(pid, signal.SIGKILL)
    assert "unfinished" in world.nixtest("history").stdout
    world.tests_of("pkg", "tests:\n  a-fast: {run: /bin/true}\n  b-slow: {run: /bin/true}\n")
    done = world.run()
    assert done.code == 0, done.text
    # the killed run's finished pass is in the history; it is no baseline (it never ended)
    assert done.cached() == {"pkg::a-fast"}
    assert done.report["baseline"] is None


def test_a_partial_run_does_not_make_the_other_tests_new(world: World) -> None:
    chain(world)
    world.run()
    # only one package: the others were not selected, not added or removed
    one = world.run("other")
    assert one.changes() == {"other::works": "still-succeeding", "other::broken": "still-failing"}
    assert one.report["removed"] == []
    everything = world.run()
    assert set(everything.changes().values()) == {"still-succeeding", "still-failing"}
    assert everything.report["baseline"] == one.report["run"]
    # a run that finished no test is no baseline
    collected = world.run("--", "--collect-only")
    assert collected.code == 0, collected.text
    after = world.run()
    assert after.report["baseline"] == everything.report["run"]
