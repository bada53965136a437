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

The zygote is single-threaded (fork and threads do not mix), talks to the
runner over one SOCK_SEQPACKET socket (one JSON message each way, the child's
output pipes passed with SCM_RIGHTS), and reports each child's exit status,
since it is their parent.  When the runner goes away (the socket's end), it
kills its children's process groups and exits.

Standard library only, besides what it warms up (nixtest.driver, plumbum, pytest).
"""

from __future__ import annotations

import array
import atexit
import contextlib
import gc
import json
import os
import selectors
import signal
import socket
import sys
import tempfile
import traceback
from typing import Any

#: biggest message either side sends (a test's spec and environment)
MESSAGE_LIMIT = 4 * 1024 * 1024
#: the file descriptors a request carries: the child's stdout and stderr
FDS_PER_REQUEST = 2


def send(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    data = json.dumps(message).encode("utf-8", "surrogateescape")
    if fds:
        sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    else:
        sock.send(data)


def receive(sock: socket.socket) -> tuple[dict[str, Any] | None, list[int]]:
    """One message and the descriptors it carries; (None, []) at the end of the socket."""
    fds = array.array("i")
    data, ancillary, _, _ = sock.recvmsg(MESSAGE_LIMIT, socket.CMSG_LEN(FDS_PER_REQUEST * fds.itemsize))
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
    if not data:
        for fd in fds:
            os.close(fd)
        return None, []
    return json.loads(data.decode("utf-8", "surrogateescape")), list(fds)


def warm_up() -> None:
    """Imports what the supervisor and the drivers of classic scripts, pytest modules, imports: use."""
    import logging  # noqa: F401

    import plumbum  # noqa: F401
    import plumbum.cmd  # noqa: F401
    import pytest  # noqa: F401
    from _pytest.config import default_plugins

    import nixtest.driver
    from nixtest.child import reaper  # noqa: F401  every child becomes a supervisor (ctypes: 1 ms)

    for name in default_plugins:
        __import__(f"_pytest.{name}")
    # pytest's start-up that is the same for every module (the kinds' part: nixtest.driver)
    nixtest.driver.warm_up()
    # What the warm-up made is never collected in a child: a collection there would
    # touch every object of it, and so copy every page of the zygote (10 ms a test).
    gc.collect()
    gc.freeze()


def become_test(request: dict[str, Any], stdout: int, stderr: int, startup_env: dict[str, str]) -> int:
    """In the forked child: turn into the supervisor the wrapper would have started, start the test.

    The request names the test's `result` file, its `name` and the profiles to
    make `read_only`, and either the driver's `args` or, for a `run:` test, the
    command to `exec` with exactly `env`.
    """
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(stdout, 1)
    os.dup2(stderr, 2)
    # the zygote's socket, selector and pipes are none of the test's business
    os.closerange(3, os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 1024)
    os.umask(0o022)
    os.chdir(request["cwd"])
    # This process stays above the test as its supervisor, as on the wrapper's
    # path (nixtest.child.reaper): the subreaper of all the test starts, ending
    # it all when the test ends, and with the zygote (so with nixtest).
    from nixtest.child import reaper

    read_only = [str(p) for p in request.get("read_only", [])]
    reaper.die_with_parent()
    reaper.become_reaper()
    if request.get("exec") is not None:
        # a `run:` test: its command, started as the wrapper's supervisor starts it
        # (reaper.main); a stop signal waits for supervise() from here on
        signal.pthread_sigmask(signal.SIG_BLOCK, reaper.STOP_SIGNALS)
        test_pid = reaper.spawn(list(request["exec"]), dict(request["env"]), read_only)
    else:
        test_pid = os.fork()
        if test_pid == 0:
            return _driver(request, startup_env, read_only)
    code = reaper.supervise(test_pid, name=str(request.get("name", "")), result=request.get("result"))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(reaper.die_like(code))


def _driver(request: dict[str, Any], startup_env: dict[str, str], read_only: list[str]) -> int:
    """Below the supervisor: the Python-driven test's driver, as a fresh interpreter would run it."""
    from nixtest.child import reaper

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    reaper.die_with_parent(signal.SIGKILL)
    # the profiles, read-only to a test run as root, as on the wrapper's path
    reaper.read_only([p for p in read_only if os.path.isdir(p)])
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


def _child(request: dict[str, Any], fds: list[int], startup_env: dict[str, str]) -> None:
    code = 1
    try:
        code = become_test(request, fds[0], fds[1], startup_env)
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


def serve(sock: socket.socket, startup_env: dict[str, str]) -> None:
    """Forks a child per request until the runner closes its end."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    signal.set_wakeup_fd(wake_w)
    # Ctrl-C on the runner's terminal does not reach this session; the runner ends us
    children: set[int] = set()
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    try:
        while True:
            for key, _ in selector.select():
                if key.fileobj is sock:
                    request, fds = receive(sock)
                    if request is None:
                        return
                    _start(sock, request, fds, startup_env, children)
                else:
                    while True:
                        try:
                            if not os.read(wake_r, 4096):
                                break
                        except BlockingIOError:
                            break
            _reap(sock, children)
    finally:
        for pid in children:
            with contextlib.suppress(OSError):
                # SIGTERM: each child is a test's supervisor, which ends the whole test
                os.killpg(pid, signal.SIGTERM)


def _start(
    sock: socket.socket,
    request: dict[str, Any],
    fds: list[int],
    startup_env: dict[str, str],
    children: set[int],
) -> None:
    if len(fds) != FDS_PER_REQUEST:
        for fd in fds:
            os.close(fd)
        problem = f"expected {FDS_PER_REQUEST} descriptors, got {len(fds)}"
        send(sock, {"id": request.get("id"), "error": problem})
        return
    try:
        pid = os.fork()
    except OSError as exc:
        send(sock, {"id": request.get("id"), "error": f"fork: {exc}"})
        pid = -1
    if pid == 0:
        _child(request, fds, startup_env)
    for fd in fds:
        os.close(fd)
    if pid > 0:
        children.add(pid)
        send(sock, {"id": request.get("id"), "pid": pid})


def _reap(sock: socket.socket, children: set[int]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        children.discard(pid)
        send(sock, {"exited": pid, "status": status})


def main(argv: list[str]) -> int:
    # before any import: what the interpreter put in its empty environment itself
    startup_env = dict(os.environ)
    sock = socket.socket(fileno=int(argv[0]))
    warm_up()
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the runner is gone
        serve(sock, startup_env)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
