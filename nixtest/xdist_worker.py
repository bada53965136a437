"""`-j N` in a pytest-xdist worker (`-n`, `--dist`, `--tx`): up to N package tests at once.

pytest-xdist's worker loop (`xdist.remote.WorkerInteractor`) stays as it is:
it takes the tests its controller hands it from its queue and runs their
protocols one after the other, in that order, each with the one after it as
`nextitem`; the controller reads the reports in that order (a crashed
worker's test is the first it has not reported; `-x` and `--maxfail` count
across workers).  What changes is what each protocol waits on.  Before the
test at the head runs its protocol, the wrappers of the tests after it (the
next one, then those waiting in the worker's queue) are started on the pool
(`nixtest.run.pool`), up to N at once, as nixtest's own loop does
(`nixtest.loop`); the head's protocol then waits for its own test only and
reports it.

The worker's queue is pytest-xdist's own (`TestQueue`, read under its lock,
never changed).  Where it is missing (another version), or where the
controller may take tests back out of it (`--dist worksteal` sends `steal`),
only the next test, a hook argument, is started ahead: two at once.  When
the worker stops (`-x`, `--maxfail`, Ctrl-C, the end), the tests it started
ahead and did not report are killed.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from nixtest.items import CONTEXT_KEY, PackageTest
from nixtest.loop import result_of, submit
from nixtest.results import TestResult
from nixtest.run.pool import Pool
from nixtest.runner import prepare

#: `--dist` modes whose controller never takes back what it handed a worker
#: (pytest-xdist 3.x: only `worksteal` sends `steal`)
NEVER_TAKEN_BACK = frozenset({"load", "loadscope", "loadfile", "loadgroup", "each"})

#: seconds between two looks at the worker's queue while a slot is free: the
#: controller may hand more tests while the head still runs
LOOK_AGAIN = 0.2


def worker_queue(config: pytest.Config) -> Any:
    """pytest-xdist's queue of the tests this worker was handed and has not started; None if unknown."""
    # the worker's own options say "no" (xdist.remote.setup_config): its command line's
    # --dist is the controller's; "no" there, in a worker, is -n's (or -d's) "load"
    dist = getattr(getattr(config, "known_args_namespace", None), "dist", None)
    if dist == "no":
        dist = "load"
    if dist not in NEVER_TAKEN_BACK:
        return None
    for plugin in config.pluginmanager.get_plugins():
        if type(plugin).__name__ != "WorkerInteractor":
            continue
        queue: Any = getattr(plugin, "torun", None)
        if not callable(getattr(queue, "lock", None)):
            return None
        with queue.lock() as waiting:
            # TestQueue, as in pytest-xdist 3.8.0 (written against it): a deque of indices into
            # session.items.  Older ones had a queue.Queue (no lock()): only the next test starts ahead
            return queue if isinstance(waiting, collections.deque) else None
    return None


class WorkerLoop:
    """The pytest side of the scheduler in a pytest-xdist worker (registered by the plugin)."""

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self.session: pytest.Session | None = None
        self.pool: Pool[pytest.Item, TestResult] | None = None
        self.queue: Any = None
        #: tests prepared ahead, not reported yet
        self.planned: set[pytest.Item] = set()
        #: of those, the ones whose wrapper runs on the pool
        self.running: set[pytest.Item] = set()

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Any:
        if self.jobs > 1 and not session.config.option.collectonly:
            self.session = session
            self.pool = Pool(self.jobs)
            self.queue = worker_queue(session.config)
        try:
            return (yield)
        finally:
            # -x, --maxfail, Ctrl-C or the end: nothing started ahead outlives the worker's loop
            if self.pool is not None:
                self.pool.cancel()
                self.pool.close()
                self.pool = None
            self.planned.clear()
            self.running.clear()

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> Any:
        # first of the wrappers: the wait is before pytest-timeout's or faulthandler's clock
        if self.pool is not None and isinstance(item, PackageTest):
            self._wait_for(item, nextitem)
        return (yield)

    def _wait_for(self, head: PackageTest, nextitem: pytest.Item | None) -> None:
        """Starts what fits, then waits until the head's test has ended; its protocol reports it."""
        pool = self.pool
        assert pool is not None
        self._start(head, nextitem)
        while head in self.running:
            done = pool.next(timeout=None if pool.full else LOOK_AGAIN)
            if done is not None:
                self.running.discard(done.key)
                ended = done.key
                assert isinstance(ended, PackageTest)
                ended.finished = result_of(done, ended.definition)
            self._start(head, nextitem)
        self.planned.discard(head)

    def _start(self, head: PackageTest, nextitem: pytest.Item | None) -> None:
        pool = self.pool
        assert pool is not None
        context = head.config.stash[CONTEXT_KEY]
        for item in self._upcoming(head, nextitem):
            if pool.full:
                return
            if item in self.planned:
                continue
            if not isinstance(item, PackageTest):
                # another plugin's item runs in its place in the order, with nothing ahead of it
                return
            self.planned.add(item)
            try:
                planned = prepare(item.definition, context)
            except Exception:  # noqa: BLE001 - its own setup prepares it again and reports why
                continue
            item.planned = planned
            if isinstance(planned, TestResult):
                continue  # it cannot run: its setup reports why
            submit(pool, item, planned, context)
            self.running.add(item)

    def _upcoming(self, head: PackageTest, nextitem: pytest.Item | None) -> Iterator[pytest.Item]:
        """The head, then the tests this worker runs after it, in the order it runs them."""
        yield head
        if nextitem is None:
            return
        yield nextitem
        if self.queue is None:
            return
        assert self.session is not None
        # those prepared are at the front of the queue: look just past them
        with self.queue.lock() as waiting:
            indices = list(itertools.islice(waiting, len(self.planned) + self.jobs))
        items = self.session.items
        for index in indices:
            if not isinstance(index, int):
                return  # the shutdown mark: nothing comes after it
            yield items[index]
