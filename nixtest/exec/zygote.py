"""The runner's side of the zygote (nixtest.child.zygote) and the spawner (nixtest.child.spawner).

Start one, ask it for children.

`Zygote.spawn` gives a `ZygoteChild`, which `execution.run_supervised` waits
on as on a `subprocess.Popen`: its pid leads its own process group (so a
timeout kills the group), its output comes on pipes, and its exit status
comes from the zygote, which is its parent.  Safe to use from the
scheduler's threads.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import IO, Any

import nixtest.child.spawner
from nixtest.child.spawner import receive, send
from nixtest.errors import ExecutionError

#: variables that an interpreter reads when it starts: a test that sets one needs
#: an interpreter of its own, started under them (the wrapper's way)
STARTUP_VARIABLES = frozenset({"LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ"})


class ZygoteChild:
    """A test's process forked by the zygote; the parts of `subprocess.Popen` that nixtest uses."""

    def __init__(self, pid: int, stdout: IO[bytes], stderr: IO[bytes]) -> None:
        self.pid = pid
        self.stdout = stdout
        self.stderr = stderr
        self.stdin = None
        self.returncode: int | None = None
        self._ended = threading.Event()

    def _exited(self, status: int) -> None:
        self.returncode = os.waitstatus_to_exitcode(status) if status >= 0 else status
        self._ended.set()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._ended.wait(timeout):
            raise subprocess.TimeoutExpired(f"test process {self.pid}", timeout or 0.0)
        assert self.returncode is not None
        return self.returncode

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)


class SerialChild(ZygoteChild):
    """The command a spawner started (nixtest.child.spawner), which supervises it.

    Its end is read from the spawner's socket by the one thread that uses the
    spawner, when it polls or waits: no reader thread, no hand-over between
    threads (each a wait for the GIL in the busy pytest process).
    """

    def __init__(self, pid: int, stdout: IO[bytes], stderr: IO[bytes], server: Zygote) -> None:
        super().__init__(pid, stdout, stderr)
        self._server = server

    def _collect(self, timeout: float | None) -> None:
        """Takes the spawner's word on how the command ended, if it comes within `timeout`."""
        server = self._server
        if not server.poller.poll(None if timeout is None else max(0, int(timeout * 1000))):
            return
        try:
            message, fds = receive(server.sock)
        except OSError:
            message, fds = None, []
        for fd in fds:
            os.close(fd)
        if message is None:
            # the supervisor is gone, killed outright: the command leads its own group,
            # with nothing above it any more to end it
            server.alive = False
            with contextlib.suppress(OSError):
                os.killpg(self.pid, signal.SIGKILL)
            self._exited(-signal.SIGKILL)
        elif int(message.get("exited", -1)) == self.pid:
            self._exited(int(message["status"]))

    def poll(self) -> int | None:
        if self.returncode is None:
            self._collect(0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        end = None if timeout is None else time.monotonic() + timeout
        while self.returncode is None:
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(f"test process {self.pid}", timeout or 0.0)
            self._collect(left)
        return self.returncode


class Zygote:
    """A warm server of test processes: the zygote (Python-driven tests), or with `light` the spawner.

    The spawner (`run:` tests) is an interpreter without the site module that
    imported only the standard library and the supervisor, and is itself the
    supervisor of one test after the other (nixtest.child.spawner): start one
    per thread, from that thread (it dies with it), and use it from there.
    The child it gives is then the test's command, leading its own session.
    """

    def __init__(self, python: str = sys.executable, *, light: bool = False) -> None:
        # the spawner is a file, not -m: without site (-S) the package is found from its place
        server = ["-S", nixtest.child.spawner.__file__] if light else ["-m", "nixtest.child.zygote"]
        self.light = light
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.proc = subprocess.Popen(
                [python, "-I", *server, str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                # an empty environment, as the wrapper's `env -i` gives the driver
                env={},
                # its own session: a Ctrl-C on the terminal is the runner's to handle
                start_new_session=True,
            )
        finally:
            theirs.close()
        self.sock = ours
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._replies: dict[int, tuple[threading.Event, list[dict[str, Any]]]] = {}
        self._children: dict[int, ZygoteChild] = {}
        self._early: dict[int, int] = {}  # exits that came before the reply with the pid
        self.alive = True
        self.poller = select.poll()
        self.poller.register(self.sock, select.POLLIN)
        self._reader: threading.Thread | None = None
        if not light:  # a spawner is read by the thread that uses it (SerialChild)
            self._reader = threading.Thread(target=self._read, name="nixtest-zygote", daemon=True)
            self._reader.start()

    def _read(self) -> None:
        try:
            while True:
                message, fds = receive(self.sock)
                for fd in fds:
                    os.close(fd)
                if message is None:
                    break
                self._dispatch(message)
        except OSError:
            pass
        with self._lock:
            self.alive = False
            waiting = list(self._replies.values())
            children = list(self._children.values())
            self._children.clear()
        for event, box in waiting:
            box.append({"error": "the zygote ended"})
            event.set()
        for child in children:  # their parent is gone: nothing will say how they ended
            child._exited(-signal.SIGKILL)

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "exited" in message:
            pid, status = int(message["exited"]), int(message["status"])
            with self._lock:
                child = self._children.pop(pid, None)
                if child is None:
                    self._early[pid] = status
            if child is not None:
                child._exited(status)
            return
        with self._lock:
            waiter = self._replies.pop(int(message.get("id", -1)), None)
        if waiter is not None:
            waiter[1].append(message)
            waiter[0].set()

    def spawn(self, request: dict[str, Any]) -> ZygoteChild:
        """A child that becomes the test's supervisor and starts the test, as `request` says.

        Its keys: `cwd`, `env`, `name`, `result`, `read_only`, and `args`
        (`nixtest.driver.main`'s: the zygote, nixtest.child.zygote.become_test) or
        `exec` (a `run:` test's command: a spawner, nixtest.child.spawner).
        """
        if self.light:
            return self._spawn_serial(request)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        request_id = next(self._ids)
        event = threading.Event()
        box: list[dict[str, Any]] = []
        try:
            with self._lock:
                if not self.alive:
                    raise ExecutionError("the zygote has ended")
                self._replies[request_id] = (event, box)
            send(self.sock, {**request, "id": request_id}, [out_w, err_w])
        except BaseException:
            for fd in (out_r, err_r):
                os.close(fd)
            raise
        finally:
            os.close(out_w)
            os.close(err_w)
        event.wait()
        reply = box[0]
        if "pid" not in reply:
            os.close(out_r)
            os.close(err_r)
            raise ExecutionError(f"the zygote could not start the test: {reply.get('error')}")
        child = ZygoteChild(int(reply["pid"]), os.fdopen(out_r, "rb", 0), os.fdopen(err_r, "rb", 0))
        with self._lock:
            status = self._early.pop(child.pid, None)
            if status is None:
                self._children[child.pid] = child
        if status is not None:
            child._exited(status)
        return child

    def _spawn_serial(self, request: dict[str, Any]) -> SerialChild:
        """`spawn` from a spawner: its reply read here, by the thread that uses it."""
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        request_id = next(self._ids)
        reply: dict[str, Any] | None = None
        try:
            if not self.alive:
                raise ExecutionError("the spawner has ended")
            try:
                send(self.sock, {**request, "id": request_id}, [out_w, err_w])
                os.close(out_w)
                os.close(err_w)
                out_w = err_w = -1
                while reply is None or reply.get("id") != request_id:  # an earlier test's late word
                    reply, fds = receive(self.sock)
                    for fd in fds:
                        os.close(fd)
                    if reply is None:
                        raise ConnectionResetError("the end of the socket")
            except OSError as exc:
                self.alive = False
                raise ExecutionError(f"the spawner has ended ({exc})") from None
        except BaseException:
            for fd in (out_r, err_r, out_w, err_w):
                if fd >= 0:
                    os.close(fd)
            raise
        if "pid" not in reply:
            os.close(out_r)
            os.close(err_r)
            raise ExecutionError(f"the zygote could not start the test: {reply.get('error')}")
        return SerialChild(int(reply["pid"]), os.fdopen(out_r, "rb", 0), os.fdopen(err_r, "rb", 0), self)

    def close(self) -> None:
        """Ends the zygote (and so any child still running)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=10)
