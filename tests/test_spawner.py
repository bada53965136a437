"""The spawner (nixtest.child.spawner): the small process that supervises `run:` tests one by one.

Driven through the runner's own client (nixtest.exec.zygote.Zygote), with
real processes: what the command finds (signals, mask, folder, environment),
its exit code, a timeout's kill and what the test left behind, the
supervisor stopped or killed outright, and the profiles read-only to a test
run as root.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import pids_matching
from nixtest.child import reaper
from nixtest.errors import ExecutionError
from nixtest.exec.zygote import Zygote, ZygoteChild

needs_root = pytest.mark.root  # only root's profiles need the namespace, and only root can make one


@pytest.fixture
def spawner() -> Iterator[Zygote]:
    server = Zygote(sys.executable, light=True)
    try:
        yield server
    finally:
        server.close()


def start(server: Zygote, folder: Path, line: str, **more: Any) -> ZygoteChild:
    request = {
        "cwd": str(folder),
        "name": "p::t",
        "result": str(folder / "result.jsonl"),
        "read_only": [],
        "exec": ["/bin/sh", "-c", line],
        "env": {"PATH": "/usr/bin:/bin", "HOME": str(folder)},
        **more,
    }
    return server.spawn(request)


def finish(child: ZygoteChild, timeout: float = 60) -> tuple[int, str, str]:
    out = child.stdout.read().decode()
    err = child.stderr.read().decode()
    code = child.wait(timeout)
    child.stdout.close()
    child.stderr.close()
    return code, out, err


def test_each_tests_exit_code_is_passed_on(tmp_path: Path) -> None:
    # Four spawners at once (as four runner threads), crowding the CPUs: the command's
    # process must be reaped by its supervisor only (a subprocess.Popen dropped too
    # early reaped a command that ended before its supervisor went on: "exited 1").
    wrong: list[tuple[int, tuple[int, str, str]]] = []

    def serve_thread() -> None:
        server = Zygote(sys.executable, light=True)
        try:
            for i in range(40):
                got = finish(start(server, tmp_path, f"echo {i}; exit {i % 7}"))
                if got != (i % 7, f"{i}\n", ""):
                    wrong.append((i, got))
        finally:
            server.close()

    threads = [threading.Thread(target=serve_thread) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []


def test_the_command_finds_what_the_wrappers_supervisor_gives_it(spawner: Zygote, tmp_path: Path) -> None:
    look = "grep -E '^(SigBlk|SigIgn|SigCgt)' /proc/self/status; pwd; umask; env | sort; yes | head -n 1"
    code, warm, err = finish(start(spawner, tmp_path, look))
    assert code == 0 and err == "", err
    by_hand = subprocess.run(
        [sys.executable, "-I", "-S", reaper.__file__, "--", "PATH=/usr/bin:/bin", f"HOME={tmp_path}"]
        + ["/bin/sh", "-c", look],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert by_hand.returncode == 0 and by_hand.stderr == "", by_hand.stderr
    # nothing blocked, nothing ignored (SIGPIPE, SIGXFSZ, glibc's own signals): as by hand
    assert warm == by_hand.stdout
    assert "SigIgn:\t0000000000000000\n" in warm and "SigBlk:\t0000000000000000\n" in warm, warm
    assert f"\n{tmp_path}\n0022\n" in warm and warm.endswith("\ny\n"), warm


def test_a_command_that_cannot_start_says_so(spawner: Zygote, tmp_path: Path) -> None:
    request = {"exec": ["no-such-command-here"], "env": {"PATH": "/usr/bin:/bin"}}
    with pytest.raises(ExecutionError, match="nixtest: cannot run no-such-command-here: No such file"):
        start(spawner, tmp_path, "", **request)
    # and the next test runs
    assert finish(start(spawner, tmp_path, "echo next")) == (0, "next\n", "")


def test_a_timeout_kills_the_tests_group_and_the_supervisor_what_is_left(
    spawner: Zygote, tmp_path: Path
) -> None:
    # what the runner does on a timeout or Ctrl-C: SIGTERM to the command's group,
    # which leads a session of its own; the supervisor then ends what the test detached
    marker = f"0.{os.getpid()}{time.monotonic_ns()}"  # sleep adds its arguments up
    detached = f"setsid sh -c 'echo $$ > detached; exec sleep 60 {marker}' &"
    wait = "while [ ! -s detached ]; do sleep 0.01; done"
    line = f"rm -f detached; {detached} {wait}; echo started; exec sleep 30"
    for _ in range(3):  # and again: the supervisor serves the next test afterwards
        child = start(spawner, tmp_path, line)
        assert child.stdout.readline() == b"started\n"
        os.killpg(child.pid, signal.SIGTERM)
        code, _, err = finish(child, timeout=30)
        assert code == -signal.SIGTERM, (code, err)
        assert "nixtest: p::t: killed 1 process the test left running: " in err and marker in err, err
        assert not pids_matching(marker), "a detached process outlived its test"
        assert '"type": "killed"' in (tmp_path / "result.jsonl").read_text()
        (tmp_path / "result.jsonl").unlink()


def test_a_stop_signal_to_the_supervisor_ends_its_test_and_itself(spawner: Zygote, tmp_path: Path) -> None:
    # SIGTERM, SIGHUP reach the supervisor when the runner's thread is gone (its death signal)
    marker = f"0.{os.getpid()}{time.monotonic_ns()}"  # sleep adds its arguments up
    child = start(spawner, tmp_path, f"echo started; exec sleep 60 {marker}")
    assert child.stdout.readline() == b"started\n"
    os.kill(spawner.proc.pid, signal.SIGTERM)
    code, _, err = finish(child, timeout=30)
    assert (code, err) == (128 + signal.SIGTERM, "nixtest: p::t: SIGTERM: the test was stopped\n")
    assert spawner.proc.wait(timeout=30) == 0
    assert not pids_matching(marker), "a stopped test's command lived on"


def test_a_supervisor_killed_outright_takes_its_test_along(spawner: Zygote, tmp_path: Path) -> None:
    # the command has no death signal of its own here: the runner's side ends its group
    marker = f"0.{os.getpid()}{time.monotonic_ns()}"  # sleep adds its arguments up
    child = start(spawner, tmp_path, f"echo started; exec sleep 60 {marker}")
    assert child.stdout.readline() == b"started\n"
    os.kill(spawner.proc.pid, signal.SIGKILL)
    assert child.wait(30) == -signal.SIGKILL
    end = time.monotonic() + 10
    while pids_matching(marker) and time.monotonic() < end:
        time.sleep(0.05)
    assert not pids_matching(marker), "the test outlived its supervisor"
    child.stdout.close()
    child.stderr.close()


def test_the_supervisor_dies_with_the_thread_that_started_it(tmp_path: Path) -> None:
    # its death signal is the starting thread's: the runner's pool threads each start their own
    servers: list[Zygote] = []

    def start_one() -> None:
        servers.append(Zygote(sys.executable, light=True))
        # a first test: the supervisor is up, its death signal set; the thread ends as
        # soon as the test does, while the supervisor may still be cleaning up after it
        assert finish(start(servers[0], tmp_path, "true")) == (0, "", "")

    thread = threading.Thread(target=start_one)
    thread.start()
    thread.join()
    try:
        assert servers[0].proc.wait(timeout=30) == -signal.SIGTERM
    finally:
        servers[0].close()


@needs_root
def test_profiles_are_read_only_to_root_tests_also_those_made_later(spawner: Zygote, tmp_path: Path) -> None:
    profiles = tmp_path / "profiles"
    first, later = profiles / "one", profiles / "two"
    first.mkdir(parents=True)
    (first / "file").write_text("one\n")
    work = tmp_path / "work"
    work.mkdir()
    write = "touch {0}/new 2>/dev/null && echo writable; cat {0}/file; touch ./mine && echo work is writable"
    code, out, _ = finish(start(spawner, work, write.format(first), read_only=[str(first)]))
    assert (code, out) == (0, "one\nwork is writable\n"), out
    # built (or rebuilt) by the runner after the spawner protected the folder: read-only too
    later.mkdir()
    (later / "file").write_text("two\n")
    code, out, _ = finish(start(spawner, work, write.format(later), read_only=[str(later)]))
    assert (code, out) == (0, "two\nwork is writable\n"), out
    # ... and to this process (the runner's namespace) still writable
    (later / "new").write_text("")
    (first / "file").write_text("changed\n")
    code, out, _ = finish(start(spawner, work, f"cat {first}/file", read_only=[str(first)]))
    assert (code, out) == (0, "changed\n"), out
