"""`-j N`: up to N package tests at once inside this one pytest process.

The wrappers are the work.  Everything of pytest's stays on this process's
main thread; each test's own work is done in one of N worker processes
(`nixtest.run.workers`), forked once the tests are collected: there a test's
profile and wrapper are made (`runner.prepare`) and the test runs
(`runner.execute`), and the result comes back.  The pool's threads
(`nixtest.run.pool`) only hand a test to a worker and wait; when a test ends
the item's usual protocol runs (`pytest_runtest_protocol`: setup, call,
teardown and their reports), which only reports what was done.  So every
plugin sees the same hooks as in a serial run, one item after the other,
each as its test ends: `-x`, `--maxfail`, `-k`, `--lf`, the terminal,
junitxml.  Where forking is not safe (another thread already runs), the
pool's threads run the tests themselves, prepared on the main thread.

Under pytest-xdist (`-n`, `--dist`, `--tx`) its own loop runs instead; each
worker then starts ahead the wrappers of the tests it was handed, on the same
pool (`nixtest.xdist_worker`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from nixtest.definitions import Definition, TestDef
from nixtest.items import CONTEXT_KEY, INTERRUPTED_KEY, PackageTest
from nixtest.results import TestResult
from nixtest.run.pool import Done, Pool
from nixtest.run.workers import Workers
from nixtest.runner import Context, Prepared, error_result, execute, prepare
from nixtest.wrappers import wrapper_path


def parse_jobs(value: str, where: str) -> int:
    """`-j`'s value: a number, or `auto` (the number of CPUs this process may use)."""
    value = value.strip()
    if value == "auto":
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if not value.isdigit():
        raise pytest.UsageError(f"{where} takes a number or 'auto', got {value!r}")
    return max(1, int(value))


def worker_jobs(value: str, workerinput: dict[str, Any]) -> int:
    """`-j` in a pytest-xdist worker: a number is each worker's own.

    `auto` shares this machine's CPUs among the workers, so that a run still
    runs about as many tests at once as there are CPUs (DESIGN.md "Parallel
    runs"): with C CPUs and W workers, each runs C // W, the first C % W one
    more, and each at least one.
    """
    if value.strip() != "auto":
        return parse_jobs(value, "--nixtest-jobs")
    cpus = parse_jobs("auto", "--nixtest-jobs")
    count = max(1, int(workerinput.get("workercount", 1)))
    name = str(workerinput.get("workerid", ""))
    # gw0, gw1, ...: a worker that replaces a crashed one has a new number
    place = int(name[2:]) % count if name[2:].isdigit() else 0
    share, left = divmod(cpus, count)
    return max(1, share + (1 if place < left else 0))


class _Job:
    """A running test's process group, to kill it from the main thread (Ctrl-C, `-x`)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pgid: int | None = None
        self.cancelled = False

    def started(self, pgid: int) -> None:
        with self.lock:
            self.pgid = pgid
            if self.cancelled:  # cancelled while it was being started
                self._kill()

    def cancel(self) -> None:
        with self.lock:
            self.cancelled = True
            if self.pgid is not None:
                self._kill()

    def _kill(self) -> None:
        assert self.pgid is not None
        # SIGTERM: the supervisor above the test (nixtest.child.reaper) ends the whole
        # test, also what it detached from the group, SIGKILL after its grace; the
        # job's thread then sees the wrapper end (execution.run_supervised)
        with contextlib.suppress(ProcessLookupError, PermissionError):  # it has ended
            os.killpg(self.pgid, signal.SIGTERM)


def submit(pool: Pool[Any, TestResult], key: Any, prepared: Prepared, context: Context) -> None:
    """Starts a prepared test on a pool thread; Ctrl-C or `-x` (`Pool.cancel`) kills its process group."""
    context.scratch  # noqa: B018 - made here, not on the pool's threads
    job = _Job()
    pool.submit(key, lambda: execute(prepared, context, on_start=job.started), job.cancel)


def result_of(done: Done[Any, TestResult], definition: Definition) -> TestResult:
    """A finished job's test result; a bug of ours while running it is still this test's result."""
    if done.error is not None:
        if not isinstance(done.error, Exception):
            raise done.error
        exc = done.error
        return error_result(definition, f"internal error while running: {type(exc).__name__}: {exc}")
    assert done.result is not None
    return done.result


class _Boundary:
    """Stands for "the item reported next" when it is not known yet.

    pytest tears down, after an item, the collectors that the next item does
    not share (`nextitem.listchain()`).  Which test ends next is known only
    when it ends; what all the tests still to come share is known now, so
    the teardown stops there.
    """

    def __init__(self, chain: list[Any]) -> None:
        self.chain = chain

    def listchain(self) -> list[Any]:
        return list(self.chain)


def _common(a: Sequence[Any], b: Sequence[Any]) -> list[Any]:
    shared = []
    for x, y in zip(a, b):
        if x is not y:
            break
        shared.append(x)
    return shared


class RunLoop:
    """The pytest side of the scheduler (registered by the plugin)."""

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs

    @staticmethod
    def applies(config: pytest.Config) -> bool:
        # pytest-xdist's controller and workers have loops of their own
        return not hasattr(config, "workerinput") and getattr(config.option, "dist", "no") == "no"

    def pytest_report_header(self, config: pytest.Config) -> str | None:
        if hasattr(config, "workerinput"):
            return None
        if not self.applies(config):
            # pytest-xdist's controller: its workers run the tests (nixtest.xdist_worker)
            value = str(config.getoption("nixtest_jobs"))
            count = len(getattr(config.option, "tx", None) or ()) or 1
            shares = sorted(
                {worker_jobs(value, {"workercount": count, "workerid": f"gw{n}"}) for n in range(count)}
            )
            each = " or ".join(str(share) for share in reversed(shares))
            plural = "s" if shares != [1] else ""
            return f"nixtest: up to {each} test{plural} at a time in each pytest-xdist worker"
        return f"nixtest: up to {self.jobs} test{'s' if self.jobs != 1 else ''} at a time, in this process"

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> bool | None:
        config = session.config
        if not self.applies(config):
            return None
        # as pytest's own loop
        if session.testsfailed and not config.option.continue_on_collection_errors:
            raise session.Interrupted(
                f"{session.testsfailed} error{'s' if session.testsfailed != 1 else ''} during collection"
            )
        if config.option.collectonly:
            return True
        _Run(session, self.jobs).run()
        return True


#: what a worker process sends back for a test: ("setup", the error that kept it from
#: running) or ("ran", its result)
Handed = tuple[str, TestResult]


class _Run:
    def __init__(self, session: pytest.Session, jobs: int) -> None:
        self.session = session
        self.items = session.items
        self.context = session.config.stash[CONTEXT_KEY]
        self.pool: Pool[int, Any] = Pool(jobs)
        #: the processes that prepare and run the tests (None: this process does)
        self.workers: Workers[Handed] | None = None
        #: index of the first item not started yet
        self.next_index = 0
        #: started and not reported yet
        self.running: dict[int, PackageTest] = {}
        #: the node id and result of the test whose protocol runs
        self.reporting: tuple[str, TestResult] | None = None

    def _start_workers(self) -> None:
        """Forks the worker processes if this run has package tests and forking is safe."""
        if not any(isinstance(item, PackageTest) for item in self.items) or not Workers.can_fork():
            return
        self.context.scratch  # noqa: B018 - one scratch folder, the parent's, for all
        self.workers = Workers(self.pool.jobs, self._work, self.context.after_fork)

    def _work(self, index: int, on_start: Callable[[int], None]) -> Handed:
        """In a worker process: a test's preparation and its run."""
        item = self.items[index]
        assert isinstance(item, PackageTest)
        planned = prepare(item.definition, self.context)
        if isinstance(planned, TestResult):
            return "setup", planned
        return "ran", execute(planned, self.context, on_start=on_start)

    def run(self) -> None:
        try:
            self._start_workers()
            while self.next_index < len(self.items) or self.running:
                self._start_what_fits()
                if self.running:
                    self._report_one()
        except KeyboardInterrupt as exc:
            self._stopped(str(exc) or "Ctrl-C")
            raise
        finally:
            # Ctrl-C, `-x`, `--maxfail` or an error of ours: nothing of the tests outlives the run
            self.pool.cancel()
            self.pool.close()
            self.running.clear()
            if self.workers is not None:
                self.workers.close()

    def _stopped(self, why: str) -> None:
        """The tests Ctrl-C (SIGTERM, SIGHUP) stopped: in the reports, as errors that say so."""
        stopped = self.session.config.stash.get(INTERRUPTED_KEY, None)
        if stopped is None:
            return
        if self.reporting is not None:
            # (the reports keep the one its protocol recorded, if it got that far)
            stopped.append(self.reporting)
        # those that ended before the interrupt, not reported yet: their own results
        ended: set[int] = set()
        while self.pool.running:
            done = self.pool.next(timeout=0)
            if done is None:
                break
            ended.add(done.key)
            item = self.running.get(done.key)
            if item is not None and done.error is None and done.result is not None:
                stopped.append((item.nodeid, self._take(item, done)))
        for index, item in self.running.items():
            if index in ended:
                continue
            planned = item.planned
            if isinstance(planned, Prepared):
                wrapper = str(planned.wrapper)
            elif self.workers is not None and isinstance(item.definition, TestDef):
                wrapper = str(wrapper_path(self.context.out, item.definition.package, item.definition.name))
            else:
                continue
            result = error_result(
                item.definition,
                f"interrupted ({why}): the test was stopped and its processes killed",
                wrapper=wrapper,
            )
            stopped.append((item.nodeid, result))

    def _start_what_fits(self) -> None:
        while self.next_index < len(self.items) and not self.pool.full:
            index = self.next_index
            item = self.items[index]
            if not isinstance(item, PackageTest):
                # Another plugin's item runs alone, on this thread, in its place in the order.
                if self.running:
                    return
                self.next_index += 1
                self._protocol(item)
                continue
            self.next_index += 1
            self.running[index] = item
            if self.workers is not None:
                self._hand_over(self.workers, index)
                continue
            planned = prepare(item.definition, self.context)
            item.planned = planned
            if isinstance(planned, TestResult):
                # it cannot run: nothing to wait for
                self._finish(index)
                continue
            submit(self.pool, index, planned, self.context)

    def _hand_over(self, workers: Workers[Handed], index: int) -> None:
        """Starts a test in a worker process; Ctrl-C or `-x` (`Pool.cancel`) kills its process group."""
        job = _Job()
        self.pool.submit(index, lambda: workers.run(index, job.started), job.cancel)

    def _take(self, item: PackageTest, done: Done[int, Any]) -> TestResult:
        """A finished job's result, kept on its item for the item's protocol."""
        if self.workers is None or done.error is not None:
            item.finished = result_of(done, item.definition)
            return item.finished
        assert done.result is not None
        kind, result = done.result
        if kind == "setup":
            item.planned = result  # its setup reports the error, as when prepared here
        else:
            item.finished = result
        assert isinstance(result, TestResult)
        return result

    def _report_one(self) -> None:
        done = self.pool.next()
        assert done is not None
        item = self.running[done.key]
        if not self._take(item, done).is_bad:
            # The freed slot is filled before this test's protocol runs, so that the
            # next test's processes run while pytest reports this one.  A failure is
            # reported first: it may stop the run (-x, --maxfail), and then nothing
            # more may start, as in a serial run.
            self._start_what_fits()
        self._finish(done.key)

    def _finish(self, index: int) -> None:
        item = self.running.pop(index)
        result = item.finished if item.finished is not None else item.planned
        # the test ended: if Ctrl-C comes while its protocol runs, its own result is still reported
        self.reporting = (item.nodeid, result) if isinstance(result, TestResult) else None
        self._protocol(item, self._nextitem())
        self.reporting = None

    def _nextitem(self) -> Any:
        """The item reported next if it is sure, else what all the candidates share."""
        candidates: list[pytest.Item] = list(self.running.values())
        if self.next_index < len(self.items):
            # items are collected depth-first: what the first and last of the rest
            # share, all of the rest share
            candidates += [self.items[self.next_index], self.items[-1]]
        if not candidates:
            return None
        if len(candidates) == 1 or (not self.running and self.next_index == len(self.items) - 1):
            return candidates[0]
        if self.pool.jobs == 1:
            # one at a time: the one running, else the next in order
            return next(iter(self.running.values())) if self.running else self.items[self.next_index]
        chain = candidates[0].listchain()
        for other in candidates[1:]:
            chain = _common(chain, other.listchain())
        return _Boundary(chain)

    def _protocol(self, item: pytest.Item, nextitem: Any = None) -> None:
        if nextitem is None and item is not self.items[-1]:
            nextitem = self._nextitem()
        item.config.hook.pytest_runtest_protocol(item=item, nextitem=nextitem)
        if self.session.shouldfail:
            raise self.session.Failed(self.session.shouldfail)
        if self.session.shouldstop:
            raise self.session.Interrupted(self.session.shouldstop)
