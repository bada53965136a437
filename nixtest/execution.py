"""Running a wrapper: a new session, output teed to a log, a timeout for the whole group.

plumbum's own timeout kills only the direct child; a test's children would
live on.  Here the wrapper leads a new session, and on timeout the whole
process group gets SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from plumbum import local
from plumbum.commands.processes import CommandNotFound

from nixtest.capture import DEFAULT_TAIL, Masker, Tail, pump
from nixtest.errors import ExecutionError

#: seconds between SIGTERM and SIGKILL
GRACE = 5.0
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


def _signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Signals a process group; False when none of it is left."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


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
) -> ProcessRun:
    """Runs `argv` in a new session; its full output (secrets masked) goes to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    output = Tail(tail)
    maskers = {"stdout": Masker(secrets), "stderr": Masker(secrets)}
    start = time.time()
    try:
        command = local[argv[0]][list(argv[1:])]
    except CommandNotFound:
        raise ExecutionError(f"could not start {argv[0]}: command not found") from None
    # unbuffered: `tail -f` shows the output as it comes, and a killed worker loses none of it
    with open(log_path, "wb", buffering=0) as log:

        def write(data: bytes) -> None:
            view = memoryview(data)
            while view:  # a raw file may take part of it
                written = log.write(view)
                if not written:
                    raise OSError(f"could not write {log_path}")
                view = view[written:]

        def on_data(stream: str, data: bytes) -> None:
            data = maskers[stream].feed(data)
            write(data)
            output.add(stream, data)

        try:
            with local.env():
                if env is not None:
                    # plumbum adds its own environment to the one given: `env` is all there is
                    local.env.clear()
                    local.env.update(env)
                launched = command.popen(
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    cwd=str(cwd) if cwd else None,
                    env=dict(os.environ if env is None else env),
                    new_session=True,
                )
        except OSError as exc:
            raise ExecutionError(f"could not start {argv[0]}: {exc.strerror or exc}") from exc
        # plumbum's Popen wraps subprocess's; its typing hides wait(timeout=)
        proc: subprocess.Popen[bytes] = getattr(launched, "_proc")  # noqa: B009
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
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                timed_out = True
                _signal_group(pgid, signal.SIGTERM)
                grace_end = time.monotonic() + grace
                fds = pump(fds, on_data, deadline=grace_end, stop=wrapper_done)
                try:
                    proc.wait(timeout=max(0.0, grace_end - time.monotonic()))
                except subprocess.TimeoutExpired:
                    _signal_group(pgid, signal.SIGKILL)
                    proc.wait()
        except BaseException:
            # Ctrl-C or an error here: leave nothing of the test running.
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
            proc.stdout.close()
            proc.stderr.close()
        code = proc.wait()
    if timed_out:
        message = f"\nnixtest: timed out after {timeout:g} seconds; the test's process group was killed\n"
        output.add("stderr", message.encode())
        with open(log_path, "ab") as tail_log:
            tail_log.write(message.encode())
    return ProcessRun(
        command=list(argv),
        exit_code=code,
        timed_out=timed_out,
        output=output,
        start=start,
        end=time.time(),
    )
