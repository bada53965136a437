"""The zygote: one warm interpreter that forks a fresh child for each Python-driven test.

A wrapper's driver is a new interpreter importing plumbum or pytest: tens to
hundreds of milliseconds a test.  In nixtest's own runs the runner starts one
zygote (`python -I -m nixtest.child.zygote FD`, under an empty environment,
as the wrapper's `env -i` starts the driver), which imports all that once and,
for each test, forks a child that becomes what the wrapper would have
started: a session of its own, stdin from /dev/null, stdout and stderr on the
runner's pipes, umask 022, the test's working directory and exactly the
wrapper's environment; then it runs `nixtest.driver.main` with the wrapper's
arguments.  The zygote runs no test itself, so nothing a test does (its
modules, os.environ, plumbum's `local.env`, logging handlers, the cwd) reaches
the next one: each child is a copy of the same untouched zygote.

The zygote is single-threaded (fork and threads do not mix) and serves its
requests with the spawner's loop (nixtest.child.spawner: the socket, the
messages, the read-only profiles, the supervisor each child becomes); `run:`
tests are the spawner's, which has none of the zygote's imports to copy.

Standard library only, besides what it warms up (nixtest.driver, plumbum, pytest).
"""

from __future__ import annotations

import atexit
import gc
import os
import signal
import socket
import sys
import tempfile
import traceback
from contextlib import suppress
from typing import Any, NoReturn

from nixtest.child import reaper
from nixtest.child.spawner import become_supervisor, receive, send, serve

__all__ = ["main", "receive", "send"]


def warm_up() -> None:
    """Imports what the supervisor and the drivers of classic scripts, pytest modules, imports: use."""
    import logging  # noqa: F401

    import plumbum  # noqa: F401
    import plumbum.cmd  # noqa: F401
    import pytest  # noqa: F401
    from _pytest.config import default_plugins

    import nixtest.driver

    for name in default_plugins:
        __import__(f"_pytest.{name}")
    # pytest's start-up that is the same for every module (the kinds' part: nixtest.driver)
    nixtest.driver.warm_up()
    # What the warm-up made is never collected in a child: a collection there would
    # touch every object of it, and so copy every page of the zygote (10 ms a test).
    gc.collect()
    gc.freeze()


def become_test(
    request: dict[str, Any], stdout: int, stderr: int, startup_env: dict[str, str], server: int
) -> int:
    """In the forked child: turn into the supervisor the wrapper would have started, start the test.

    The request names the test's `result` file, its `name`, the profiles the
    server made `read_only` and the driver's `args` (`run:` tests are the
    spawner's: nixtest.child.spawner).
    """
    become_supervisor(request, stdout, stderr, server)
    test_pid = os.fork()
    if test_pid == 0:
        return _driver(request, startup_env)
    code = reaper.supervise(test_pid, name=str(request.get("name", "")), result=request.get("result"))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(reaper.die_like(code))


def _driver(request: dict[str, Any], startup_env: dict[str, str]) -> int:
    """Below the supervisor: the Python-driven test's driver, as a fresh interpreter would run it."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    # blocked since the fork (nixtest.child.spawner._start), as the supervisor above takes them
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD])
    reaper.die_with_parent(signal.SIGKILL)
    # the profiles are read-only to a test run as root already: the zygote's namespace
    # What a fresh interpreter under the wrapper's `env -i` would have: the
    # wrapper's variables, plus what the interpreter added itself at start-up
    # (the zygote started under an empty environment too: LC_CTYPE=C.UTF-8).
    os.environ.clear()
    os.environ.update(request["env"])
    for key, value in startup_env.items():
        os.environ.setdefault(key, value)
    # as nixtest.driver.main does: the profile's libraries reach the test's commands
    hidden = os.environ.pop("NIXTEST_LD_LIBRARY_PATH", None)
    if hidden is not None:
        os.environ["LD_LIBRARY_PATH"] = hidden
    # state that modules imported by the zygote took from its environment at import
    from plumbum.machines.local import LocalEnv, LocalMachine

    LocalMachine.env = LocalEnv()
    LocalMachine.clear_program_cache()
    tempfile.tempdir = None

    from nixtest import driver

    sys.argv = [driver.__file__, *request["args"]]
    return driver.main(list(request["args"]))


def _child(request: dict[str, Any], fds: list[int], server: int, startup_env: dict[str, str]) -> NoReturn:
    code = 1
    try:
        code = become_test(request, fds[0], fds[1], startup_env, server)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # as an interpreter does with an uncaught exception
        traceback.print_exc()
        code = 1
    finally:
        try:
            # what a fresh interpreter does on its way out: logging.shutdown, flushes
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def main(argv: list[str]) -> int:
    # before any import: what the interpreter put in its empty environment itself
    startup_env = dict(os.environ)
    sock = socket.socket(fileno=int(argv[0]))
    warm_up()

    def child(request: dict[str, Any], fds: list[int], server: int) -> NoReturn:
        _child(request, fds, server, startup_env)

    with suppress(BrokenPipeError, ConnectionResetError):  # the runner is gone
        serve(sock, child)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
