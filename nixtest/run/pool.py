"""A pool that runs up to N jobs at once on threads and hands their results back on one queue.

The jobs are the tests' wrappers: a worker thread only starts a job and waits
on it.  Whoever owns the pool (the main thread, where pytest's hooks run) takes
the results in the order the jobs end, with `next`.  A job that raises gives
its exception as its result, so one broken job never stops the others.

Nothing here knows pytest or nixtest's tests: the unit tests drive it with
fake jobs, as pytest-xdist tests its scheduler with fake nodes.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
R = TypeVar("R")


@dataclass
class Done(Generic[K, R]):
    """A finished job: its key and either its result or the exception it raised."""

    key: K
    result: R | None = None
    error: BaseException | None = None


class Pool(Generic[K, R]):
    """Up to `jobs` worker threads, started as they are first needed and kept for later jobs.

    A thread per job would cost the owner a wait for each new thread to be
    scheduled (Thread.start waits for it): milliseconds a test on a loaded machine.
    """

    def __init__(self, jobs: int) -> None:
        if jobs < 1:
            raise ValueError(f"a pool runs at least one job at a time, not {jobs}")
        self.jobs = jobs
        self._todo: queue.SimpleQueue[tuple[K, Callable[[], R]] | None] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[Done[K, R]] = queue.SimpleQueue()
        self._running: dict[K, Callable[[], None] | None] = {}
        self._threads: list[threading.Thread] = []

    @property
    def running(self) -> int:
        """Jobs started whose result `next` has not handed out yet."""
        return len(self._running)

    @property
    def full(self) -> bool:
        return len(self._running) >= self.jobs

    def submit(self, key: K, work: Callable[[], R], cancel: Callable[[], None] | None = None) -> None:
        """Runs `work` on a worker thread; `cancel` (any thread) makes it end soon."""
        if self.full:
            raise RuntimeError(f"the pool already runs {self.jobs} jobs")
        if key in self._running:
            raise KeyError(f"{key!r} is already running")
        self._running[key] = cancel
        self._todo.put((key, work))
        if len(self._threads) < min(self.jobs, len(self._running)):
            # daemon: a job stuck in the kernel must not keep the process alive after its end
            thread = threading.Thread(
                target=self._worker, name=f"nixtest-job-{len(self._threads)}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _worker(self) -> None:
        while True:
            job = self._todo.get()
            if job is None:
                return
            key, work = job
            try:
                done: Done[K, R] = Done(key, result=work())
            except BaseException as exc:  # noqa: BLE001 - handed to the owner, which decides
                done = Done(key, error=exc)
            self._done.put(done)

    def next(self, timeout: float | None = None) -> Done[K, R] | None:
        """The next job to end, waiting for it; None if none ended within `timeout`.

        The wait is cut in short slices so that Ctrl-C reaches the caller at once.
        """
        if not self._running:
            raise RuntimeError("no job is running")
        waited = 0.0
        while True:
            step = 0.2 if timeout is None else min(0.2, timeout - waited)
            try:
                done = self._done.get(timeout=max(step, 0.0))
            except queue.Empty:
                waited += step
                if timeout is not None and waited >= timeout:
                    return None
                continue
            if done.key in self._running:  # else: a job cancelled earlier, ended late
                del self._running[done.key]
                return done

    def cancel(self, wait: float = 30.0) -> list[K]:
        """Cancels every running job and waits (up to `wait` seconds) for them to end.

        Their results are dropped; returns the keys of the jobs that were running.
        """
        keys = list(self._running)
        for cancel in self._running.values():
            if cancel is not None:
                # one that fails (its job ended meanwhile) must not keep the others running
                with contextlib.suppress(Exception):
                    cancel()
        deadline = time.monotonic() + wait
        while self._running and time.monotonic() < deadline:
            try:
                done = self._done.get(timeout=max(0.0, min(0.2, deadline - time.monotonic())))
            except queue.Empty:
                continue
            self._running.pop(done.key, None)
        self._running.clear()
        return keys

    def close(self) -> None:
        """Ends the worker threads once their jobs are done."""
        for _ in self._threads:
            self._todo.put(None)
        self._threads.clear()
