"""End-to-end tests of the reports: real runs of `nixtest run` / `pytest -n 2`, real consumers.

Each scenario runs once (module scope) in a subprocess, then every check reads
its OUT folder:

* junit.xml: xmllint against Jenkins' junit-10.xsd, counts against the
  testcases, junitparser and xunitparser, failure vs error vs timeout, no
  terminal escapes, bounded size;
* log.xml: structure, and the three stylesheets of ../shared/reference/
  (NixOS test driver; Nix and Hydra mark-errors | log2html) through xsltproc,
  every head and line rendered, in order;
* log.html: folding and rerun lines (and once in headless chromium);
* nix-support/: Hydra's line syntax (build-result.cc's ERE, hydra-metrics
  rules), `failed`;
* OUT/logs/<pkg>/<test>.log: the full raw output.

Scenarios (SCENARIOS): a run of passing, failing, erroring (bad definition) and
timed-out tests with -j 1 and -j 2; the same with a test that prints 3 MB of
random bytes (NUL, ESC, invalid UTF-8), once through plain `pytest -n 2`; runs
interrupted with SIGINT halfway (-j 1: the process, -j 2: its process group, as
a terminal's Ctrl-C; -j 2 runs both in nixtest's own scheduler, in one
process); and a `pytest -n 2` run whose pytest-xdist worker is killed mid-test.
log.html is also opened once in headless chromium (marked `chromium`).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

# ../shared/reference/ comes from the `reference` fixture of the checkout's conftest.py
JUNIT_XSD = "junit/jenkins-xunit-junit-10.xsd"
PIPELINES = ["nixos-test-driver", "nix", "hydra"]

# the runs test the host packages hello and coreutils
pytestmark = pytest.mark.tools("hello")

#: seconds a whole run may take before the test gives up on it
RUN_TIMEOUT = 120

# -- the package tests ---------------------------------------------------------

HELLO = textwrap.dedent(
    """\
    tests:
      greets:
        run: hello
        expect: {stdout: '^Hello, world!$'}
      wrong-greeting:
        run: hello -g bonjour
        expect: {stdout: '^Hallo$'}
      bad-definition:
        run: hello
        scirpt: nothing.py
    """
)

COREUTILS = textwrap.dedent(
    """\
    tests:
      sleeps:
        run: echo going to sleep; sleep 30
        timeout: 2
    """
)

NOISE_TEST = "  noise:\n    run: cat noise.bin; exit 3\n    skel: skel/\n"

SLOW = 6
INTERRUPTED = "tests:\n  quick-fail:\n    run: 'false'\n" + "".join(
    f"  slow-{n}:\n    run: echo start {n}; sleep 3; echo done {n}\n" for n in range(1, SLOW + 1)
)

#: what each test must come out as: passed, failed, timeout (a failure), error (a bad
#: definition), crashed (an error: its pytest-xdist worker died)
KINDS = {
    ("hello", "greets"): "passed",
    ("hello", "wrong-greeting"): "failed",
    ("hello", "bad-definition"): "error",
    ("coreutils", "sleeps"): "timeout",
}
NOISE_KINDS = {**KINDS, ("coreutils", "noise"): "failed"}
INTERRUPTED_KINDS = {
    ("coreutils", "quick-fail"): "failed",
    **{("coreutils", f"slow-{n}"): "passed" for n in range(1, SLOW + 1)},
}
CRASHED_KINDS = {**INTERRUPTED_KINDS, ("coreutils", "slow-1"): "crashed"}

NOISE_SIZE = 3 * 1024 * 1024
NOISE_END = "RED the end of the noise"


def make_noise() -> bytes:
    """3 MB of random bytes, with NUL, escape sequences and invalid UTF-8 every 64 KiB."""
    data = bytearray(random.Random(2014).randbytes(NOISE_SIZE).replace(b"[31m", b"[3?m"))
    specials = (
        b"NUL\x00 CSI\x1b[31m OSC\x1b]0;title\x07 lone ESC\x1b bad utf-8 \xff\xfe\xc3( "
        b"surrogate \xed\xa0\x80 U+FFFE \xef\xbf\xbe 8-bit CSI \xc2\x9b31m CR\r\n"
    )
    for pos in range(0, NOISE_SIZE - len(specials), 64 * 1024):
        data[pos : pos + len(specials)] = specials
    return bytes(data) + b"\n\x1b[1;31mRED\x1b[0m the end of the noise\n"


# -- running -------------------------------------------------------------------


@dataclass
class Scenario:
    name: str
    packages: dict[str, str]
    kinds: dict[tuple[str, str], str]
    jobs: int
    #: "nixtest" (nixtest run -j N) or "pytest" (python -m pytest -n N with the plugin)
    runner: str = "nixtest"
    out: str = "out"
    noise: bool = False
    #: SIGINT after this many test logs exist
    interrupt_after: int = 0
    #: SIGKILL the pytest-xdist worker that runs this test
    crash: str = ""


SCENARIOS = {
    s.name: s
    for s in [
        Scenario("kinds-j1", {"hello": HELLO, "coreutils": COREUTILS}, KINDS, jobs=1),
        Scenario("kinds-j2", {"hello": HELLO, "coreutils": COREUTILS}, KINDS, jobs=2),
        Scenario(
            "noise-j1", {"hello": HELLO, "coreutils": COREUTILS + NOISE_TEST}, NOISE_KINDS, jobs=1, noise=True
        ),
        # plain pytest with the plugin, and an OUT whose path has a space
        Scenario(
            "noise-n2",
            {"hello": HELLO, "coreutils": COREUTILS + NOISE_TEST},
            NOISE_KINDS,
            jobs=2,
            runner="pytest",
            out="out dir",
            noise=True,
        ),
        # -j 1: quick-fail and slow-1 done, slow-2 started
        Scenario("sigint-j1", {"coreutils": INTERRUPTED}, INTERRUPTED_KINDS, jobs=1, interrupt_after=3),
        # -j 2: at least two done, two started
        Scenario("sigint-j2", {"coreutils": INTERRUPTED}, INTERRUPTED_KINDS, jobs=2, interrupt_after=4),
        # a pytest-xdist worker (-n 2) dies: its test is an error, the others still run and are reported
        Scenario(
            "crash-n2", {"coreutils": INTERRUPTED}, CRASHED_KINDS, jobs=2, runner="pytest", crash="slow-1"
        ),
    ]
}


@dataclass
class Run:
    scenario: Scenario
    root: Path
    out: Path
    returncode: int
    output: str
    noise: bytes = b""
    #: the tests the reports must hold (all of them, unless interrupted)
    kinds: dict[tuple[str, str], str] = field(default_factory=dict)

    @property
    def interrupted(self) -> bool:
        return bool(self.scenario.interrupt_after)

    def log(self, package: str, test: str) -> Path:
        return self.out / "logs" / package / f"{test}.log"

    def wrapper(self, package: str, test: str) -> Path:
        return self.out / "rerun" / package / test

    def why(self) -> str:
        """The run's terminal output, for assertion messages."""
        return f"\n--- output of the {self.scenario.name} run ---\n{self.output[-6000:]}"


def clean_env(state: Path) -> dict[str, str]:
    """This environment without pytest's and nixtest's own variables."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("NIXTEST_", "PYTEST_", "PYTHONBREAKPOINT"))
    }
    env["NIXTEST_STATE"] = str(state)
    # the scenarios share a state folder: each runs its tests for real, none from the cache
    env["NIXTEST_NO_CACHE"] = "1"
    return env


def command(scenario: Scenario) -> list[str]:
    if scenario.runner == "pytest":
        # `pytest package_tests/` with the plugin, as DESIGN.md promises
        args = [sys.executable, "-m", "pytest", "pt", "--nixtest-out", scenario.out, "-p", "no:cacheprovider"]
        return args + (["-n", str(scenario.jobs)] if scenario.jobs > 1 else [])
    return [sys.executable, "-m", "nixtest.cli", "run", "--tests", "pt", "--out", scenario.out]


def wait_for_logs(proc: subprocess.Popen[bytes], logs: Path, count: int, output: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if logs.is_dir() and len(list(logs.glob("*.log"))) >= count:
            return
        if proc.poll() is not None:
            pytest.fail(
                f"the run ended before it could be interrupted:\n{output.read_text(errors='replace')}"
            )
        time.sleep(0.02)
    pytest.fail(f"no {count} logs in {logs} after 60 s:\n{output.read_text(errors='replace')}")


def wait_for_log_line(proc: subprocess.Popen[bytes], log: Path, output: Path) -> None:
    """Until `log` holds a whole line: what the test printed, read and written by its runner."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if log.is_file() and b"\n" in log.read_bytes():
            return
        if proc.poll() is not None:
            pytest.fail(f"the run ended before {log} held a line:\n{output.read_text(errors='replace')}")
        time.sleep(0.02)
    pytest.fail(f"{log} holds no line after 60 s:\n{output.read_text(errors='replace')}")


def parent_of(marker: str, deadline: float) -> int:
    """The parent of the topmost live process whose command line or cwd matches `marker` (a regex)."""
    while time.monotonic() < deadline:
        found: dict[int, int] = {}
        for entry in os.listdir("/proc"):
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
                # the wrapper execs the test's command, which keeps only its working directory
                cmdline += b" cwd=" + os.fsencode(os.readlink(f"/proc/{entry}/cwd"))
                status = Path(f"/proc/{entry}/status").read_text()
            except (OSError, NotADirectoryError):
                continue
            ppid = re.search(r"^PPid:\s+(\d+)", status, re.M)
            if re.search(marker.encode(), cmdline) and "\nState:\tZ" not in status and ppid:
                found[int(entry)] = int(ppid[1])
        top = [parent for parent in found.values() if parent not in found]
        if top:
            return top[0]
        time.sleep(0.02)
    pytest.fail(f"no process running {marker}")


def execute(scenario: Scenario, root: Path, state: Path) -> Run:
    noise = make_noise() if scenario.noise else b""
    for package, tests_yaml in scenario.packages.items():
        folder = root / "pt" / package
        folder.mkdir(parents=True)
        (folder / "tests.yaml").write_text(tests_yaml)
        if noise and package == "coreutils":
            (folder / "skel").mkdir()
            (folder / "skel" / "noise.bin").write_bytes(noise)
    argv = command(scenario)
    if scenario.runner == "nixtest":
        argv += ["-j", str(scenario.jobs)]
    output = root / "terminal.txt"
    with open(output, "wb") as terminal:
        # a session of its own: SIGINT reaches this run alone, as from its terminal
        # TMPDIR of its own: the runner's scratch folder, so its processes are told apart
        tmpdir = root / "tmp"
        tmpdir.mkdir()
        proc = subprocess.Popen(
            argv,
            cwd=root,
            env={**clean_env(state), "TMPDIR": str(tmpdir)},
            stdin=subprocess.DEVNULL,
            stdout=terminal,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            if scenario.interrupt_after:
                first_package = next(iter(scenario.packages))
                wait_for_logs(
                    proc, root / scenario.out / "logs" / first_package, scenario.interrupt_after, output
                )
                if scenario.jobs > 1:
                    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the controller and its workers
                else:
                    os.kill(proc.pid, signal.SIGINT)
            if scenario.crash:
                # the wrapper runs in a session of its own, as a child of its worker
                package = next(iter(scenario.packages))
                # kill once the test has printed its first line and the log shows it
                log = root / scenario.out / "logs" / package / f"{scenario.crash}.log"
                wait_for_log_line(proc, log, output)
                # the runner's working directory of that test: TMPDIR/<scratch>/<pkg>.<test>.<n>.work
                name = re.escape(f"{package}.{scenario.crash}.")
                marker = re.escape(str(tmpdir)) + rf"/[^/]+/{name}"
                worker = parent_of(marker, time.monotonic() + 60)
                cmdline = Path(f"/proc/{worker}/cmdline").read_bytes()
                if b"nixtest.child.zygote" in cmdline or b"nixtest/child/spawner.py" in cmdline:
                    # its supervisor was forked by the worker's zygote or spawner: the worker is its parent
                    status = Path(f"/proc/{worker}/status").read_text()
                    worker = int(re.search(r"^PPid:\s+(\d+)", status, re.M)[1])  # type: ignore[index]
                assert worker != proc.pid, "the test does not run in a pytest-xdist worker"
                os.kill(worker, signal.SIGKILL)
            returncode = proc.wait(timeout=RUN_TIMEOUT)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return Run(
        scenario=scenario,
        root=root,
        out=root / scenario.out,
        returncode=returncode,
        output=output.read_text(errors="replace"),
        noise=noise,
    )


class Runs:
    """Runs each scenario once, on first use; a run that could not be made fails every use."""

    def __init__(self, factory: pytest.TempPathFactory) -> None:
        self.factory = factory
        self.state = factory.mktemp("e2e-state")
        self.done: dict[str, Run | BaseException] = {}

    def get(self, name: str) -> Run:
        if name not in self.done:
            try:
                run = execute(SCENARIOS[name], self.factory.mktemp(f"e2e-{name}"), self.state)
                run.kinds = reported_kinds(run)
                self.done[name] = run
            except BaseException as exc:
                self.done[name] = exc
                raise
        done = self.done[name]
        if isinstance(done, BaseException):
            raise done
        return done


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    return Runs(tmp_path_factory)


@pytest.fixture(scope="module", params=list(SCENARIOS))
def run(request: pytest.FixtureRequest, runs: Runs) -> Run:
    return runs.get(request.param)


@pytest.fixture(scope="module", params=[name for name, s in SCENARIOS.items() if s.noise])
def noise_run(request: pytest.FixtureRequest, runs: Runs) -> Run:
    return runs.get(request.param)


@pytest.fixture(scope="module", params=[name for name, s in SCENARIOS.items() if s.interrupt_after])
def interrupted_run(request: pytest.FixtureRequest, runs: Runs) -> Run:
    return runs.get(request.param)


def junit_cases(out: Path) -> dict[tuple[str, str], ET.Element]:
    root = ET.parse(out / "junit.xml").getroot()
    cases: dict[tuple[str, str], ET.Element] = {}
    for suite in root.iter("testsuite"):
        for case in suite.iter("testcase"):
            key = (case.get("classname") or "", case.get("name") or "")
            assert key not in cases, f"{key} reported twice"
            cases[key] = case
    return cases


def reported_kinds(run: Run) -> dict[tuple[str, str], str]:
    """The tests the reports must hold: all of the scenario's, or what finished of an interrupted run."""
    if not run.interrupted:
        return dict(run.scenario.kinds)
    try:
        reported = junit_cases(run.out)
    except (OSError, ET.ParseError):
        return {}
    kinds = {}
    for key, kind in run.scenario.kinds.items():
        case = reported.get(key)
        if case is None:
            continue
        error = case.find("error")
        # the test the SIGINT stopped is reported too, as an error that says so
        stopped = error is not None and "interrupted" in (error.get("message") or "")
        kinds[key] = "interrupted" if stopped else kind
    return kinds


def is_bad(kind: str) -> bool:
    return kind != "passed"


def debug_flag(wrapper: Path | str) -> str:
    """The flag a failure's "to debug" line offers: --ipdb only where the wrapper takes it."""
    refuses = "no Python frame to debug" in Path(wrapper).read_text(encoding="utf-8")
    return "--shell" if refuses else "--ipdb"


def n_failures(kinds: dict[tuple[str, str], str]) -> int:
    return sum(k in ("failed", "timeout") for k in kinds.values())


def n_errors(kinds: dict[tuple[str, str], str]) -> int:
    return sum(k in ("error", "crashed", "interrupted") for k in kinds.values())


# -- the run itself ------------------------------------------------------------


def test_exit_code(run: Run) -> None:
    # pytest's: 1 some failed, 2 interrupted
    assert run.returncode == (2 if run.interrupted else 1), run.why()


def test_every_report_is_there(run: Run) -> None:
    files = [
        "junit.xml",
        "log.xml",
        "log.html",
        "nix-support/hydra-build-products",
        "nix-support/hydra-metrics",
    ]
    missing = [f for f in files if not (run.out / f).is_file()]
    assert not missing, run.why()
    # written atomically: no temporary file left, even when interrupted
    leftovers = [p.name for p in run.out.rglob("*") if p.name.endswith(".tmp")]
    assert not leftovers
    # for everyone to read, as the Hydra web server or a CI job that collects them
    assert all((run.out / f).stat().st_mode & 0o004 for f in files)


def test_the_reports_hold_the_right_tests(run: Run) -> None:
    reported = set(junit_cases(run.out))
    if not run.interrupted:
        # under -j 2 too: every result reached the controller
        assert reported == set(run.scenario.kinds), run.why()
        return
    assert reported <= set(run.scenario.kinds), run.why()
    # what finished before the SIGINT is there, and not everything ran
    assert ("coreutils", "quick-fail") in reported, run.why()
    if run.scenario.jobs == 1:
        # and the one the SIGINT stopped, as an error
        assert reported == {("coreutils", f) for f in ("quick-fail", "slow-1", "slow-2")}, run.why()
        assert reported_kinds(run)[("coreutils", "slow-2")] == "interrupted", run.why()
    assert len(reported) < len(run.scenario.kinds), run.why()


# -- junit.xml -----------------------------------------------------------------


@pytest.mark.tools("xmllint")
def test_junit_validates_with_xmllint(run: Run, reference: Path) -> None:
    proc = subprocess.run(
        ["xmllint", "--noout", "--schema", str(reference / JUNIT_XSD), str(run.out / "junit.xml")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "validates" in proc.stderr


def test_junit_counts_agree_with_the_testcases(run: Run) -> None:
    root = ET.parse(run.out / "junit.xml").getroot()
    assert root.tag == "testsuites"
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for suite in root.findall("testsuite"):
        cases = suite.findall("testcase")
        assert cases and all(c.get("classname") == suite.get("name") for c in cases)
        counted = {
            "tests": len(cases),
            "failures": sum(c.find("failure") is not None for c in cases),
            "errors": sum(c.find("error") is not None for c in cases),
            "skipped": sum(c.find("skipped") is not None for c in cases),
        }
        for key, value in counted.items():
            assert suite.get(key) == str(value), (suite.get("name"), key)
            totals[key] += value
    for key in ("tests", "failures", "errors"):
        assert root.get(key) == str(totals[key]), key
    assert totals == {
        "tests": len(run.kinds),
        "failures": n_failures(run.kinds),
        "errors": n_errors(run.kinds),
        "skipped": 0,
    }


def test_junit_outcomes_and_rerun_lines(run: Run) -> None:
    cases = junit_cases(run.out)
    for (package, test), kind in run.kinds.items():
        case = cases[package, test]
        results = [c for c in case if c.tag in ("failure", "error", "skipped")]
        if kind == "passed":
            assert results == [], test
            continue
        assert len(results) == 1, test
        result = results[0]
        expected = {
            "failed": ("failure", "failure"),
            "timeout": ("failure", "timeout"),
            "error": ("error", "error"),
            "crashed": ("error", "error"),
            "interrupted": ("error", "error"),
        }
        assert (result.tag, result.get("type")) == expected[kind], test
        assert result.get("message"), test
        text = result.text or ""
        if kind == "error":
            # a definition that could not be loaded: the file, the test and the key
            assert "tests.yaml" in text and "bad-definition" in text and "scirpt" in text
            continue
        wrapper = run.wrapper(package, test)
        assert os.access(wrapper, os.X_OK), wrapper
        assert text.rstrip("\n").endswith(
            f"to reproduce: {wrapper}\n    to debug: {wrapper} {debug_flag(wrapper)}"
        ), text[-500:]
        if kind == "timeout":
            assert "timed out" in (result.get("message") or "")
        if kind == "crashed":
            assert "crashed" in (result.get("message") or "")


def test_junitparser_reads_the_same_counts(run: Run) -> None:
    import junitparser

    xml = junitparser.JUnitXml.fromfile(str(run.out / "junit.xml"))
    seen: dict[tuple[str, str], str] = {}
    for suite in xml:
        for case in suite:
            kinds = [type(r).__name__ for r in case.result] or ["Passed"]
            assert len(kinds) == 1, case.name
            seen[case.classname, case.name] = kinds[0]
    names = {
        "passed": "Passed",
        "failed": "Failure",
        "timeout": "Failure",
        "error": "Error",
        "crashed": "Error",
        "interrupted": "Error",
    }
    assert seen == {key: names[kind] for key, kind in run.kinds.items()}


def test_xunitparser_reads_the_same_counts(run: Run) -> None:
    import xunitparser

    # xunitparser asserts that the root's totals match the testcases
    with open(run.out / "junit.xml", "rb") as f:
        _, result = xunitparser.parse(f)
    assert result.testsRun == len(run.kinds)
    assert len(result.failures) == n_failures(run.kinds)
    assert len(result.errors) == n_errors(run.kinds)
    assert len(result.skipped) == 0


# -- what a test printed, in every report ----------------------------------------

REPORTS = ["junit.xml", "log.xml", "log.html"]


@pytest.mark.parametrize("report", REPORTS)
def test_no_escape_sequences_or_illegal_characters(run: Run, report: str) -> None:
    raw = (run.out / report).read_bytes()
    text = raw.decode("utf-8")  # strict: the reports are valid UTF-8
    illegal = re.findall("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]|\x1b|\x9b", text)
    assert not illegal, sorted(set(illegal))
    assert "[31m" not in text and "[0m" not in text and "]0;title" not in text


@pytest.mark.parametrize("report", REPORTS)
def test_noise_is_bounded_and_its_tail_is_shown(noise_run: Run, report: str) -> None:
    text = (noise_run.out / report).read_text(encoding="utf-8")
    assert len(text) < 1024 * 1024, f"{report} holds {len(text)} characters"
    # the end of the output is shown, cleaned; the note points at the full log
    assert NOISE_END in text
    assert "characters left out" in text
    log = str(noise_run.log("coreutils", "noise"))
    assert log in text or log.replace(" ", "%20") in text


def test_junit_noise_failure_holds_the_tail(noise_run: Run) -> None:
    failure = junit_cases(noise_run.out)["coreutils", "noise"].find("failure")
    assert failure is not None and failure.text
    assert NOISE_END in failure.text
    assert f"full output: {noise_run.log('coreutils', 'noise')}" in failure.text
    assert "\ufffd" in failure.text  # what XML cannot hold is replaced, not silently dropped


def test_logs_hold_the_full_raw_output(run: Run) -> None:
    expected = {
        "greets": b"Hello, world!\n",
        "wrong-greeting": b"bonjour\n",
        "sleeps": b"going to sleep\n",
        "quick-fail": b"",
        **{f"slow-{n}": f"start {n}\ndone {n}\n".encode() for n in range(1, SLOW + 1)},
    }
    for (package, test), kind in run.kinds.items():
        log = run.log(package, test)
        if kind == "error":
            continue  # it never ran
        assert log.is_file(), log
        raw = log.read_bytes()
        if test == "noise":
            assert raw.startswith(run.noise), "the log is not the raw output"
            assert len(raw) >= NOISE_SIZE
        elif kind == "crashed":
            # its worker was killed once the log showed the first line: the log is
            # written unbuffered, so that line is there, and nothing after the kill
            first_line = expected[test].split(b"\n", 1)[0] + b"\n"
            assert raw.startswith(first_line), (test, raw[:300])
            assert expected[test][len(first_line) :] not in raw, (test, raw[:300])
        elif kind == "interrupted":
            # stopped by the SIGINT: what it printed until then is there, then its
            # supervisor's line saying it was stopped
            # (and the shell's own word for its killed command)
            printed = b"".join(
                line
                for line in raw.splitlines(True)
                if not line.startswith(b"nixtest: ") and line.strip() not in (b"Terminated", b"Killed")
            )
            assert expected[test].startswith(printed), (test, raw[:300])
        else:
            assert raw.startswith(expected[test]), (test, raw[:300])
        if kind == "timeout":
            assert b"timed out after 2 seconds" in raw


# -- log.xml -------------------------------------------------------------------


def test_logxml_structure(run: Run) -> None:
    root = ET.parse(run.out / "log.xml").getroot()
    assert root.tag == "logfile"
    for nest in root.iter("nest"):
        assert nest[0].tag == "head", "a nest starts with its head"
        assert {c.tag for c in nest} <= {"head", "line", "nest"}
        assert re.fullmatch(r"\(finished: .+, in \d+\.\d\d seconds\)", nest[-1].text or ""), nest[0].text
    packages = {p[0].text: p for p in root.findall("nest")}
    assert set(packages) == {f"package {pkg}" for pkg, _ in run.kinds}
    labels = {
        "passed": "passed",
        "failed": "failed",
        "timeout": "failed (timed out)",
        "error": "error",
        "crashed": "error",
        "interrupted": "error",
    }
    for (package, test), kind in run.kinds.items():
        heads = [
            n
            for n in packages[f"package {package}"].findall("nest")
            if n[0].text == f"test {test}: {labels[kind]}"
        ]
        assert len(heads) == 1, (test, [n[0].text for n in packages[f"package {package}"].findall("nest")])
        nest = heads[0]
        # a failing test's head is expanded, and its lines carry error
        assert (nest[0].get("expanded") == "1") == is_bad(kind), test
        has_error = any("error" in e.attrib for e in nest.iter())
        assert has_error == is_bad(kind), test
        if is_bad(kind) and kind != "error":
            texts = [line.text for line in nest.findall("line")]
            wrapper = run.wrapper(package, test)
            assert (
                f"to reproduce: {wrapper}" in texts
                and f"    to debug: {wrapper} {debug_flag(wrapper)}" in texts
            ), test
    tests = [n for p in packages.values() for n in p.findall("nest")]
    assert len(tests) == len(run.kinds)
    interrupted = [line for line in root.findall("line") if "interrupted" in (line.text or "")]
    assert bool(interrupted) == run.interrupted


class Node:
    """An element of a small HTML tree: enough for xsltproc's and chromium's output."""

    def __init__(self, tag: str, attrs: dict[str, str | None], parent: Node | None) -> None:
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list[Node | str] = []

    def iter(self) -> Iterator[Node]:
        yield self
        for child in self.children:
            if isinstance(child, Node):
                yield from child.iter()

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    @property
    def classes(self) -> list[str]:
        return (self.attrs.get("class") or "").split()

    def find(self, tag: str, cls: str = "") -> list[Node]:
        return [n for n in self.iter() if n.tag == tag and (not cls or cls in n.classes) and n is not self]


VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {}, None)
        self.current = self.root

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, dict(attrs), self.current)
        self.current.children.append(node)
        if tag not in VOID:
            self.current = node

    def handle_endtag(self, tag: str) -> None:
        node: Node | None = self.current
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.current = node.parent

    def handle_data(self, data: str) -> None:
        self.current.children.append(data)


def parse_html(text: str) -> Node:
    builder = TreeBuilder()
    builder.feed(text)
    builder.close()
    return builder.root


def xsltproc(*args: str, stdin: bytes | None = None) -> bytes:
    proc = subprocess.run(["xsltproc", *args], input=stdin, capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    assert not proc.stderr, proc.stderr.decode(errors="replace")[-3000:]
    return proc.stdout


@pytest.mark.tools("xsltproc")
@pytest.mark.parametrize("pipeline", PIPELINES)
def test_logxml_renders_with_the_stylesheets(run: Run, reference: Path, pipeline: str) -> None:
    log_xml = str(run.out / "log.xml")
    if pipeline == "nixos-test-driver":
        html = xsltproc(str(reference / pipeline / "log2html.xsl"), log_xml)
    else:
        marked = xsltproc(str(reference / pipeline / "mark-errors.xsl"), log_xml)
        html = xsltproc(str(reference / pipeline / "log2html.xsl"), "-", stdin=marked)
    tree = parse_html(html.decode("utf-8"))
    # head and line become <code> (Nix, NixOS) or <span class="code"> (Hydra), in order
    rendered = [n.text() for n in tree.iter() if n.tag == "code" or (n.tag == "span" and "code" in n.classes)]
    expected = [e.text or "" for e in ET.parse(log_xml).getroot().iter() if e.tag in ("head", "line")]
    assert len(rendered) == len(expected)
    differ = [(x, y) for x, y in zip(expected, rendered) if x.strip() != y.strip()]
    assert not differ, differ[:3]
    for _, test in run.kinds:
        assert any(t.startswith(f"test {test}: ") for t in rendered), test


# -- log.html ------------------------------------------------------------------


def html_tests(tree: Node) -> dict[tuple[str, str], Node]:
    tests: dict[tuple[str, str], Node] = {}
    for package in tree.find("details", "package"):
        summary = package.find("summary")[0]
        name = summary.find("span", "name")[0].text()
        for details in package.find("details", "test"):
            tests[name, details.find("span", "name")[0].text()] = details
    return tests


def check_log_html(run: Run, tree: Node) -> None:
    """Failing tests open with their rerun lines, passing ones folded."""
    tests = html_tests(tree)
    assert set(tests) == set(run.kinds)
    for (package, test), kind in run.kinds.items():
        details = tests[package, test]
        assert ("open" in details.attrs) == is_bad(kind), test
        rerun = [n.text() for n in details.find("pre", "rerun")]
        if is_bad(kind) and kind != "error":
            wrapper = run.wrapper(package, test)
            assert rerun == [f"to reproduce: {wrapper}\n    to debug: {wrapper} {debug_flag(wrapper)}"], test
        else:
            assert rerun == [], test


def test_loghtml_folding_and_rerun_lines(run: Run) -> None:
    check_log_html(run, parse_html((run.out / "log.html").read_text(encoding="utf-8")))


# -- nix-support ---------------------------------------------------------------

# Hydra's POSIX ERE (build-result.cc), matched against whole lines; [[:space:]] is
# the C locale's " \t\n\v\f\r".
SP = r"[ \t\n\v\f\r]"
NSP = r"[^ \t\n\v\f\r"
PRODUCT = re.compile(
    r"([a-zA-Z0-9_-]+)" + SP + r"+([a-zA-Z0-9_-]+)" + SP + r"+"
    r'("[^"]+"|' + NSP + r'<>"]+)'
    r"(" + SP + r"+(" + NSP + r"<>]+))?"
)


def test_hydra_build_products(run: Run) -> None:
    text = (run.out / "nix-support" / "hydra-build-products").read_text()
    products = []
    for line in [line for line in text.split("\n") if line]:
        match = PRODUCT.fullmatch(line)
        assert match, f"Hydra would drop {line!r}"
        path = match[3][1:-1] if match[3].startswith('"') else match[3]
        assert os.path.isabs(path) and os.path.normpath(path) == path, line
        assert os.path.exists(os.path.join(path, match[5]) if match[5] else path), line
        # the product name is basename(PATH): blanked unless it matches this
        assert re.fullmatch(r"[a-zA-Z0-9.@:_ -]*", os.path.basename(path)), line
        products.append((match[1], match[2], path, match[5] or ""))
    out = os.path.abspath(run.out)
    assert products == [("report", "testlog", out, "log.html"), ("report", "junit", f"{out}/junit.xml", "")]


def test_hydra_metrics(run: Run) -> None:
    metrics: dict[str, tuple[float, str]] = {}
    for line in (run.out / "nix-support" / "hydra-metrics").read_text().split("\n"):
        if not line:
            continue
        fields = line.split()
        assert len(fields) in (2, 3), line
        assert re.fullmatch(r"[a-zA-Z0-9._-]+", fields[0]), line
        unit = fields[2] if len(fields) == 3 else ""
        assert not unit or re.fullmatch(r"[a-zA-Z0-9._%-]+", unit), line
        assert fields[0] not in metrics, f"{fields[0]} repeats: Hydra keeps only the last"
        metrics[fields[0]] = (float(fields[1]), unit)
    counts = {name: metrics[name] for name in ("tests", "failures", "errors", "skipped")}
    assert counts == {
        "tests": (len(run.kinds), ""),
        "failures": (n_failures(run.kinds), ""),
        "errors": (n_errors(run.kinds), ""),
        "skipped": (0, ""),
    }
    duration, unit = metrics["duration"]
    assert unit == "s" and duration > 0
    if ("coreutils", "sleeps") in run.kinds:
        assert metrics["package.coreutils.duration"][0] >= 2.0  # the timeout took 2 s


def test_failed_marker(run: Run) -> None:
    failed = run.out / "nix-support" / "failed"
    bad = sorted(f"{p}::{t}" for (p, t), kind in run.kinds.items() if is_bad(kind))
    assert bad, "every scenario has a failing test"
    assert failed.is_file()
    assert sorted(failed.read_text().split()) == bad


# -- interrupted runs ------------------------------------------------------------


def test_interrupted_run_says_so(interrupted_run: Run) -> None:
    html = (interrupted_run.out / "log.html").read_text(encoding="utf-8")
    assert "interrupted" in html
    assert "KeyboardInterrupt" in interrupted_run.output or "Interrupted" in interrupted_run.output


# -- log.html in a real browser ------------------------------------------------

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # nothing can be fetched: a page that needs the network would show it
    "--host-resolver-rules=MAP * ~NOTFOUND",
]

#: an external reference in the probe copy, to show that requests are seen
CONTROL = "http://nixtest-probe.invalid/control.png"
PROBE = (
    f'<img src="{CONTROL}" alt="">'
    "<script>window.addEventListener('load', () => document.body.setAttribute("
    "'data-resources', JSON.stringify(performance.getEntriesByType('resource').map(e => e.name))));"
    "</script>"
)


def chromium(tmp_path: Path, *args: str) -> str:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser is not None  # the test is marked `chromium`
    profile = tmp_path / f"chromium-profile-{len(list(tmp_path.iterdir()))}"
    proc = subprocess.run(
        [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.chromium
def test_loghtml_in_headless_chromium(runs: Runs, tmp_path: Path) -> None:
    run = runs.get("kinds-j1")
    page = run.out / "log.html"
    dom = chromium(tmp_path, "--dump-dom", page.as_uri())
    tree = parse_html(dom)
    # the browser built the page: failing tests open with their rerun lines, passing folded
    check_log_html(run, tree)
    body = tree.find("body")[0].text()
    assert "nixtest report" in body and "Hello, world!" in body
    assert "bonjour" in body and "key 'scirpt': unknown key" in body
    # self-contained: nothing to fetch, no script
    assert not tree.find("script") and not tree.find("link") and not tree.find("iframe")
    references = [
        value
        for node in tree.iter()
        for name, value in node.attrs.items()
        if name in ("src", "href", "srcset", "action", "data", "poster") and value
    ]
    assert not [r for r in references if re.match(r"\s*(\w+:|//)", r) and not r.startswith("#")], references
    # and indeed nothing is requested: the same page with a script that lists what was
    # fetched (no CSP, so it may run), and one external image as a control
    source = page.read_text(encoding="utf-8")
    probe = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", source)
    assert probe != source and "</body>" in probe
    probe_page = run.out / "probe.html"
    probe_page.write_text(probe.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    try:
        probed = parse_html(chromium(tmp_path, "--dump-dom", probe_page.as_uri()))
    finally:
        probe_page.unlink()
    fetched = json.loads(probed.find("body")[0].attrs.get("data-resources") or "null")
    assert fetched == [CONTROL]
    # and it draws: a screenshot of a real size
    png = tmp_path / "log.png"
    chromium(tmp_path, f"--screenshot={png}", "--window-size=1280,1600", page.as_uri())
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
