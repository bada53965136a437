"""Running a wrapper: a new session, output teed to a log, a timeout for the whole group.

A timeout that kills only the direct child (plumbum's, subprocess's) would let
a test's children live on.  Here the wrapper leads a new session, and on timeout the whole
process group gets SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nixtest.capture import DEFAULT_TAIL, Masker, Tail, pump
from nixtest.child.expect import Spool
from nixtest.errors import ExecutionError
from nixtest.safefs import make_folders, open_fresh

#: seconds between SIGTERM and SIGKILL
GRACE = 5.0
#: seconds more than the grace before the wrapper's group is killed
REAPER_SLACK = 2.0
#: seconds the supervisor gets to stop a test on Ctrl-C before its group is killed
STOP_GRACE = GRACE + REAPER_SLACK
#: seconds to keep reading after the wrapper exited, for output still in the pipes
DRAIN = 1.0


@dataclass
class ProcessRun:
    command: list[str]
    exit_code: int | None
    timed_out: bool
    output: Tail
    start: float
    end: float
    #: per stream, all of it, secrets masked (for `expect` patterns; see `Spool`)
    streams: dict[str, Spool] = field(default_factory=dict)


def _signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Signals a process group; False when none of it is left."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def launch(argv: Sequence[str], *, cwd: Path | None, env: dict[str, str] | None) -> subprocess.Popen[bytes]:
    """Starts a test's process: the one place where nixtest starts one.

    A new session (so its whole group can be killed), no input, output on
    pipes.  `env` is all the environment it gets.  subprocess, not plumbum:
    plumbum's `local.env` is one for the whole process, and the scheduler
    starts tests from several threads.
    """
    try:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=dict(os.environ if env is None else env),
            start_new_session=True,
        )
    except FileNotFoundError:
        raise ExecutionError(f"could not start {argv[0]}: command not found") from None
    except OSError as exc:
        raise ExecutionError(f"could not start {argv[0]}: {exc.strerror or exc}") from exc


def run_supervised(
    argv: Sequence[str],
    *,
    log_path: Path,
    timeout: float,
    secrets: Sequence[str] = (),
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    tail: int = DEFAULT_TAIL,
    grace: float = GRACE,
    on_start: Callable[[int], None] | None = None,
    match_limit: int = 0,
    spawn: Callable[[], Any] | None = None,
    append: bool = False,
) -> ProcessRun:
    """Runs `argv` in a new session; its full output (secrets masked) goes to `log_path`.

    `on_start` gets the process group's id as soon as it runs: whoever holds it
    may kill the group (the scheduler does, on Ctrl-C or `-x`).  Safe to call
    from several threads at once.  `spawn` starts the process instead of
    `launch` (the zygote does: its child is like a `subprocess.Popen`, leading
    a session of its own); `argv` then only names it.  `append` adds to the log.
    """
    make_folders(log_path.parent)
    output = Tail(tail)
    maskers = {"stdout": Masker(secrets), "stderr": Masker(secrets)}
    streams = {"stdout": Spool(match_limit), "stderr": Spool(match_limit)} if match_limit else {}
    start = time.time()
    # unbuffered: `tail -f` shows the output as it comes, and a killed worker loses none of it
    # created afresh, never through a symlink someone planted where the log goes (appended
    # to only when this run made it: the warm path's preparing wrapper wrote its start)
    if append:
        log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC)
    else:
        log_fd = open_fresh(log_path)
    with os.fdopen(log_fd, "wb", buffering=0) as log:

        def write(data: bytes) -> None:
            view = memoryview(data)
            while view:  # a raw file may take part of it
                written = log.write(view)
                if not written:
                    raise OSError(f"could not write {log_path}")
                view = view[written:]

        def on_data(stream: str, data: bytes) -> None:
            data = maskers[stream].feed(data)
            if streams:
                streams[stream].add(stream, data)
            write(data)
            output.add(stream, data)

        proc = launch(argv, cwd=cwd, env=env) if spawn is None else spawn()
        if on_start is not None:
            on_start(proc.pid)
        assert proc.stdout is not None and proc.stderr is not None
        pgid = proc.pid  # the session leader's pid is its group's id
        fds = {proc.stdout.fileno(): "stdout", proc.stderr.fileno(): "stderr"}
        exited_at: list[float] = []

        def wrapper_done() -> bool:
            # Children that keep the pipes open must not hold us until the timeout.
            if proc.poll() is None:
                return False
            if not exited_at:
                exited_at.append(time.monotonic())
            return time.monotonic() - exited_at[0] > DRAIN

        timed_out = False
        deadline = time.monotonic() + timeout
        try:
            fds = pump(fds, on_data, deadline=deadline, stop=wrapper_done)
            try:
                left = deadline - time.monotonic()
                proc.wait(timeout=None if math.isinf(left) else max(0.0, left))
            except subprocess.TimeoutExpired:
                timed_out = True
                _signal_group(pgid, signal.SIGTERM)
                # the supervisor above the test (nixtest.child.reaper) kills what is left of
                # the test after its own grace: it gets time to, before its group is killed
                grace_end = time.monotonic() + grace + REAPER_SLACK
                fds = pump(fds, on_data, deadline=grace_end, stop=wrapper_done)
                try:
                    proc.wait(timeout=max(0.0, grace_end - time.monotonic()))
                except subprocess.TimeoutExpired:
                    _signal_group(pgid, signal.SIGKILL)
                    proc.wait()
        except BaseException:
            # Ctrl-C or an error here: leave nothing of the test running.  SIGTERM
            # first: the supervisor above the test (nixtest.child.reaper) then ends
            # also what the test detached from the group.
            _signal_group(pgid, signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                _signal_group(pgid, signal.SIGKILL)
                proc.wait()
            raise
        finally:
            # The wrapper is reaped by now: whatever it left behind in its group goes too.
            if _signal_group(pgid, signal.SIGTERM):
                time.sleep(0.05)
                _signal_group(pgid, signal.SIGKILL)
            if fds:
                pump(fds, on_data, deadline=time.monotonic() + DRAIN)
            for stream, masker in maskers.items():
                rest = masker.flush()
                write(rest)
                output.add(stream, rest)
                if streams:
                    streams[stream].add(stream, rest)
            proc.stdout.close()
            proc.stderr.close()
        code = proc.wait()
    if timed_out:
        message = f"\nnixtest: timed out after {timeout:g} seconds; the test's process group was killed\n"
        output.add("stderr", message.encode())
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "ab") as tail_log:
            tail_log.write(message.encode())
    return ProcessRun(
        command=list(argv),
        exit_code=code,
        timed_out=timed_out,
        output=output,
        start=start,
        end=time.time(),
        streams=streams,
    )
