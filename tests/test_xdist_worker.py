"""`-n` with `-j`: each pytest-xdist worker runs up to N tests at once, on nixtest's own scheduler.

Real runs of `nixtest run -nW -j N`: the tests prove they overlap by waiting
for each other (a barrier only concurrency can release, with a generous
timeout), and what pytest-xdist's protocol must keep holds: the same
junit.xml as a serial run, `-x` and `--maxfail`, a crashed worker's test
reported as such, Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_e2e_core import junit_outcomes
from test_hardening import gone_within
from test_loop import interrupt_when_running, normalized_junit, run, start, write_selection_suite

import nixtest.loop
from conftest import Suite
from nixtest.loop import worker_jobs
from nixtest.xdist_worker import worker_queue

#: the tests run host packages (coreutils, hello) of a dpkg host
pytestmark = [pytest.mark.dpkg, pytest.mark.tools("hello")]

#: a shell loop waiting (up to 60 s) until COND holds, else exit 1
WAIT = "i=0; until {cond}; do i=$((i+1)); [ $i -gt 1200 ] && exit 1; sleep 0.05; done"


#: the pytest-xdist worker above a test: its supervisor is nixtest's spawner, whose parent is
#: the worker (the process that runs pytest-xdist's worker loop)
WORKER = "$(cut -d' ' -f4 /proc/$PPID/stat)"


def test_n2_j2_runs_two_tests_at_once_in_each_worker(suite: Suite) -> None:
    meet = suite.root / "meet"
    where = suite.root / "where"
    meet.mkdir()
    where.mkdir()
    # all four must be running before any ends: one at a time per worker, none could pass
    barrier = WAIT.format(cond=f'[ "$(ls {meet} | wc -l)" -ge 4 ]')
    tests = ""
    for n in range(4):
        command = f"echo {WORKER} > {where}/t{n}; touch {meet}/t{n}; {barrier}"
        tests += f"  t{n}:\n    run: {json.dumps(command)}\n    timeout: 120\n"
    suite.package("coreutils", "tests:\n" + tests)
    code, output, pid = run(suite, "-n", "2", "-j", "2")
    assert code == 0, output
    assert "2 workers [4 items]" in output, "-n 2 is pytest-xdist's"
    assert "nixtest: up to 2 tests at a time in each pytest-xdist worker" in output
    assert junit_outcomes(suite.out) == {f"coreutils::t{n}": "passed" for n in range(4)}
    workers = collections.Counter(int((where / f"t{n}").read_text()) for n in range(4))
    # two workers, neither of them the controller, each running two of the tests
    assert sorted(workers.values()) == [2, 2], workers
    assert pid not in workers


def test_the_same_junit_xml_with_j1_j4_n2_and_n2_j2(suite: Suite) -> None:
    write_selection_suite(suite)
    texts = {}
    for how in (
        ["-j", "1"],
        ["-j", "4"],
        ["-n2"],
        ["-n2", "-j", "2"],
        ["-n2", "-j", "4"],
        ["-n2", "-j", "2", "--dist=loadscope"],
        ["-n2", "-j", "2", "--dist=each"],
    ):
        code, output, _ = run(suite, *how)
        assert code == 1, output
        texts[" ".join(how)] = normalized_junit(suite.out)
    assert "2 workers" in output
    assert texts["-j 1"].count("<testcase") == 8
    for how, text in texts.items():
        assert text == texts["-j 1"], how


@pytest.mark.parametrize("dist", ["loadscope", "loadfile", "each"])
def test_every_dist_mode_runs_two_tests_at_once_in_each_worker(suite: Suite, dist: str) -> None:
    """Two packages of two tests: by package (scope, file) or all of them (each), two a worker."""
    meet = suite.root / "meet"
    meet.mkdir()
    # a file of its own per test run (with --dist each, every worker runs every test)
    command = f"mktemp -p {meet} > /dev/null; " + WAIT.format(cond=f'[ "$(ls {meet} | wc -l)" -ge 4 ]')
    test = f"{{run: {json.dumps(command)}, profile: [coreutils]}}"  # ls, wc, sleep
    for package in ("coreutils", "hello"):
        suite.package(package, f"tests:\n  t0: {test}\n  t1: {test}\n")
    code, output, _ = run(suite, "-n", "2", "-j", "2", "--dist", dist)
    assert code == 0, output
    assert set(junit_outcomes(suite.out).values()) == {"passed"}, output
    assert len(junit_outcomes(suite.out)) == 4


def write_stopping_suite(suite: Suite, marker: str) -> Path:
    """24 tests; pytest-xdist (--dist load, 2 workers) hands each worker 3 consecutive ones first.

    Worker one gets a-first, a-second, a-slow; worker two b-first, b-second,
    b-slow.  Each failing test waits until its worker's slow test (started ahead,
    with -j 3) runs, then fails; the slow ones and the 18 after them would run for
    10 minutes.
    """
    started = suite.root / "started"
    started.mkdir()
    tests = ""
    for side in "ab":
        fail = WAIT.format(cond=f"[ -e {started}/{side}-slow ]") + "; exit 1"
        tests += f"  {side}-first: {{run: '{fail}'}}\n  {side}-second: {{run: '{fail}'}}\n"
        tests += f"  {side}-slow: {{run: 'touch {started}/{side}-slow; sleep 600; : {marker}'}}\n"
    tests += "".join(
        f"  later-{n:02}: {{run: 'touch {started}/later-{n}; sleep 600; : {marker}'}}\n" for n in range(18)
    )
    suite.package("coreutils", "tests:\n" + tests)
    return started


@pytest.mark.parametrize(
    ("option", "failing"),
    [("-x", ["a-first", "b-first"]), ("--maxfail=2", ["a-first", "a-second", "b-first", "b-second"])],
)
def test_x_and_maxfail_stop_the_workers_and_kill_what_they_started_ahead(
    suite: Suite, option: str, failing: list[str]
) -> None:
    marker = f"nixtest-xdist-stop-{os.getpid()}-{len(failing)}"
    started = write_stopping_suite(suite, marker)
    # a run that waited for a slow test would outlast test_loop.RUN_TIMEOUT
    code, output, _ = run(suite, "-n2", "-j", "3", "--", option)
    assert "stopping after" in output, output
    assert code in (1, 2), output
    assert junit_outcomes(suite.out) == {f"coreutils::{name}": "failed" for name in failing}, output
    # both slow tests were started ahead (the failures waited for them), and were killed
    assert sorted(p.name for p in started.iterdir()) == ["a-slow", "b-slow"]
    assert gone_within(marker, 30), "a test of the stopped run still runs"


def test_a_crashed_worker_gives_its_reports_and_what_it_ran_ahead_runs_elsewhere(suite: Suite) -> None:
    marker = f"nixtest-xdist-crash-{os.getpid()}"
    starts = suite.root / "ahead.starts"
    # the worker is killed once the test after this one in its queue was started ahead
    crash = WAIT.format(cond=f"[ -s {starts} ]") + f"; kill -9 {WORKER}; sleep 5"
    suite.package(
        "coreutils",
        f"""
        tests:
          crashes:
            run: {json.dumps(crash)}
          ahead:
            run: "echo started >> {starts}; sleep 2; : {marker}"
          fine-1: {{run: "sleep 1; : {marker}"}}
          fine-2: {{run: "sleep 1; : {marker}"}}
        """,
    )
    code, output, _ = run(suite, "-n2", "-j", "2")
    assert code == 1, output
    assert "crashed while running 'pt/coreutils::crashes'" in output, output
    assert junit_outcomes(suite.out) == {
        "coreutils::crashes": "error",
        "coreutils::ahead": "passed",
        "coreutils::fine-1": "passed",
        "coreutils::fine-2": "passed",
    }, output
    # started ahead on the worker that crashed, killed with it, run again by another worker
    assert starts.read_text().splitlines() == ["started", "started"]
    assert gone_within(marker, 15)


@pytest.mark.parametrize("how", ["SIGINT to the process group", "SIGTERM to nixtest"])
def test_ctrl_c_and_sigterm_write_the_reports_and_kill_every_test(suite: Suite, how: str) -> None:
    marker = f"nixtest-xdist-ctrl-c-{os.getpid()}-{how[3:7]}"
    tests = "  quick: {run: 'true'}\n"
    tests += "".join(f"  slow-{n}: {{run: 'sleep 60; : {marker}'}}\n" for n in range(5))
    suite.package("coreutils", "tests:\n" + tests)
    proc = start(suite, "-n2", "-j", "2")
    if how.startswith("SIGINT"):
        interrupt = lambda: os.killpg(proc.pid, signal.SIGINT)  # noqa: E731 - Ctrl-C, as a terminal sends it
    else:
        interrupt = lambda: os.kill(proc.pid, signal.SIGTERM)  # noqa: E731
    # more than two at once: the workers run their tests on nixtest's scheduler
    output = interrupt_when_running(suite, proc, marker, 3, interrupt)
    assert proc.returncode == 2, output
    assert gone_within(marker, 15), "a test outlived the interrupted run"
    # the reports are written, with what ended before the interrupt
    assert junit_outcomes(suite.out).get("coreutils::quick") == "passed", output


def test_worksteal_starts_only_the_next_test_ahead(suite: Suite) -> None:
    """--dist worksteal's controller takes tests back out of a worker's queue: none is started from there."""
    slots = suite.root / "slots"
    slots.mkdir()
    # a third test at once finds both slots taken
    body = f"mkdir {slots}/1 && s=1 || {{ mkdir {slots}/2 && s=2; }} || exit 9; sleep 0.3; rmdir {slots}/$s"
    suite.package("coreutils", "tests:\n" + "".join(f"  t{n}: {{run: '{body}'}}\n" for n in range(6)))
    code, output, _ = run(suite, "-n", "1", "-j", "4", "--dist", "worksteal")
    assert code == 0, output
    assert set(junit_outcomes(suite.out).values()) == {"passed"}


# -- units ---------------------------------------------------------------------


def test_j_auto_shares_the_cpus_among_the_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nixtest.loop, "parse_jobs", lambda value, where: 5 if value == "auto" else int(value))

    def shares(value: str, count: int) -> list[int]:
        return [worker_jobs(value, {"workercount": count, "workerid": f"gw{n}"}) for n in range(count)]

    assert shares("auto", 1) == [5]
    assert shares("auto", 2) == [3, 2]
    assert shares("auto", 8) == [1] * 8
    assert shares("3", 2) == [3, 3], "a number is each worker's own"
    # a worker that replaces a crashed one (gw3 of 2) takes the share of its place
    assert worker_jobs("auto", {"workercount": 2, "workerid": "gw3"}) == 2


class WorkerInteractor:
    """Stands for pytest-xdist's class of that name, as the worker's plugin manager lists it."""

    def __init__(self, torun: Any) -> None:
        self.torun = torun


class FakeConfig:
    def __init__(self, dist: str, plugin: object) -> None:
        self.known_args_namespace = type("Namespace", (), {"dist": dist})()
        self.pluginmanager = type("PluginManager", (), {"get_plugins": lambda _self: [object(), plugin]})()


class LockedDeque:
    def __init__(self) -> None:
        self.items: collections.deque[int] = collections.deque([3, 4])

    @contextlib.contextmanager
    def lock(self) -> Iterator[collections.deque[int]]:
        yield self.items


def test_the_worker_queue_is_read_only_where_it_is_what_this_module_knows() -> None:
    queue = LockedDeque()
    assert worker_queue(FakeConfig("load", WorkerInteractor(queue))) is queue  # type: ignore[arg-type]
    assert worker_queue(FakeConfig("each", WorkerInteractor(queue))) is queue  # type: ignore[arg-type]
    # the controller may take tests back from the queue
    assert worker_queue(FakeConfig("worksteal", WorkerInteractor(queue))) is None  # type: ignore[arg-type]
    # an older or newer pytest-xdist: a queue.Queue, or no queue at all
    assert worker_queue(FakeConfig("load", WorkerInteractor(object()))) is None  # type: ignore[arg-type]
    assert worker_queue(FakeConfig("load", object())) is None  # type: ignore[arg-type]


def test_nixtest_run_passes_an_option_and_its_value_to_pytest() -> None:
    from nixtest.cli import split_selection

    names, extra = split_selection(("-n", "2", "gzip", "--dist", "loadscope", "-x", "git::log", "--tx=popen"))
    assert names == ("gzip", "git::log")
    assert extra == ("-n", "2", "--dist", "loadscope", "-x", "--tx=popen")
