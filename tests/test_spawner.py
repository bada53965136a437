"""The spawner (nixtest.child.spawner): the small server that forks `run:` tests' supervisors.

Driven through the runner's own client (nixtest.exec.zygote.Zygote), with
real processes: what the command finds (signals, mask, folder, environment),
its exit code, a stop signal at its start, a supervisor killed outright, and
the profiles read-only to a test run as root.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import pids_matching
from nixtest.child import reaper
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


def test_each_tests_exit_code_is_passed_on(spawner: Zygote, tmp_path: Path) -> None:
    # Many at once, crowding the CPUs: the command's process must be reaped by its
    # supervisor only (a subprocess.Popen dropped too early reaped a command that
    # ended before its supervisor went on, and the test "exited 1").
    for batch in range(4):
        children = [start(spawner, tmp_path, f"echo {i}; exit {i % 7}") for i in range(25)]
        for i, child in enumerate(children):
            assert finish(child) == (i % 7, f"{i}\n", ""), (batch, i)


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
    code, _, err = finish(start(spawner, tmp_path, "", **request))
    assert code == 127 and "nixtest: cannot run no-such-command-here" in err, err


def test_a_stop_signal_as_the_test_starts_is_not_lost(spawner: Zygote, tmp_path: Path) -> None:
    # before supervise() blocks it, a stop signal is kept for it (reaper.prepare_light_spawn)
    marker = f"0.{os.getpid()}{time.monotonic_ns()}"  # sleep adds its arguments up
    for _ in range(15):
        child = start(spawner, tmp_path, f"exec sleep 30 {marker}")
        os.kill(child.pid, signal.SIGTERM)
        code, _, err = finish(child, timeout=30)
        # the supervisor's own stop, never its death by the signal (which would leave
        # what the test detached running)
        assert (code, err) == (128 + signal.SIGTERM, "nixtest: p::t: SIGTERM: the test was stopped\n")
    assert not pids_matching(marker), "a stopped test's command lived on"


def test_a_supervisor_killed_outright_takes_its_test_along(spawner: Zygote, tmp_path: Path) -> None:
    # the command has no death signal of its own here: the spawner ends its group
    marker = f"0.{os.getpid()}{time.monotonic_ns()}"  # sleep adds its arguments up
    child = start(spawner, tmp_path, f"echo started; exec sleep 60 {marker}")
    assert child.stdout.readline() == b"started\n"
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait(30) == -signal.SIGKILL
    end = time.monotonic() + 10
    while pids_matching(marker) and time.monotonic() < end:
        time.sleep(0.05)
    assert not pids_matching(marker), "the test outlived its supervisor"
    child.stdout.close()
    child.stderr.close()


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
