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
