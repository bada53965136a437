"""`expect:` of a `run:` test: one check for the runner and the driver (nixtest.child.expect)."""

from __future__ import annotations

import subprocess

import pytest
from test_e2e_core import junit_case
from test_loop import run

from conftest import Suite
from nixtest.child.expect import failure_message, problems


def test_problems() -> None:
    out = {"stdout": "one\nPython 3.11\n", "stderr": ""}
    assert problems(0, out, {"exit": 0, "stdout": [r"^Python 3\."]}) == []
    assert problems(0, out, {}) == [], "no expect: exit 0"
    assert problems(1, out, {"stdout": ["^two$"], "stderr": ["x"]}) == [
        "exited 1, expected 0",
        "stdout does not match '^two$'",
        "stderr does not match 'x'",
    ]
    assert problems(3, {}, {"exit": 3}) == []
    assert failure_message("false", ["exited 1, expected 0"]) == "'false' exited 1, expected 0"


@pytest.mark.dpkg
def test_the_runner_checks_expect_itself_with_the_drivers_verdict(suite: Suite) -> None:
    ppid = suite.root / "ppid"
    wrong = "echo ho; echo err >&2; exit 2"
    # the command's supervisor: its parent's pid and that one's, and its command line
    up = (
        f"p=$(cut -d' ' -f4 /proc/$PPID/stat); echo $p > {ppid}; cut -d' ' -f4 /proc/$p/stat > {ppid}.pp; "
        f"cat /proc/$PPID/cmdline > {ppid}.z"
    )
    suite.package(
        "coreutils",
        f"""
        tests:
          match: {{run: "{up}; echo hi", expect: {{stdout: '^hi$'}}}}
          mismatch: {{run: "{wrong}", expect: {{exit: 2, stdout: '^hi$', stderr: '^err'}}}}
        """,
    )
    code, output, pid = run(suite, "-j", "1")
    assert code == 1, output
    # no driver, no shell of the wrapper's, no interpreter started for it between
    # nixtest and the command: only its supervisor, nixtest's spawner, started by
    # one of the nixtest process's forked workers (nixtest.run.workers)
    assert b"nixtest/child/spawner.py" in ppid.with_name("ppid.z").read_bytes()
    assert int(ppid.read_text()) != pid
    assert int(ppid.with_name("ppid.pp").read_text()) == pid
    message = f"{wrong!r} stdout does not match '^hi$'"
    failure = junit_case(suite.out, "coreutils::mismatch").find("failure")
    assert failure is not None and message in (failure.get("message") or ""), output
    # the wrapper run by hand checks it with the driver: the same verdict
    by_hand = subprocess.run([suite.wrapper("coreutils", "mismatch")], capture_output=True, text=True)
    assert by_hand.returncode == 1
    assert f"coreutils::mismatch failed: {message}" in by_hand.stderr
    assert subprocess.run([suite.wrapper("coreutils", "match")], capture_output=True).returncode == 0
