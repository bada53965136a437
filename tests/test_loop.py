"""`-j N`: nixtest's own scheduler, up to N tests at once inside the one pytest process.

Real runs of `nixtest run` (and of plain pytest with the plugin): what the
scheduler must keep from a serial run (selection, -x, --maxfail, the reports)
and what it adds (tests overlap, in this process, not in pytest-xdist workers).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from test_e2e_core import junit_outcomes

from conftest import Suite, nixtest_command, pids_matching

#: the tests run host packages (coreutils, hello) of a dpkg host
pytestmark = [pytest.mark.dpkg, pytest.mark.tools("hello")]

#: seconds a whole run may take before the test gives up on it
RUN_TIMEOUT = 180


def run(suite: Suite, *args: str, out: Path | None = None) -> tuple[int, str, int]:
    """`nixtest run --tests pt --out OUT ARGS`: (exit code, terminal output, the process's pid)."""
    proc = subprocess.Popen(
        nixtest_command("run", "--tests", str(suite.tests), "--out", str(out or suite.out), *args),
        cwd=suite.root,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    output = proc.communicate(timeout=RUN_TIMEOUT)[0].decode(errors="replace")
    return proc.returncode, output, proc.pid


def start(suite: Suite, *args: str, output: int = subprocess.PIPE) -> subprocess.Popen[bytes]:
    """`nixtest run --tests pt --out out ARGS` in a session of its own, not waited for."""
    return subprocess.Popen(
        nixtest_command("run", "--tests", str(suite.tests), "--out", str(suite.out), *args),
        cwd=suite.root,
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def test_j2_runs_two_tests_at_once_as_children_of_the_nixtest_process(suite: Suite) -> None:
    meet = suite.root / "meet"
    meet.mkdir()
    # Each waits for the other to have started: run one at a time, both would time out.
    wait = "for i in $(seq 600); do [ -e {other} ] && exit 0; sleep 0.05; done; exit 1"
    # the parent of the command's supervisor (nixtest's spawner), and its parent
    up = (
        f"p=$(cut -d' ' -f4 /proc/$PPID/stat); echo $p > {meet}/{{side}}.ppid; "
        f"cut -d' ' -f4 /proc/$p/stat > {meet}/{{side}}.pppid"
    )
    suite.package(
        "coreutils",
        f"""
        tests:
          left:
            run: {up.format(side="left")}; touch {meet}/left; {wait.format(other=meet / "right")}
            timeout: 60
          right:
            run: {up.format(side="right")}; touch {meet}/right; {wait.format(other=meet / "left")}
            timeout: 60
        """,
    )
    code, output, pid = run(suite, "-j", "2")
    assert code == 0, output
    assert junit_outcomes(suite.out) == {"coreutils::left": "passed", "coreutils::right": "passed"}
    assert "nixtest: up to 2 tests at a time, in this process" in output
    assert "workers" not in output, "-j must not start pytest-xdist workers"
    # nixtest's spawner is the test's supervisor, which starts the command; the
    # spawner's parent is one of the nixtest process's workers (nixtest.run.workers),
    # two of them: the tests ran at once, each prepared and run by its own worker
    workers = {int((meet / f"{side}.ppid").read_text()) for side in ("left", "right")}
    assert len(workers) == 2, output
    for worker in workers:
        assert worker != pid
    for side in ("left", "right"):
        assert int((meet / f"{side}.pppid").read_text()) == pid, output


def test_j1_runs_one_test_at_a_time(suite: Suite) -> None:
    lock = suite.root / "lock"
    # mkdir is atomic: a second test inside at the same time fails
    body = f"mkdir {lock} || exit 7; sleep 0.1; rmdir {lock}"
    suite.package("coreutils", "tests:\n" + "".join(f"  t{n}: {{run: '{body}'}}\n" for n in range(4)))
    code, output, _ = run(suite, "-j", "1")
    assert code == 0, output
    assert set(junit_outcomes(suite.out).values()) == {"passed"}
    assert "up to 1 test at a time" in output


@pytest.mark.parametrize(("option", "failing"), [("-x", ["first"]), ("--maxfail=2", ["first", "second"])])
def test_x_and_maxfail_stop_the_run_and_kill_what_still_runs(
    suite: Suite, option: str, failing: list[str]
) -> None:
    marker = f"nixtest-loop-stop-{os.getpid()}-{failing[-1]}"
    tests = "".join(f"  {name}: {{run: 'false'}}\n" for name in failing)
    tests += "".join(f"  slow-{n}: {{run: 'sleep 60; : {marker}'}}\n" for n in range(6))
    suite.package("coreutils", "tests:\n" + tests)
    code, output, _ = run(suite, "-j", str(len(failing)), "--", option)
    assert code == 1, output
    assert f"stopping after {len(failing)} failures" in output
    # the failures and nothing after them: the slow tests never got a report
    assert junit_outcomes(suite.out) == {f"coreutils::{name}": "failed" for name in failing}
    assert pids_matching(marker) == [], "a test of the stopped run still runs"


def write_selection_suite(suite: Suite) -> None:
    suite.package(
        "hello",
        """
        tests:
          bad: {run: "hello > /dev/full"}
          good-one: {run: hello}
          bad-definition: {run: hello, scirpt: x.py}
          good-two: {run: hello, expect: {stdout: '^Hello'}}
        """,
    )
    suite.package(
        "coreutils",
        """
        tests:
          ok: {run: "true"}
          slow-pass: {run: "sleep 0.3"}
          fails: {run: "echo no; exit 3"}
          exits-77: {run: "exit 77", expect: {exit: 77}}
        """,
    )


@pytest.mark.parametrize("selection", [["-k", "good or fails"], ["-k", "not slow and not hello"]])
def test_k_selects_the_same_tests_as_a_serial_run(suite: Suite, selection: list[str]) -> None:
    write_selection_suite(suite)
    found = {}
    for jobs in ("1", "4"):
        out = suite.root / f"out-{jobs}"
        code, output, _ = run(suite, "-j", jobs, *selection, out=out)
        assert code == 1, output
        found[jobs] = junit_outcomes(out)
    assert found["1"] == found["4"]
    assert found["1"], "the selection selected nothing"


def test_lf_reruns_the_same_tests_as_a_serial_run(suite: Suite) -> None:
    write_selection_suite(suite)
    code, output, _ = run(suite, "-j", "4")
    assert code == 1, output
    everything = junit_outcomes(suite.out)
    failed = {k: v for k, v in everything.items() if v in ("failed", "error")}
    assert len(failed) == 3, everything
    for jobs in ("4", "1"):
        code, output, _ = run(suite, "-j", jobs, "--", "--lf")
        assert code == 1, output
        assert junit_outcomes(suite.out) == failed, f"-j {jobs} --lf"


def normalized_junit(out: Path) -> str:
    """junit.xml without what differs from run to run: times, timestamps, the host, and the
    history's view (the run's id, the comparison with the run before)."""
    text = (out / "junit.xml").read_text()
    text = re.sub(r' (time|timestamp|hostname)="[^"]*"', "", text)
    text = re.sub(r"\s*<properties>.*?</properties>", "", text, flags=re.S)
    text = re.sub(r"\nchange: [^\n]*", "", text)
    return re.sub(r"\b\d+\.\d+ ?s\b", "N s", text)


def test_the_same_junit_xml_with_j1_j4_and_n2(suite: Suite) -> None:
    write_selection_suite(suite)
    texts = {}
    for how in (["-j", "1"], ["-j", "4"], ["-j", "1", "--", "-n2"]):
        code, output, _ = run(suite, *how)
        assert code == 1, output
        texts[" ".join(how)] = normalized_junit(suite.out)
    assert "2 workers" in output, "-n 2 is pytest-xdist's"
    assert texts["-j 1"] == texts["-j 4"]
    assert texts["-j 1"] == texts["-j 1 -- -n2"]
    assert texts["-j 1"].count("<testcase") == 8


def interrupt_when_running(
    suite: Suite, proc: subprocess.Popen[bytes], marker: str, count: int, interrupt: Callable[[], None]
) -> str:
    """Once `count` tests matching `marker` run and `coreutils::quick` has ended, `interrupt()`.

    Returns the run's output.
    """
    try:
        deadline = time.monotonic() + 60
        while len(pids_matching(marker)) < count:
            assert proc.poll() is None, proc.communicate()[0].decode(errors="replace")
            assert time.monotonic() < deadline, f"{count} slow tests never ran at once"
            time.sleep(0.05)
        # quick has ended (its supervisor too) before the Ctrl-C, even on a loaded machine
        quick_log = suite.out / "logs" / "coreutils" / "quick.log"
        while not (quick_log.exists() and not pids_matching(f"{suite.out}/rerun/coreutils/quick")):
            assert time.monotonic() < deadline, "quick never ended"
            time.sleep(0.05)
        time.sleep(1.0)
        interrupt()
        return proc.communicate(timeout=60)[0].decode(errors="replace")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_ctrl_c_kills_every_running_test_and_writes_the_reports(suite: Suite) -> None:
    marker = f"nixtest-loop-ctrl-c-{os.getpid()}"
    tests = "  quick: {run: 'true'}\n"
    tests += "".join(f"  slow-{n}: {{run: 'touch started-{n}; sleep 60; : {marker}'}}\n" for n in range(4))
    suite.package("coreutils", "tests:\n" + tests)
    proc = start(suite, "-j", "3")
    # three slow ones at once: `quick` (one of the first three) has ended and been reported
    output = interrupt_when_running(suite, proc, marker, 3, lambda: os.killpg(proc.pid, signal.SIGINT))
    assert proc.returncode == 2, output
    assert pids_matching(marker) == [], "a test outlived the interrupted run"
    outcomes = junit_outcomes(suite.out)
    assert outcomes.pop("coreutils::quick") == "passed", output
    # the tests Ctrl-C stopped are in the reports, as errors that say so
    assert len(outcomes) >= 2 and set(outcomes.values()) == {"error"}, outcomes
    assert "interrupted" in (suite.out / "log.xml").read_text()


def test_a_test_whose_run_breaks_in_nixtest_is_an_error_and_the_rest_runs(
    pytester: pytest.Pytester, suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug of ours on a pool thread (here: execute raising) is that test's error, not the run's end."""
    import nixtest.loop

    real = nixtest.loop.execute

    def sometimes_broken(prepared, context, on_start=None):  # type: ignore[no-untyped-def]
        if prepared.test.name == "broken":
            raise OSError("the disk is on fire")
        return real(prepared, context, on_start=on_start)

    monkeypatch.setattr(nixtest.loop, "execute", sometimes_broken)
    suite.package("coreutils", "tests:\n  broken: {run: 'true'}\n  fine: {run: 'true'}\n")
    result = pytester.runpytest_inprocess(
        str(suite.tests), "--nixtest-out", str(suite.out), "--nixtest-jobs", "2", "-p", "no:cacheprovider"
    )
    assert result.ret == 1, result.stdout.str()
    assert junit_outcomes(suite.out) == {"coreutils::broken": "error", "coreutils::fine": "passed"}
    result.stdout.fnmatch_lines(["*internal error while running: OSError: the disk is on fire*"])


def test_plain_pytest_takes_nixtest_jobs(suite: Suite) -> None:
    suite.package("coreutils", "tests:\n  a: {run: 'true'}\n  b: {run: 'true'}\n")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", str(suite.tests), "--nixtest-out", str(suite.out)]
        + ["--nixtest-jobs", "2", "-p", "no:cacheprovider"],
        cwd=suite.root,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "up to 2 tests at a time" in done.stdout
