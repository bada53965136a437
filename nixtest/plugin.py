"""The pytest plugin: options, hooks, registration.  The work lives in the other modules."""

from __future__ import annotations

import argparse
import gc
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from nixtest.definitions import DEFINITIONS_FILE, is_package_folder, load_package, real_path
from nixtest.errors import NixtestError
from nixtest.history.compare import from_file as baseline_file
from nixtest.history.session import FAIL_ON, HistorySession, parse_retries
from nixtest.items import (
    CONTEXT_KEY,
    HANDOFF_KEY,
    INTERRUPTED_KEY,
    REALPATHS_KEY,
    RESULT_PROPERTY,
    AutopkgtestFolder,
    PackageFolder,
    PackageTest,
)
from nixtest.loop import RunLoop, parse_jobs, worker_jobs
from nixtest.results import RunSummary, TestResult
from nixtest.runner import Context
from nixtest.safefs import UntrustedPath, check_folder, lock_folder, make_folders
from nixtest.sources.autopkgtest import is_suite
from nixtest.wrappers import wrapper_path
from nixtest.xdist_worker import WorkerLoop

#: what a run collects and ignores (package folders only, see --nixtest-packages-only)
IGNORED_KEY = pytest.StashKey[list[str]]()
SEEN_KEY = pytest.StashKey[dict[str, str]]()
LOCK_KEY = pytest.StashKey[int]()


def timeout_value(text: str) -> float:
    """A --timeout: seconds, 0 for none; no nan, no negative number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if math.isnan(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0 (0: no timeout), got {text!r}")
    return value


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("nixtest", "nixtest package tests")
    env = os.environ.get
    group.addoption(
        "--nixtest-set",
        default=env("NIXTEST_SET", "host"),
        metavar="SPEC",
        help="package set: host, prefix:FILE or nix:FILE (env NIXTEST_SET; default host)",
    )
    group.addoption(
        "--nixtest-out",
        default=env("NIXTEST_OUT", "nixtest-out"),
        metavar="DIR",
        help="output folder for reports, logs and wrappers (env NIXTEST_OUT; default nixtest-out)",
    )
    group.addoption(
        "--nixtest-timeout",
        type=timeout_value,
        default=env("NIXTEST_TIMEOUT") or None,
        metavar="S",
        help="timeout in seconds for tests that set none; 0: no timeout (env NIXTEST_TIMEOUT; default 600)",
    )
    group.addoption(
        "--nixtest-packages-only",
        action="store_true",
        default=False,
        help="collect package folders only, never a Python file; say what was ignored (nixtest run)",
    )
    group.addoption(
        "--nixtest-state",
        default=env("NIXTEST_STATE") or None,
        metavar="DIR",
        help="state folder for profiles (env NIXTEST_STATE)",
    )
    group.addoption(
        "--nixtest-jobs",
        default=env("NIXTEST_JOBS", "1"),
        metavar="N",
        help="package tests run at once in this process: a number or 'auto' (env NIXTEST_JOBS; default 1)",
    )
    group.addoption(
        "--nixtest-cold",
        action="store_true",
        default=env("NIXTEST_COLD", "") not in ("", "0"),
        help="start Python-driven tests from their wrappers, not from a warm zygote (env NIXTEST_COLD)",
    )
    group.addoption(
        "--nixtest-only",
        action="append",
        default=[],
        metavar="PKG::TEST",
        help="of package PKG, run only TEST (repeatable; other packages are not narrowed)",
    )
    group.addoption(
        "--nixtest-header",
        action="store_true",
        help="print nixtest's header line (the nixtest command passes it with --no-header)",
    )
    group.addoption(
        "--nixtest-tests",
        default=env("NIXTEST_TESTS") or None,
        metavar="DIR",
        help="the tests folder, as the history names runs (env NIXTEST_TESTS; default: from the arguments)",
    )
    group.addoption(
        "--nixtest-no-cache",
        action="store_true",
        default=env("NIXTEST_NO_CACHE", "") not in ("", "0", "false", "no"),
        help="run every test, also those with a recorded pass of the same inputs (env NIXTEST_NO_CACHE)",
    )
    group.addoption(
        "--nixtest-retries",
        default=env("NIXTEST_RETRIES", "0"),
        metavar="N",
        help="run a failing test up to N more times; a later pass is flaky (env NIXTEST_RETRIES)",
    )
    group.addoption(
        "--nixtest-baseline",
        default=env("NIXTEST_BASELINE") or None,
        metavar="RUN|FILE",
        help="compare with this run id, junit.xml or report.json (env NIXTEST_BASELINE; "
        "default: the last run of the same set and tests folder)",
    )
    group.addoption(
        "--nixtest-fail-on",
        default=env("NIXTEST_FAIL_ON", "failures"),
        metavar="WHAT",
        help="exit 1 on any failure (failures), or only when a test is newly failing "
        "(regressions) (env NIXTEST_FAIL_ON)",
    )


def pytest_configure(config: pytest.Config) -> None:
    # umask 000 must not make run.json, profiles or the state folder world-writable
    os.umask(os.umask(0o022) | 0o022)
    kwargs: dict[str, Any] = {
        "set_spec": config.getoption("nixtest_set"),
        "out": Path(config.getoption("nixtest_out")),
        "timeout": config.getoption("nixtest_timeout"),
        "warm": not config.getoption("nixtest_cold"),
    }
    if config.getoption("nixtest_state"):
        kwargs["state"] = Path(config.getoption("nixtest_state"))
    fail_on = config.getoption("nixtest_fail_on")
    if fail_on not in FAIL_ON:
        raise pytest.UsageError(f"--nixtest-fail-on: expected failures or regressions, got {fail_on!r}")
    try:
        kwargs["retries"] = parse_retries(config.getoption("nixtest_retries"))
    except ValueError as exc:
        raise pytest.UsageError(f"--nixtest-retries: {exc}") from None
    baseline = config.getoption("nixtest_baseline")
    if baseline and not (baseline.isdigit() and not os.path.exists(baseline)):
        try:
            baseline_file(Path(baseline))  # a file from elsewhere: read it now, not after the run
        except NixtestError as exc:
            raise pytest.UsageError(exc.message) from None
    context = Context(**kwargs)
    # the history is opened only once a package test asks for it: a pytest
    # session without package tests never touches the state folder
    history = HistorySession(context.state, context.set_spec, no_cache=config.getoption("nixtest_no_cache"))
    context.cache = history.cache
    context.no_cache_reason = "--no-cache" if history.no_cache else ""
    config.stash[CONTEXT_KEY] = context
    config.stash[IGNORED_KEY] = []
    config.stash[SEEN_KEY] = {}
    config.stash[INTERRUPTED_KEY] = []
    if hasattr(config, "workerinput"):
        jobs = worker_jobs(str(config.getoption("nixtest_jobs")), config.workerinput)
        config.pluginmanager.register(WorkerLoop(jobs), "nixtest-worker-loop")
        return
    if config.getoption("nixtest_packages_only"):
        # `nixtest run`: a run of package tests from the start
        _take_out(config, context)
        _stop_on_signals()
    config.stash[HANDOFF_KEY] = {}
    config.pluginmanager.register(ResultCollector(config, history), "nixtest-results")
    jobs = parse_jobs(str(config.getoption("nixtest_jobs")), "--nixtest-jobs")
    config.pluginmanager.register(RunLoop(jobs), "nixtest-loop")


def _take_out(config: pytest.Config, context: Context) -> None:
    """OUT and the state folder: trusted (see safefs), and OUT for this run alone."""
    try:
        check_folder(context.out, "the output folder")
        check_folder(context.state, "the state folder")
        make_folders(context.out)
        fd = lock_folder(context.out)
    except UntrustedPath as exc:
        raise pytest.UsageError(str(exc)) from None
    except OSError as exc:
        raise pytest.UsageError(f"the output folder {context.out}: {exc.strerror or exc}") from None
    if fd is None:
        raise pytest.UsageError(
            f"another nixtest run is writing into {context.out}; wait for it or use another --out"
        )
    config.stash[LOCK_KEY] = fd


def _stop_on_signals() -> None:
    """SIGTERM and SIGHUP stop a run as Ctrl-C does: tests stopped, reports written, exit 2."""
    if threading.current_thread() is not threading.main_thread():
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"{signal.Signals(signum).name} received")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, interrupt)


def pytest_unconfigure(config: pytest.Config) -> None:
    context = config.stash.get(CONTEXT_KEY, None)
    if context is not None:
        context.close()
    fd = config.stash.get(LOCK_KEY, None)
    if fd is not None:
        os.close(fd)
        del config.stash[LOCK_KEY]


@pytest.hookimpl(hookwrapper=True)
def pytest_sessionstart(session: pytest.Session) -> Any:
    yield  # after the terminal's "test session starts"
    config = session.config
    if config.getoption("nixtest_header") and not hasattr(config, "workerinput"):
        from nixtest.progress import header, terminal_say

        say = terminal_say(config)
        say(header(config.stash[CONTEXT_KEY]), True)
        # --no-header hides every plugin's header lines: keep those of nixtest's own
        for name, plugin in config.pluginmanager.list_name_plugin():
            own_header = getattr(plugin, "pytest_report_header", None)
            if str(name).startswith("nixtest-") and callable(own_header):
                line = own_header(config)
                if line:
                    say(str(line), True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtestloop(session: pytest.Session) -> Any:
    """A cold run builds its new profiles first, saying so (see nixtest/progress.py).

    A wrapper, so that it comes before whichever loop runs the tests (pytest's,
    nixtest's -j loop).
    """
    config = session.config
    if not hasattr(config, "workerinput") and not config.option.collectonly:
        definitions = [item.definition for item in session.items if isinstance(item, PackageTest)]
        if definitions:
            from nixtest.progress import build_profiles, terminal_say

            build_profiles(definitions, config.stash[CONTEXT_KEY], terminal_say(config))
        # What collection made lives until the end: the collector need not scan it
        # again at each collection of the run (whose objects are a few per test).
        gc.freeze()
    yield


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if isinstance(item, PackageTest) and report.when != "teardown" and item.user_properties:
        # a pytest-xdist worker's result went with this report: neither the item, for the
        # rest of the run, nor its teardown report, sent to the controller again, keeps it
        item.user_properties[:] = [p for p in item.user_properties if p[0] != RESULT_PROPERTY]
    return report


def _note_ignored(config: pytest.Config, path: Path, why: str) -> None:
    ignored = config.stash.get(IGNORED_KEY, None)
    if ignored is not None:
        ignored.append(f"{path}: {why}")


@pytest.hookimpl(tryfirst=True)
def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Under `nixtest run` only package folders are collected: no Python file is imported here."""
    if not config.getoption("nixtest_packages_only"):
        return None
    path = collection_path
    try:
        if os.path.isdir(path):
            # the folder above resolved once (an lstat a folder, not one a component)
            real = real_path(path, config.stash.setdefault(REALPATHS_KEY, {}))
            seen = config.stash[SEEN_KEY]
            if real in seen:
                # a symlink back up (a loop) or a second name of a folder: collected once
                _note_ignored(config, path, f"the same folder as {seen[real]}")
                return True
            if not os.access(path, os.R_OK | os.X_OK):
                _note_ignored(config, path, "cannot be read")
                return True
            return None
    except OSError as exc:
        _note_ignored(config, path, exc.strerror or str(exc))
        return True
    name = path.name
    if name.endswith(".py"):
        _note_ignored(config, path, "a Python file outside any package folder; it was not run")
    elif name.lower().startswith("tests.") or name.lower().startswith("test."):
        _note_ignored(config, path, f"not read: a package folder holds {DEFINITIONS_FILE}")
    return True


def _is_suite(path: Path) -> bool:
    """An autopkgtest suite (debian/tests/control); False for a folder this user cannot read."""
    try:
        return is_suite(path)
    except OSError:
        return False


@pytest.hookimpl(tryfirst=True)
def pytest_collect_directory(path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    config = parent.config
    if config.getoption("nixtest_packages_only"):
        known = config.stash.setdefault(REALPATHS_KEY, {})
        config.stash[SEEN_KEY].setdefault(real_path(path, known), str(path))
    if is_package_folder(path):
        return PackageFolder.from_parent(parent, path=path)
    if _is_suite(path):
        return AutopkgtestFolder.from_parent(parent, path=path)
    if config.getoption("nixtest_packages_only"):
        # a plain folder even with an __init__.py: pytest's Package would import it here
        return pytest.Dir.from_parent(parent, path=path)
    return None


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    ignored = config.stash.get(IGNORED_KEY, [])
    if ignored:
        terminalreporter.write_line(
            f"nixtest: ignored {len(ignored)} path{'s' if len(ignored) != 1 else ''} "
            f"(only package folders, folders holding {DEFINITIONS_FILE}, are collected):"
        )
        for line in ignored:
            terminalreporter.write_line(f"  {line}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`--nixtest-only PKG::TEST`: pytest takes no `DIR::NAME` argument for a package folder."""
    wanted: dict[str, set[str]] = {}
    for spec in config.getoption("nixtest_only"):
        package, _, test = spec.partition("::")
        wanted.setdefault(package, set()).add(test)
    if not wanted:
        return
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        definition = item.definition if isinstance(item, PackageTest) else None
        names = wanted.get(definition.package) if definition is not None else None
        if definition is not None and names is not None and definition.name not in names:
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


class ResultCollector:
    """On the controller (also under pytest-xdist): gathers results, writes the reports."""

    def __init__(self, config: pytest.Config, history: HistorySession) -> None:
        self.config = config
        self.history = history
        self.results: dict[str, TestResult] = {}
        self.start = time.time()
        #: package tests were collected: the reports are written even if none finished
        self.active = False
        #: node id -> place in the collection: the reports list the tests in that order,
        #: whichever ended first (-j, -n)
        self.order: dict[str, int] = {}

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.active = self.active or any(isinstance(item, PackageTest) for item in session.items)
        if session.items:
            self.order = {item.nodeid: index for index, item in enumerate(session.items)}
        if self.active and LOCK_KEY not in self.config.stash:
            # plain `pytest package_tests/`: a run of package tests once they are found
            _take_out(self.config, self.config.stash[CONTEXT_KEY])

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        # the controller collects nothing itself under pytest-xdist: the workers tell it
        if not self.order:
            self.order = {nodeid: index for index, nodeid in enumerate(ids)}
        for nodeid in ids:
            if self._folder(nodeid.partition("::")[0]) is not None:
                self.active = True
                return

    def _folder(self, path: str) -> Path | None:
        """The package folder of a node id's path part.

        A node id names its folder relative to the root folder, or (for a
        folder outside it, `--tests` elsewhere) to the argument it was found under.
        """
        bases = [self.config.rootpath, *(Path(arg.partition("::")[0]) for arg in self.config.args)]
        for base in bases:
            for candidate in (base / path, base.parent / path):
                if is_package_folder(candidate) or _is_suite(candidate):
                    return candidate
        return None

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        result = self.config.stash[HANDOFF_KEY].pop(report.nodeid, None)
        if result is None:
            result = self._from_worker(report)
        if result is not None:
            self.results[report.nodeid] = result
            self.history.add(result, self._tests_dir())
            return
        if report.failed and report.nodeid not in self.results:
            self._lost(report)

    @staticmethod
    def _from_worker(report: pytest.TestReport) -> TestResult | None:
        """The result a pytest-xdist worker sent with the report of its setup or call."""
        if report.when == "teardown":
            return None  # the item's properties again: recorded at setup or call
        for key, value in report.user_properties:
            if key == RESULT_PROPERTY:
                return TestResult.from_json(str(value))
        return None

    def _lost(self, report: pytest.TestReport) -> None:
        """A package test that ended with no result of its own: its worker crashed."""
        path, _, name = report.nodeid.partition("::")
        found = self._folder(path)
        if not name or found is None:
            return
        folder = Path(os.path.realpath(found))
        text = report.longreprtext.strip().splitlines()
        # the worker wrote the wrapper and started the log before it died
        out = self.config.stash[CONTEXT_KEY].out
        wrapper = wrapper_path(out, folder.name, name)
        log = out / "logs" / folder.name / f"{name}.log"
        self.results[report.nodeid] = TestResult(
            package=folder.name,
            test=name,
            outcome="error",
            message=text[-1] if text else "the test ended without a result",
            start=report.start,
            end=report.stop,
            wrapper=str(wrapper) if wrapper.is_file() else "",
            log_path=str(log) if log.is_file() else "",
        )
        self.history.add(self.results[report.nodeid], self._tests_dir())

    def _tests_dir(self) -> Path:
        """The tests folder the history files this run under: --nixtest-tests, else the arguments'.

        Found once: it depends on the options and arguments only (a stat and path work a test).
        """
        if self._known_tests_dir is None:
            self._known_tests_dir = self._find_tests_dir()
        return self._known_tests_dir

    _known_tests_dir: Path | None = None

    def _find_tests_dir(self) -> Path:
        given = self.config.getoption("nixtest_tests")
        if given:
            return Path(os.path.abspath(given))
        folders = set()
        for arg in self.config.args:
            path = Path(os.path.abspath(self.config.invocation_params.dir / arg.partition("::")[0]))
            # a package folder's tests folder is its parent
            folders.add(path.parent if (path / DEFINITIONS_FILE).is_file() else path)
        if len(folders) == 1:
            return folders.pop()
        return Path(os.path.commonpath(sorted(str(f) for f in folders))) if folders else self.config.rootpath

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if not self.results and not self.active:
            return
        from nixtest.reports import write_reports

        context = self.config.stash[CONTEXT_KEY]
        for nodeid, result in self.config.stash.get(INTERRUPTED_KEY, []):
            # the tests Ctrl-C (or SIGTERM) stopped: pytest itself reports nothing for them
            self.results.setdefault(nodeid, result)
        last = len(self.order)
        ordered = sorted(self.results.items(), key=lambda kv: self.order.get(kv[0], last))
        summary = RunSummary(
            results=[result for _, result in ordered],
            set_spec=context.set_spec,
            out_dir=str(context.out),
            start=self.start,
            end=time.time(),
            interrupted=exitstatus == pytest.ExitCode.INTERRUPTED or bool(session.shouldstop),
        )
        self.summary = summary
        try:
            # the comparison first: every report shows it
            tests_dir = self._tests_dir()
            baseline = self.config.getoption("nixtest_baseline")
            self.history.finish(summary, baseline, _defined_tests(tests_dir))
            self.history.attach_strips(summary, context.out)
        finally:
            try:
                write_reports(summary, context.out)
                self.history.prune_strips(summary)
            except (NixtestError, OSError) as exc:
                message = exc.message if isinstance(exc, NixtestError) else f"{exc.strerror or exc}"
                # one line and exit 3 (internal error), not a traceback; no earlier report is kept
                sys.stderr.write(f"nixtest: {message}\n")
                session.exitstatus = pytest.ExitCode.INTERNAL_ERROR
        regressions_only = self.config.getoption("nixtest_fail_on") == "regressions"
        if regressions_only and session.exitstatus == 1 and not summary.count_change("newly-failing"):
            # as in Debian's migration: a test that failed before does not block
            session.exitstatus = pytest.ExitCode.OK

    summary: RunSummary | None = None

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_terminal_summary(self, terminalreporter: Any) -> Any:
        # a wrapper run first: its part after `yield` comes last, after pytest's short summary
        try:
            return (yield)
        finally:
            if self.results:
                out = self.config.stash[CONTEXT_KEY].out
                for line in self.history.terminal_lines(
                    self.summary, self.config.getoption("nixtest_fail_on")
                ):
                    terminalreporter.write_line(line)
                terminalreporter.write_line(f"nixtest: reports, logs and wrappers in {out}")


def _defined_tests(tests_dir: Path) -> Any:
    """Whether `pkg::test` is still defined under `tests_dir`: a baseline's test that is not was removed."""
    known: dict[str, set[str]] = {}

    def exists(nodeid: str) -> bool:
        package, _, test = nodeid.partition("::")
        if package not in known:
            folder = tests_dir / package
            names: set[str] = set()
            if package and "/" not in package and (folder / DEFINITIONS_FILE).is_file():
                names = {d.name for d in load_package(folder)}
            known[package] = names
        return test in known[package]

    return exists
