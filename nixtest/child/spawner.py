"""The spawner: a small warm process that supervises `run:` tests one after the other.

A `run:` test's command needs no interpreter, only its supervisor above it
(nixtest.child.reaper).  Forking that supervisor from the zygote, which has
pytest and plumbum imported (about 34 MB), cost two copies of the zygote a
test (the supervisor, then the command below it).  The spawner is started as
`python -I -S .../nixtest/child/spawner.py FD` and imports only the standard
library and the reaper (about 10 MB).

One spawner per runner thread is itself the supervisor of that thread's
tests, one after the other (`supervise_serially`): a process per test is
only the command, started with `subprocess` (from C, a vfork: no Python
running in a copy of anything), with the signals the test must find at
their default action and none blocked, in the test's folder, in a session
of its own.  The spawner is what the wrapper's supervisor is: stdin from
/dev/null for the command, its stdout and stderr on the runner's pipes,
umask 022, the death signal of its parent, the subreaper of all the test
starts; it kills and reports what the test left running.

The zygote (nixtest.child.zygote) serves its requests with this module's
other loop, `serve`: it forks a child per request that becomes the test's
supervisor (`become_supervisor`) and starts the test below it.

Profiles are made read-only to tests run as root in a private mount
namespace, as the wrapper's supervisor does for its test; here the server
enters one namespace of its own once (`Protector`) and makes each profiles
folder read-only in it the first time a request names one, so that no test
pays for a namespace of its own (unshare, mounts, and the namespace's
teardown when the test ends).  Its tests are in it.

The runner talks to it over one SOCK_SEQPACKET socket: a JSON request with
the test's two output pipes (SCM_RIGHTS), the started process's pid in
reply, and its exit status when it ends.  When the runner goes away (the
socket's end, or the death signal), the server ends its tests and exits.
Single-threaded; standard library and the reaper only.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and not __package__:  # pragma: no cover - started as a file, without site
    # `-S` leaves site-packages (and an editable install's path) out: the package is
    # the folder three levels up from this file
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import array
import contextlib
import gc
import json
import selectors
import signal
import socket
import subprocess  # noqa: F401  each supervisor starts its command with it (reaper.spawn_light)
from collections.abc import Callable
from typing import Any, NoReturn

from nixtest.child import reaper

#: biggest message either side sends (a test's spec and environment)
MESSAGE_LIMIT = 4 * 1024 * 1024
#: the file descriptors a request carries: the child's stdout and stderr
FDS_PER_REQUEST = 2

#: what a server does in each forked child (the request, its two pipes, the server's pid):
#: become the request's test, and never return
ChildBody = Callable[[dict[str, Any], list[int], int], NoReturn]
#: blocked from the fork until the supervisor handles them
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


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


class Protector:
    """Profiles read-only to the tests run as root: one private mount namespace for the server.

    The folder a profile is in (`STATE/profiles`) is bind-mounted read-only
    once; profiles built or rebuilt in it later by the runner (in its own
    namespace) show through, read-only too.  A profile that is a symlink (a
    Nix set's, into the store) is protected where it leads.  Mounts made on
    the host later still reach the namespace (it is a slave of the host's).
    As the wrapper's supervisor does, it gives up quietly where it cannot
    (not root, no namespaces): the profiles' modes and their manifest check
    on the next run remain.
    """

    def __init__(self) -> None:
        self.entered: bool | None = None  # None: not tried yet
        self.done: set[str] = set()

    def folders(self, paths: list[str]) -> list[str]:
        """What to bind read-only for these profiles: their folder, or where a symlink leads."""
        found = []
        for path in paths:
            if os.path.islink(path):
                found.append(os.path.realpath(path))
            elif os.path.isdir(path):
                found.append(os.path.dirname(os.path.abspath(path)))
        return found

    def protect(self, paths: list[str]) -> None:
        if not paths or os.geteuid() != 0:
            return
        todo = [f for f in self.folders(paths) if f not in self.done and os.path.isdir(f)]
        if not todo:
            return
        if self.entered is None:
            self.entered = reaper.private_namespace()
        if not self.entered:
            return
        for folder in todo:
            if reaper.bind_read_only(folder):
                self.done.add(folder)


def become_supervisor(request: dict[str, Any], stdout: int, stderr: int, server: int) -> None:
    """In the forked child: the supervisor the wrapper would have started, in the test's folder."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(stdout, 1)
    os.dup2(stderr, 2)
    # the server's socket, selector and pipes are none of the test's business
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    os.umask(0o022)
    os.chdir(request["cwd"])
    # This process stays above the test as its supervisor, as on the wrapper's
    # path (nixtest.child.reaper): the subreaper of all the test starts, ending
    # it all when the test ends, and with the server (so with nixtest).
    reaper.die_with_parent()
    if os.getppid() != server:
        os._exit(128 + signal.SIGTERM)  # the server died before the death signal was set
    reaper.become_reaper()


def serve(sock: socket.socket, child: ChildBody) -> None:
    """Forks a child per request (which runs `child`: the zygote's) until the runner closes its end."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    signal.set_wakeup_fd(wake_w)
    # Ctrl-C on the runner's terminal does not reach this session; the runner ends us
    children: set[int] = set()
    protector = Protector()
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
                    _start(sock, request, fds, child, children, protector)
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
    child: ChildBody,
    children: set[int],
    protector: Protector,
) -> None:
    if not _well_formed(sock, request, fds, protector):
        return
    server = os.getpid()
    # The child starts with the stop signals blocked: one sent as soon as its pid is
    # known waits for the supervisor to take it, rather than killing it before it can
    # end its test (it unblocks them once it handles them: reaper.prepare_light_spawn,
    # reaper.supervise).
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        pid = os.fork()
    except OSError as exc:
        send(sock, {"id": request.get("id"), "error": f"fork: {exc}"})
        pid = -1
    if pid == 0:
        child(request, fds, server)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    for fd in fds:
        os.close(fd)
    if pid > 0:
        children.add(pid)
        send(sock, {"id": request.get("id"), "pid": pid})


def _well_formed(sock: socket.socket, request: dict[str, Any], fds: list[int], protector: Protector) -> bool:
    """Whether the request carries the test's two pipes (else says so); its profiles made read-only."""
    if len(fds) != FDS_PER_REQUEST:
        for fd in fds:
            os.close(fd)
        problem = f"expected {FDS_PER_REQUEST} descriptors, got {len(fds)}"
        send(sock, {"id": request.get("id"), "error": problem})
        return False
    protector.protect([str(p) for p in request.get("read_only", [])])
    return True


def _reap(sock: socket.socket, children: set[int]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if pid not in children:
            continue
        children.discard(pid)
        # A supervisor killed outright (SIGKILL) could not end its test: what is left of
        # its group goes now (the command's own death signal, on the wrapper's path).
        # After a supervisor's normal end its group is empty and this finds nothing.
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
        send(sock, {"exited": pid, "status": status})


def supervise_serially(sock: socket.socket) -> None:
    """One test after the other, this process the supervisor of each: no process but the command.

    Started by one of the runner's threads, which runs one test at a time.
    This process is what the forked supervisor is (`become_supervisor`), once
    for all its tests: the subreaper of everything they start, dying with the
    runner's thread that started it (its death signal), umask 022.  For each
    request, the command starts in a session of its own (its group is what the
    runner signals on a timeout), in the test's folder, with exactly its
    environment and its output on the test's pipes, where this process's own
    stdout and stderr go too until the test is over; when it ends, everything
    left below this process (the test's, as tests come one at a time) is
    killed and reported, and only then are the pipes let go and the exit code
    sent.  Stopped itself (SIGTERM, SIGHUP: the runner is gone), it ends its
    test and exits.
    """
    reaper.die_with_parent()
    if os.getppid() == 1:
        return  # the runner died before the death signal was set
    reaper.become_reaper()
    os.umask(0o022)
    os.chdir("/")  # holds no test's folder
    devnull = os.open(os.devnull, os.O_RDWR)
    protector = Protector()
    while True:
        # between tests, a stop signal just ends this process (also one that came as the
        # last test was cleaned up, pending until now)
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        request, fds = receive(sock)
        if request is None:
            return
        if not _well_formed(sock, request, fds, protector):
            continue
        os.dup2(fds[0], 1)
        os.dup2(fds[1], 2)
        for fd in fds:
            os.close(fd)
        reaper.prepare_light_spawn()
        reaper._EARLY.clear()
        code = _one_test(sock, request, devnull)
        sys.stdout.flush()
        sys.stderr.flush()
        # the test's pipes are let go only now: the runner reads them to their end
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        if code is None:
            continue
        # as a wait status, as the forking servers say it
        pid, passed = code
        send(sock, {"exited": pid, "status": passed << 8 if passed >= 0 else -passed})
        if reaper.STOPPED:
            return  # stopped itself: the runner is gone


def _one_test(sock: socket.socket, request: dict[str, Any], devnull: int) -> tuple[int, int] | None:
    """Starts the request's command and supervises it: (its pid, the exit code to pass on)."""
    argv = [str(a) for a in request["exec"]]
    try:
        pid = reaper.spawn_light(argv, request["env"], cwd=str(request["cwd"]), stdin=devnull, session=True)
    except OSError as exc:
        problem = f"nixtest: cannot run {argv[0]}: {exc.strerror}"
        send(sock, {"id": request.get("id"), "error": problem})
        return None
    send(sock, {"id": request.get("id"), "pid": pid})
    name = str(request.get("name", ""))
    # a stop signal during the cleanup stays pending: it ends this process before the next test
    code = reaper.supervise(pid, name=name, result=request.get("result"), keep_blocked=True)
    reaper.forget(pid)
    return pid, code


def main(argv: list[str]) -> int:
    sock = socket.socket(fileno=int(argv[-1]))
    # nothing made so far is collected in a supervisor (a collection there would write to,
    # and so copy, every page of the server's objects)
    gc.collect()
    gc.freeze()
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the runner is gone
        supervise_serially(sock)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
