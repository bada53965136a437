"""A pool that runs up to N jobs at once on threads and hands their results back on one queue.

The jobs are the tests' wrappers: a thread only starts its job and waits on
it.  Whoever owns the pool (the main thread, where pytest's hooks run) takes
the results in the order the jobs end, with `next`.  A job that raises gives
its exception as its result, so one broken job never stops the others.

Nothing here knows pytest or nixtest's tests: the unit tests drive it with
fake jobs, as pytest-xdist tests its scheduler with fake nodes.
"""

from __future__ import annotations

import contextlib
import queue
import threading
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
    def __init__(self, jobs: int) -> None:
        if jobs < 1:
            raise ValueError(f"a pool runs at least one job at a time, not {jobs}")
        self.jobs = jobs
        self._done: queue.SimpleQueue[Done[K, R]] = queue.SimpleQueue()
        self._running: dict[K, tuple[threading.Thread, Callable[[], None] | None]] = {}

    @property
    def running(self) -> int:
        """Jobs started whose result `next` has not handed out yet."""
        return len(self._running)

    @property
    def full(self) -> bool:
        return len(self._running) >= self.jobs

    def submit(self, key: K, work: Callable[[], R], cancel: Callable[[], None] | None = None) -> None:
        """Starts `work` on a thread of its own; `cancel` (any thread) makes it end soon."""
        if self.full:
            raise RuntimeError(f"the pool already runs {self.jobs} jobs")
        if key in self._running:
            raise KeyError(f"{key!r} is already running")

        def job() -> None:
            try:
                done: Done[K, R] = Done(key, result=work())
            except BaseException as exc:  # noqa: BLE001 - handed to the owner, which decides
                done = Done(key, error=exc)
            self._done.put(done)

        # daemon: a job stuck in the kernel must not keep the process alive after its end
        thread = threading.Thread(target=job, name=f"nixtest-job-{key}", daemon=True)
        self._running[key] = (thread, cancel)
        thread.start()

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
            thread, _ = self._running.pop(done.key)
            thread.join()
            return done

    def cancel(self, wait: float = 30.0) -> list[K]:
        """Cancels every running job and waits (up to `wait` seconds) for their threads.

        Their results are dropped; returns the keys of the jobs that were running.
        """
        keys = list(self._running)
        for _, cancel in self._running.values():
            if cancel is not None:
                # one that fails (its job ended meanwhile) must not keep the others running
                with contextlib.suppress(Exception):
                    cancel()
        for thread, _ in self._running.values():
            thread.join(wait)
        self._running.clear()
        while True:
            try:
                self._done.get_nowait()
            except queue.Empty:
                break
        return keys
