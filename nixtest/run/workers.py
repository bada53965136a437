"""Worker processes for `-j`: each prepares and runs the tests it is handed, one at a time.

The pytest process's one thread of Python is the bottleneck of a large run:
pytest's protocol, the history and the reports already take it most of the
time.  So each test's preparation (profile check, wrapper, input key) and the
running of it (its working folder, the spawner's messages, its output and
log, its result) happen in a worker process, forked from the pytest process
once its tests are collected: a worker has every definition and the run's
context already, and nothing to import.  The pytest process sends a test's
place in the collection and gets back its result; its pool's threads only wait
on the workers' sockets.

A worker is forked while the pytest process has no other thread (a lock
another thread held at the fork would stay held in the child forever); the
scheduler falls back to running the tests on its threads otherwise.  A worker
ignores Ctrl-C, SIGTERM and SIGHUP: the pytest process decides, and kills a
stopped test's process group as it does on its own threads.  A worker dies
with the pytest process (PR_SET_PDEATHSIG) and ends with `os._exit`: nothing
of the parent's (its atexit handlers, its stdio buffers, its SQLite
connection) runs twice.

Nothing here knows pytest: the unit tests drive it with plain functions.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import pickle
import queue
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

R = TypeVar("R")

#: the work a worker does for one key: (key, on_start) -> result
Work = Callable[[int, Callable[[int], None]], R]

_HEADER = struct.Struct("!I")
_PR_SET_PDEATHSIG = 1


class WorkerDied(RuntimeError):
    """A worker process ended while it had a test: the test's result is lost."""


def _send(sock: socket.socket, message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(_HEADER.pack(len(data)) + data)


def _receive_exactly(sock: socket.socket, size: int) -> bytes | None:
    chunks = []
    while size:
        chunk = sock.recv(min(size, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _receive(sock: socket.socket) -> Any:
    """The next message; EOFError when the other side has closed its end."""
    header = _receive_exactly(sock, _HEADER.size)
    if header is None:
        raise EOFError
    (size,) = _HEADER.unpack(header)
    data = _receive_exactly(sock, size)
    if data is None:
        raise EOFError
    return pickle.loads(data)


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the socket's EOF still ends the worker at the parent's exit


class _Worker:
    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid = pid
        self.sock = sock
        self.alive = True


class Workers(Generic[R]):
    """`count` forked worker processes running `work`; `run` hands one a key and waits."""

    def __init__(self, count: int, work: Work[R], after_fork: Callable[[], None] | None = None) -> None:
        self._work = work
        self._after_fork = after_fork
        self._free: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self._workers: list[_Worker] = []
        for _ in range(count):
            self._fork()

    @staticmethod
    def can_fork() -> bool:
        """Whether forking is safe now: no other thread runs in this process."""
        return hasattr(os, "fork") and threading.active_count() == 1

    def _fork(self) -> None:
        parent_end, child_end = socket.socketpair()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child; its work is seen in its results
            status = 1
            try:
                parent_end.close()
                for other in self._workers:
                    other.sock.close()
                status = self._serve(child_end)
            finally:
                os._exit(status)
        child_end.close()
        worker = _Worker(pid, parent_end)
        self._workers.append(worker)
        self._free.put(worker)

    def _serve(self, sock: socket.socket) -> int:  # pragma: no cover - runs in the child
        _die_with_parent()
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            # a handler of our own, not SIG_IGN, which the programs it starts would inherit
            signal.signal(signum, lambda *_: None)
        if self._after_fork is not None:
            self._after_fork()
        while True:
            try:
                key = _receive(sock)
            except EOFError:
                return 0
            try:
                result = self._work(key, lambda pgid: _send(sock, ("started", pgid)))
            except BaseException as exc:  # noqa: BLE001 - the parent decides what it means
                try:
                    _send(sock, ("error", exc))
                except Exception:  # noqa: BLE001 - one that cannot be pickled: its words
                    _send(sock, ("error", RuntimeError(f"{type(exc).__name__}: {exc}")))
            else:
                _send(sock, ("done", result))

    def run(self, key: int, on_start: Callable[[int], None] | None = None) -> R:
        """Runs `key` in a free worker and waits for its result (any thread; at most `count` at once)."""
        worker = self._take()
        try:
            _send(worker.sock, key)
            while True:
                kind, value = _receive(worker.sock)
                if kind != "started":
                    break
                if on_start is not None:
                    on_start(value)
        except (EOFError, OSError):
            worker.alive = False
            raise WorkerDied(self._death(worker)) from None
        finally:
            if worker.alive:
                self._free.put(worker)
        if kind == "error":
            raise value  # what the work raised there, raised here
        result: R = value
        return result

    def _take(self) -> _Worker:
        """A free worker, waiting for one; WorkerDied when none is left."""
        while True:
            try:
                return self._free.get(timeout=0.5)
            except queue.Empty:
                if not any(worker.alive for worker in self._workers):
                    raise WorkerDied("no worker process is left to run the test") from None

    @staticmethod
    def _death(worker: _Worker) -> str:
        pid, status = 0, 0
        # its socket closed as it exited: the exit status follows within moments
        deadline = time.monotonic() + 2
        while not pid and time.monotonic() < deadline:
            try:
                pid, status = os.waitpid(worker.pid, os.WNOHANG)
            except ChildProcessError:
                break
            if not pid:
                time.sleep(0.01)
        how = ""
        if pid and os.WIFSIGNALED(status):
            how = f" (killed by {signal.Signals(os.WTERMSIG(status)).name})"
        elif pid and os.WIFEXITED(status):
            how = f" (exit status {os.WEXITSTATUS(status)})"
        return f"worker process {worker.pid} ended while running the test{how}"

    def close(self, wait: float = 30.0) -> None:
        """Ends the workers (each once its test is done), killing those still there after `wait` seconds."""
        for worker in self._workers:
            worker.sock.close()
        deadline = time.monotonic() + wait
        left = {worker.pid for worker in self._workers}
        while left:
            for pid in list(left):
                try:
                    done, _ = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    done = pid
                if done:
                    left.discard(pid)
            if not left:
                break
            if time.monotonic() >= deadline:
                for pid in left:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                deadline = math.inf  # and reaped at the next round
            time.sleep(0.005)
        self._workers.clear()
