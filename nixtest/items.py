"""The pytest side of a package test: a collector per package folder, an item per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nixtest.definitions import Definition, load_package
from nixtest.results import TestResult
from nixtest.runner import Context, Interrupted, Prepared, execute, format_failure, prepare
from nixtest.sources.autopkgtest import CONTROL, load_suite

RESULT_PROPERTY = "nixtest_result"


class PackageFolder(pytest.Directory):
    """`package_tests/<package>/`: its tests come from `tests.yaml`, never from importing its files."""

    def collect(self) -> Iterator[PackageTest]:
        # the real paths of the folders above package folders, found once a run
        realpaths = self.config.stash.setdefault(REALPATHS_KEY, {})
        for definition in load_package(self.path, realpaths):
            yield PackageTest.from_parent(self, name=definition.name, definition=definition)


class AutopkgtestFolder(pytest.Directory):
    """A Debian source tree (or its `debian/` folder): its tests come from `debian/tests/control`."""

    def collect(self) -> Iterator[PackageTest]:
        for definition in load_suite(self.path):
            yield PackageTest.from_parent(self, name=definition.name, definition=definition)


class PackageTest(pytest.Item):
    def __init__(self, *, definition: Definition, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.definition = definition
        self.prepared: Prepared | None = None
        #: set by the scheduler (`nixtest.loop`), which did the work before the item's
        #: protocol runs: `setup` and `runtest` then only report it
        self.planned: Prepared | TestResult | None = None
        self.finished: TestResult | None = None

    @property
    def context(self) -> Context:
        context: Context = self.config.stash[CONTEXT_KEY]
        return context

    def reportinfo(self) -> tuple[Path, None, str]:
        if isinstance(self.parent, AutopkgtestFolder):
            return self.path / CONTROL, None, self.definition.nodeid
        return self.path / "tests.yaml", None, self.definition.nodeid

    def _record(self, result: TestResult) -> None:
        handoff = self.config.stash.get(HANDOFF_KEY, None)
        if handoff is not None:
            # this process writes the reports: the result object itself, no JSON
            # copy kept in the item and its reports for the rest of the run
            handoff[self.nodeid] = result
        else:
            # a pytest-xdist worker: the result travels to the controller with the report
            self.user_properties.append((RESULT_PROPERTY, result.to_json()))

    def setup(self) -> None:
        if self.planned is None and self.finished is not None:
            return  # prepared and run by a worker process (nixtest.run.workers)
        prepared = self.planned if self.planned is not None else prepare(self.definition, self.context)
        self.planned = None
        if isinstance(prepared, TestResult):
            self._record(prepared)
            if prepared.outcome == "skipped":
                # pytest's summary line shows where skip() was called: the message names the test
                pytest.skip(f"{self.definition.nodeid}: {prepared.message}")
            # pytrace=False: a definition error is one line, not a traceback
            pytest.fail(format_failure(prepared), pytrace=False)
        self.prepared = prepared

    def runtest(self) -> None:
        try:
            if self.finished is not None:
                result = self.finished
            else:
                assert self.prepared is not None
                result = execute(self.prepared, self.context)
        except Interrupted as stop:
            # pytest reports nothing for a test Ctrl-C stopped: the reports still list it
            self.config.stash[INTERRUPTED_KEY].append((self.nodeid, stop.result))
            raise
        self.finished = None
        self._record(result)
        if result.outcome == "skipped":
            pytest.skip(f"{self.definition.nodeid}: {result.message}")
        if result.outcome == "xfailed":
            pytest.xfail(f"{self.definition.nodeid}: {result.message}")
        if result.outcome != "passed":
            pytest.fail(format_failure(result), pytrace=False)


CONTEXT_KEY = pytest.StashKey[Context]()
#: folder -> its real path, for the folders that hold package folders (`definitions.real_path`)
REALPATHS_KEY = pytest.StashKey[dict[str, str]]()
#: in the process that writes the reports: node id -> the result its item just
#: recorded, taken by `ResultCollector` from the report that follows
HANDOFF_KEY = pytest.StashKey[dict[str, TestResult]]()
#: results of tests stopped by Ctrl-C, SIGTERM or SIGHUP
INTERRUPTED_KEY = pytest.StashKey[list[tuple[str, TestResult]]]()
