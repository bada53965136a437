"""The test's supervisor (nixtest.child.reaper), run as the wrapper runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


def _storm(proc: subprocess.Popen[bytes], seconds: float) -> None:
    """SIGTERM after SIGTERM at the supervisor until it exits (or `seconds` pass)."""
    end = time.monotonic() + seconds
    while proc.poll() is None and time.monotonic() < end:
        try:
            os.kill(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            break


def test_a_stop_signal_at_any_moment_never_escapes_as_a_traceback() -> None:
    # nixtest's Ctrl-C sends SIGTERM to the whole group, so the supervisor may get
    # it at any moment: also while it already stops the test, or cleans up after it.
    # Whatever the moment, it ends with the test's code or 128+15, never a traceback.
    for _ in range(20):
        proc = subprocess.Popen(
            [sys.executable, "-I", "-m", "nixtest.child.reaper", "--name", "p::t", "--"]
            + ["/bin/sh", "-c", "echo ready; exec sleep 0.1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"  # the supervisor is waiting on the test
        _storm(proc, 10)
        _, err = proc.communicate(timeout=30)
        assert b"Traceback" not in err, err.decode(errors="replace")
        assert proc.returncode in (0, 128 + signal.SIGTERM), (proc.returncode, err)


def test_a_stop_signal_ends_the_test_and_says_so() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-I", "-m", "nixtest.child.reaper", "--name", "p::t", "--", "/bin/sleep", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM
    assert b"nixtest: p::t: SIGTERM: the test was stopped" in err


def test_the_timeout_ends_the_test() -> None:
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-I", "-m", "nixtest.child.reaper", "--timeout", "0.5", "--", "/bin/sleep", "60"],
        capture_output=True,
        timeout=30,
    )
    assert done.returncode == 124
    assert time.monotonic() - start < 20
    assert b"Traceback" not in done.stderr


def test_the_tests_own_exit_code_is_passed_on() -> None:
    done = subprocess.run(
        [sys.executable, "-I", "-m", "nixtest.child.reaper", "--", "/bin/sh", "-c", "exit 7"],
        capture_output=True,
        timeout=30,
    )
    assert done.returncode == 7
    assert done.stderr == b""


def test_the_tests_command_gets_default_signal_actions() -> None:
    # Python ignores SIGPIPE; a shell pipeline's writer must still just end when its reader does
    done = subprocess.run(
        [sys.executable, "-I", "-m", "nixtest.child.reaper", "--", "/bin/sh", "-c", "yes | head -n 1"],
        capture_output=True,
        timeout=30,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, b"y\n", b"")
    shown = subprocess.run(
        [sys.executable, "-I", "-m", "nixtest.child.reaper", "--"]
        + ["/bin/sh", "-c", "grep '^SigIgn' /proc/self/status"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    ignored = int(shown.stdout.split()[1], 16)
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        assert not ignored & (1 << (sig - 1)), shown.stdout
