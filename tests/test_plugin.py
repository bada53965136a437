"""The plugin's controller side: when the reports are written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest


def start_run(tmp_path: Path, tests_yaml: str, *extra: str) -> tuple[subprocess.Popen[bytes], Path]:
    package = tmp_path / "pt" / "coreutils"
    package.mkdir(parents=True)
    (package / "tests.yaml").write_text(tests_yaml)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "nixtest.cli", "run", "--tests", "pt", "--out", str(out), *extra],
        cwd=tmp_path,
        env={**os.environ, "NIXTEST_STATE": str(tmp_path / "state")},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return proc, out


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_run_interrupted_before_any_result_still_writes_its_reports(tmp_path: Path, jobs: str) -> None:
    out = tmp_path / "out"
    # what an earlier run into the same OUT left: it must not pass for this run's
    (out / "nix-support").mkdir(parents=True)
    (out / "nix-support" / "failed").write_text("coreutils::old\n")
    (out / "junit.xml").write_text("<testsuites><testsuite name='old' tests='1'/></testsuites>")
    proc, out = start_run(tmp_path, "tests:\n  slow:\n    run: sleep 60\n", "-j", jobs)
    log = out / "logs" / "coreutils" / "slow.log"
    deadline = time.monotonic() + 60
    while not log.exists():
        assert proc.poll() is None, proc.communicate()[0].decode(errors="replace")
        assert time.monotonic() < deadline, "the test never started"
        time.sleep(0.05)
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C, as a terminal sends it
    output = proc.communicate(timeout=60)[0].decode(errors="replace")
    assert proc.returncode == 2, output
    junit = ET.parse(out / "junit.xml").getroot()
    assert junit.findall(".//testsuite[@name='old']") == [], "the old report was left in place"
    cases = junit.findall(".//testcase")
    # the test Ctrl-C stopped is in the reports, as an error that says so
    assert [case.get("name") for case in cases] == ["slow"], output
    error = cases[0].find("error")
    assert error is not None and "interrupted" in (error.get("message") or ""), output
    assert "interrupted" in (out / "log.xml").read_text()
    failed = out / "nix-support" / "failed"
    assert not failed.exists() or "coreutils::old" not in failed.read_text(), "a failure from an earlier run"


def test_a_run_with_nothing_collected_writes_no_reports(tmp_path: Path) -> None:
    proc, out = start_run(tmp_path, "tests:\n  a:\n    run: 'true'\n", "-k", "no-such-test")
    output = proc.communicate(timeout=60)[0].decode(errors="replace")
    assert proc.returncode == 5, output
    assert not (out / "junit.xml").exists()


def test_nixtest_run_prints_no_warnings(tmp_path: Path) -> None:
    """nixtest imports itself before pytest loads it as a plugin: pytest must not warn about it."""
    proc, _ = start_run(tmp_path, "tests:\n  a:\n    run: 'true'\n")
    output = proc.communicate(timeout=60)[0].decode(errors="replace")
    assert proc.returncode == 0, output
    assert "warnings summary" not in output and "Warning" not in output, output


OBSERVER = """\
import json, os
import pytest

seen = []


def pytest_runtest_logreport(report):
    seen.append((report.when, [key for key, _ in report.user_properties]))


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session):
    kept = [key for item in session.items for key, _ in item.user_properties]
    name = os.environ.get("PYTEST_XDIST_WORKER", "main")
    with open(os.path.join(os.environ["OBSERVED"], name + ".json"), "w") as f:
        json.dump({"reports": seen, "items": kept}, f)
"""


@pytest.mark.parametrize("how", [("-j", "1"), ("-j", "2"), ("-n", "2")])
def test_no_copy_of_a_result_is_kept_for_the_run(tmp_path: Path, how: tuple[str, str]) -> None:
    """A result is kept once, as the object the reports are written from (issue 8: memory at 10k tests).

    In the process that writes the reports the item hands its result over: no JSON of it in
    the item or its reports.  A pytest-xdist worker sends it once, with the setup or call
    report, and keeps no copy in the item or sends it again with the teardown report.
    """
    import json

    package = tmp_path / "pt" / "coreutils"
    package.mkdir(parents=True)
    (package / "tests.yaml").write_text(
        "tests:\n  good:\n    run: 'true'\n  bad:\n    run: 'false'\n  broken:\n    run: 1\n"
    )
    (tmp_path / "observer.py").write_text(OBSERVER)
    observed = tmp_path / "observed"
    observed.mkdir()
    out = tmp_path / "out"
    option = "--nixtest-jobs" if how[0] == "-j" else how[0]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "observer", "pt"]
        + ["--nixtest-out", str(out), "--nixtest-state", str(tmp_path / "state"), option, how[1]],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path), "OBSERVED": str(observed)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    cases = {case.get("name"): case for case in ET.parse(out / "junit.xml").getroot().iter("testcase")}
    assert sorted(cases) == ["bad", "broken", "good"], done.stdout
    assert cases["good"].find("failure") is None and cases["good"].find("error") is None
    assert cases["bad"].find("failure") is not None
    assert cases["broken"].find("error") is not None or cases["broken"].find("failure") is not None
    main = json.loads((observed / "main.json").read_text())
    carried = [when for when, keys in main["reports"] if "nixtest_result" in keys]
    if how[0] == "-j":
        assert carried == [], "a JSON copy of a result went with a report"
        assert main["items"] == [], "an item kept a JSON copy of its result"
    else:
        # one report per test carries it from its worker: the setup's or the call's
        assert sorted(carried) == ["call", "call", "setup"], main["reports"]
        workers = [json.loads(p.read_text()) for p in observed.glob("gw*.json")]
        assert workers and all(w["items"] == [] for w in workers), workers
