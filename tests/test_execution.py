"""execution.run_supervised: a new session, output teed to a log, a timeout for the whole group."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from conftest import pids_matching
from nixtest.errors import ExecutionError
from nixtest.execution import run_supervised


def sh(script: str) -> list[str]:
    return ["/bin/sh", "-c", script]


def test_exit_code_and_output_teed_to_the_log(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "pkg" / "test.log"
    run = run_supervised(sh("echo out; echo err >&2; echo more; exit 3"), log_path=log, timeout=30)
    assert run.exit_code == 3
    assert not run.timed_out
    assert run.command == sh("echo out; echo err >&2; echo more; exit 3")
    assert sorted(log.read_bytes().splitlines()) == [b"err", b"more", b"out"]
    assert run.output.text("stdout") == "out\nmore\n"
    assert run.output.text("stderr") == "err\n"
    assert run.start <= run.end


def test_exit_zero(tmp_path: Path) -> None:
    run = run_supervised(["/bin/true"], log_path=tmp_path / "t.log", timeout=30)
    assert run.exit_code == 0 and run.output.total == 0


def test_killed_by_a_signal(tmp_path: Path) -> None:
    run = run_supervised(sh("kill -9 $$"), log_path=tmp_path / "t.log", timeout=30)
    assert run.exit_code == -9


def test_cwd_and_env(tmp_path: Path) -> None:
    run = run_supervised(
        sh('pwd; echo "[$ONLY]" "[${HOME-unset}]"'),
        log_path=tmp_path / "t.log",
        timeout=30,
        cwd=tmp_path,
        env={"ONLY": "this one", "PATH": "/usr/bin:/bin"},
    )
    assert run.output.text("stdout") == f"{tmp_path}\n[this one] [unset]\n"


def test_runs_in_a_new_session(tmp_path: Path) -> None:
    code = "import os; print(os.getsid(0) == os.getpid(), os.getpgid(0) == os.getpid(), os.getsid(0))"
    run = run_supervised([sys.executable, "-c", code], log_path=tmp_path / "t.log", timeout=30)
    leader, group, sid = run.output.text("stdout").split()
    assert (leader, group) == ("True", "True")
    assert int(sid) != os.getsid(0)


def test_secrets_are_masked_in_log_and_tail(tmp_path: Path) -> None:
    secret = "hunter2-\u00e9-$(x)"
    log = tmp_path / "t.log"
    # printed in pieces, so that the secret spans reads
    script = 'printf "a %s" "${S%%-*}"; sleep 0.2; printf "%s b\\n" "-${S#*-}"; echo "$S" >&2'
    # PATH for sleep: without it, "sleep: not found" on stderr could land between the pieces
    env = {"S": secret, "PATH": "/usr/bin:/bin"}
    run = run_supervised(sh(script), log_path=log, timeout=30, secrets=[secret], env=env)
    data = log.read_bytes()
    assert secret.encode() not in data
    assert b"a *** b\n" in data and b"***\n" in data
    assert secret not in run.output.text()
    assert run.output.text("stdout") == "a *** b\n"


def test_big_output_full_log_bounded_tail(tmp_path: Path) -> None:
    log = tmp_path / "t.log"
    run = run_supervised(sh("head -c 3000000 /dev/urandom"), log_path=log, timeout=60, tail=100_000)
    assert log.stat().st_size == 3_000_000
    assert run.output.size == 100_000
    assert run.output.total == 3_000_000
    assert run.output.dropped == 2_900_000
    with open(log, "rb") as f:
        f.seek(-100_000, os.SEEK_END)
        assert b"".join(d for _, d in run.output.chunks) == f.read()


def test_timeout_kills_the_whole_group(tmp_path: Path) -> None:
    marker = f"1000.{os.getpid()}1"
    log = tmp_path / "t.log"
    start = time.monotonic()
    run = run_supervised(sh(f"sleep {marker} & sleep {marker} & echo started; wait"), log_path=log, timeout=1)
    took = time.monotonic() - start
    assert run.timed_out
    assert run.exit_code is not None and run.exit_code != 0
    assert took < 8
    assert pids_matching(marker) == []
    assert "started" in run.output.text("stdout")
    assert "timed out after 1 seconds" in run.output.text("stderr")
    assert b"timed out after 1 seconds" in log.read_bytes()


def test_a_child_ignoring_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    marker = f"1000.{os.getpid()}2"
    start = time.monotonic()
    run = run_supervised(
        sh(f"trap '' TERM; sleep {marker} & sleep {marker}"),
        log_path=tmp_path / "t.log",
        timeout=1,
        grace=1.5,
    )
    took = time.monotonic() - start
    assert run.timed_out
    assert 2.4 <= took < 8, "SIGKILL comes only after the grace"
    assert pids_matching(marker) == []


def test_leftover_children_holding_the_pipes_do_not_hold_the_run(tmp_path: Path) -> None:
    marker = f"1000.{os.getpid()}3"
    start = time.monotonic()
    run = run_supervised(sh(f"sleep {marker} & echo bye"), log_path=tmp_path / "t.log", timeout=60)
    assert time.monotonic() - start < 10
    assert not run.timed_out
    assert run.exit_code == 0
    assert run.output.text() == "bye\n"
    assert pids_matching(marker) == [], "what the test left behind in its group is killed"


@pytest.mark.parametrize("argv", [["/no/such/program"], ["no-such-program-nixtest"], ["/etc/passwd"]])
def test_cannot_start(argv: list[str], tmp_path: Path) -> None:
    with pytest.raises(ExecutionError) as info:
        run_supervised(argv, log_path=tmp_path / "t.log", timeout=5)
    assert info.value.message.startswith(f"could not start {argv[0]}: ")
    assert "\n" not in info.value.message
