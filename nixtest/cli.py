"""The `nixtest` command: a shell front end to pytest with the nixtest plugin."""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from nixtest.completion import complete_packages, complete_selection, complete_tests, install
from nixtest.definitions import DEFINITIONS_FILE
from nixtest.errors import NixtestError, UsageError
from nixtest.sources import find_folders, load_folder
from nixtest.sources.autopkgtest import CONTROL, is_suite

install()  # bash completion that keeps PKG::TEST one word

F = TypeVar("F", bound=Callable[..., Any])

#: pytest's exit codes, which nixtest keeps
EXIT_INTERRUPTED = 2
EXIT_USAGE = 4
#: the most tests -j runs at once: more would only exhaust the machine
MAX_JOBS = 1024


class Seconds(click.ParamType):
    """A --timeout: seconds; 0 for no timeout; no nan, no negative number."""

    name = "seconds"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        if isinstance(value, float):
            return value
        try:
            number = float(value)
        except ValueError:
            self.fail(f"not a number of seconds: {value!r}", param, ctx)
        if math.isnan(number) or number < 0:
            self.fail(f"must be a number of seconds >= 0 (0: no timeout), got {value!r}", param, ctx)
        return number


SECONDS = Seconds()


class Group(click.Group):
    """The command group, with pytest's exit codes for what click decides itself.

    Click exits 2 on a usage error and prints "Aborted!" with exit 1 on
    Ctrl-C; nixtest's usage errors exit 4 and an interrupted run exits 2.
    """

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        # umask 000 must not make run.json, the state folder or a report world-writable
        os.umask(os.umask(0o022) | 0o022)
        try:
            return super().main(*args, **kwargs)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(EXIT_USAGE)
        except (click.Abort, KeyboardInterrupt):
            click.echo("nixtest: interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except BrokenPipeError:
            # `nixtest list | head`: the reader has gone, nothing is wrong
            sys.stderr.close()
            sys.exit(1)


def _decorate(func: F, options: list[Callable[[Any], Any]]) -> F:
    """Applies click options in the order they are listed (click's --help shows that order)."""
    for option in reversed(options):
        func = option(func)
    return func


def out_option(help: str) -> Callable[[F], F]:
    return click.option(
        "--out",
        "out",
        default="nixtest-out",
        envvar="NIXTEST_OUT",
        show_default=True,
        type=click.Path(file_okay=False, path_type=Path),
        help=help,
    )


state_option = click.option(
    "--state",
    "state",
    default=None,
    envvar="NIXTEST_STATE",
    type=click.Path(file_okay=False, path_type=Path),
    help="state folder for profiles [default: XDG cache]",
)


def common_options(func: F) -> F:
    """The options every command takes; each also reads NIXTEST_<OPTION>."""
    options = [
        click.option(
            "--set",
            "set_spec",
            default="host",
            envvar="NIXTEST_SET",
            show_default=True,
            metavar="SPEC",
            help="package set: host, prefix:FILE or nix:FILE",
        ),
        click.option(
            "--tests",
            "tests_dir",
            default="package_tests",
            envvar="NIXTEST_TESTS",
            show_default=True,
            type=click.Path(file_okay=False, path_type=Path),
            help="folder of package test definitions",
        ),
        out_option("output folder: reports, logs, wrappers"),
        state_option,
    ]
    return _decorate(func, options)


def run_options(func: F) -> F:
    options = [
        click.option(
            "-j",
            "--jobs",
            default="auto",
            envvar="NIXTEST_JOBS",
            show_default=True,
            metavar="N",
            help="tests run at once in this process, or in each pytest-xdist worker with -n W "
            "(a number, or 'auto': one per CPU, shared among -n's workers)",
        ),
        click.option(
            "-k",
            "keyword",
            default=None,
            envvar="NIXTEST_K",
            metavar="EXPR",
            help="only tests matching the expression (as pytest -k)",
        ),
        click.option(
            "--timeout",
            default=None,
            envvar="NIXTEST_TIMEOUT",
            type=SECONDS,
            metavar="S",
            help="timeout of tests that set none; 0: no timeout [default: 600]",
        ),
        click.option("-v", "--verbose", count=True, help="more output"),
    ]
    return _decorate(func, options)


def history_options(func: F) -> F:
    """The options of the run history: cache, retries, baseline, exit code (nixtest.history)."""
    options = [
        click.option(
            "--no-cache",
            is_flag=True,
            envvar="NIXTEST_NO_CACHE",
            help="run every test, also those with a recorded pass of the same inputs",
        ),
        click.option(
            "--retries",
            default=0,
            envvar="NIXTEST_RETRIES",
            type=click.IntRange(min=0),
            metavar="N",
            help="run a failing test up to N more times; a pass after a failure is flaky",
        ),
        click.option(
            "--baseline",
            default=None,
            envvar="NIXTEST_BASELINE",
            metavar="RUN|FILE",
            help="compare with this run id, junit.xml or report.json [default: the last run "
            "of the same set and tests folder]",
        ),
        click.option(
            "--fail-on",
            "fail_on",
            default="failures",
            envvar="NIXTEST_FAIL_ON",
            show_default=True,
            type=click.Choice(["failures", "regressions"]),
            help="exit 1 on any failure, or only when a test is newly failing",
        ),
    ]
    return _decorate(func, options)


def history_args(
    tests_dir: Path, no_cache: bool, retries: int, baseline: str | None, fail_on: str
) -> tuple[str, ...]:
    """The plugin options for `history_options`."""
    args = ["--nixtest-tests", os.path.abspath(tests_dir), "--nixtest-fail-on", fail_on]
    if no_cache:
        args.append("--nixtest-no-cache")
    if retries:
        args += ["--nixtest-retries", str(retries)]
    if baseline:
        args += ["--nixtest-baseline", baseline]
    return tuple(args)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="nixtest")
def main() -> None:
    """Test a package set one package at a time."""


#: pytest's options (pytest-xdist's among them) whose value may be the next argument:
#: `nixtest run -n 2` gives pytest `-n 2`, not a package named 2
PYTEST_VALUE_OPTIONS = frozenset(
    {"-n", "--numprocesses", "--dist", "--tx", "--maxprocesses", "--max-worker-restart", "--maxschedchunk"}
    | {"--maxfail", "-p", "-o", "--override-ini", "-m", "-W", "--deselect", "--durations", "--tb"}
)


def split_selection(selection: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """`nixtest run`'s arguments: the packages and tests it names, and the options for pytest."""
    names: list[str] = []
    extra: list[str] = []
    value_next = False
    for arg in selection:
        if value_next or arg.startswith("-"):
            extra.append(arg)
            value_next = not value_next and arg in PYTEST_VALUE_OPTIONS
        else:
            names.append(arg)
    return tuple(names), tuple(extra)


def selection_paths(tests_dir: Path, selection: tuple[str, ...]) -> list[str]:
    """The package folders pytest collects for `PKG` and `PKG::TEST` (see `selected_tests`)."""
    if not tests_dir.is_dir():
        raise UsageError(f"no test definitions: {tests_dir} is not a folder (see --tests)")
    if not selection:
        return [str(tests_dir)]
    paths: list[str] = []
    for item in selection:
        package, sep, test = item.partition("::")
        if not package or "/" in package or (sep and not test):
            raise UsageError(f"not a package or PKG::TEST: {item!r}")
        folder = tests_dir / package
        if not (folder / DEFINITIONS_FILE).is_file():
            # an autopkgtest suite is named by its source package, not by its folder
            folder = find_folders(tests_dir).get(package, folder)
        if not (folder / DEFINITIONS_FILE).is_file() and not is_suite(folder):
            raise UsageError(
                f"no tests for package {package!r}: {tests_dir / package / DEFINITIONS_FILE} does not exist"
            )
        if sep:
            names = {definition.name for definition in load_folder(folder)}
            if test not in names:
                file = folder / DEFINITIONS_FILE
                raise UsageError(f"no test {test!r} in {file if file.is_file() else folder / CONTROL}")
        path = str(folder)
        if path not in paths:
            paths.append(path)
    return paths


def selected_tests(selection: tuple[str, ...]) -> list[str]:
    """The `PKG::TEST` items of packages not also named whole.

    pytest takes no `DIR::NAME` argument: the plugin's `--nixtest-only` narrows
    a package folder to these tests.
    """
    whole = {item for item in selection if "::" not in item}
    return [item for item in selection if "::" in item and item.partition("::")[0] not in whole]


def pytest_args(
    paths: list[str],
    *,
    set_spec: str,
    out: Path,
    state: Path | None,
    jobs: str = "auto",
    keyword: str | None = None,
    timeout: float | None = None,
    verbose: int = 0,
    only: tuple[str, ...] | list[str] = (),
    extra: tuple[str, ...] = (),
    cache_dir: Path | None = None,
) -> list[str]:
    args = [*paths, "--nixtest-set", set_spec, "--nixtest-out", str(out), "-rfEs"]
    # Package folders only: no Python file under --tests is imported or run in this process
    # (as root, with the full environment), no conftest.py, and pytest does not walk the
    # folders above --tests (an unreadable one beside them would stop the run).
    args += ["--nixtest-packages-only", "--noconftest"]
    if paths:
        args += ["--confcutdir", os.path.commonpath([os.path.abspath(p) for p in paths])]
    if cache_dir is not None:
        # pytest's cache (its last-failed list, for `nixtest rerun`) kept per output folder
        args += ["-o", f"cache_dir={cache_dir}"]
    for item in only:
        args += ["--nixtest-only", item]
    # nixtest's own run, not the project's pytest configuration; pytest's header
    # would then name /dev/null as its config file: nixtest prints its own
    args += ["-c", os.devnull, "--rootdir", os.getcwd(), "--no-header", "--nixtest-header"]
    # No Python test code runs in this process (pytest modules run inside their
    # wrappers), and nixtest is imported already: rewriting asserts would only warn.
    args += ["--assert=plain"]
    if state is not None:
        args += ["--nixtest-state", str(state)]
    if timeout is not None:
        args += ["--nixtest-timeout", str(timeout)]
    if keyword:
        args += ["-k", keyword]
    if jobs != "auto" and not (jobs.isascii() and jobs.isdigit()):
        raise UsageError(f"-j takes a number or 'auto', got {jobs!r}")
    if jobs != "auto" and int(jobs) > MAX_JOBS:
        raise UsageError(f"-j {jobs}: at most {MAX_JOBS} tests run at once")
    # nixtest's own scheduler, in the one process (pytest-xdist's -n stays for spreading runs)
    args += ["--nixtest-jobs", jobs]
    if verbose:
        args.append("-" + "v" * verbose)
    return args + list(extra)


def run_pytest(args: list[str]) -> int:
    import pytest

    return int(pytest.main(args))


def _fail_usage(exc: NixtestError) -> None:
    click.echo(f"nixtest: {exc.message}", err=True)
    sys.exit(EXIT_USAGE)


@main.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": True})
@click.argument("selection", nargs=-1, type=click.UNPROCESSED, shell_complete=complete_selection)
@common_options
@run_options
@history_options
def run(
    selection: tuple[str, ...],
    set_spec: str,
    tests_dir: Path,
    out: Path,
    state: Path | None,
    jobs: str,
    keyword: str | None,
    timeout: float | None,
    verbose: int,
    no_cache: bool,
    retries: int,
    baseline: str | None,
    fail_on: str,
) -> None:
    """Run package tests: all, those of PKG, or PKG::TEST.

    Arguments starting with '-' that nixtest does not know go to pytest
    (e.g. `nixtest run -- --lf -x`; `nixtest run -n 2 -j 2`: two pytest-xdist
    workers, each running up to 2 tests at once).  The exit code is pytest's: 0 all
    passed, 1 some failed, 2 interrupted, 3 internal error, 4 usage error,
    5 no tests.
    """
    from nixtest.interactive import RunOptions, cache_dir, save_run
    from nixtest.profiles import default_state_dir

    names, extra = split_selection(selection)
    state_dir = state if state is not None else default_state_dir()
    try:
        args = pytest_args(
            selection_paths(tests_dir, names),
            set_spec=set_spec,
            out=out,
            state=state,
            jobs=jobs,
            keyword=keyword,
            timeout=timeout,
            verbose=verbose,
            only=selected_tests(names),
            extra=history_args(tests_dir, no_cache, retries, baseline, fail_on) + extra,
            cache_dir=cache_dir(state_dir, out),
        )
    except NixtestError as exc:
        _fail_usage(exc)
    options = RunOptions(
        out=os.path.abspath(out),
        cwd=os.getcwd(),
        selection=list(names),
        extra=list(extra),
        set_spec=set_spec,
        tests_dir=str(tests_dir),
        jobs=jobs,
        keyword=keyword,
        timeout=timeout,
        verbose=verbose,
    )
    try:
        save_run(state_dir, options)
    except OSError as exc:
        click.echo(f"nixtest: warning: cannot keep this run's options for `nixtest rerun`: {exc}", err=True)
    sys.exit(run_pytest(args))


@main.command("list")
@click.argument("packages", nargs=-1, shell_complete=complete_packages)
@common_options
@click.option(
    "--changed",
    is_flag=True,
    envvar="NIXTEST_CHANGED",
    help="only the tests a run would run (no recorded pass of the same inputs), and why",
)
@click.option(
    "--timeout",
    default=None,
    envvar="NIXTEST_TIMEOUT",
    type=float,
    metavar="S",
    help="with --changed: the run's --timeout (part of a test's inputs)",
)
def list_(
    packages: tuple[str, ...],
    set_spec: str,
    tests_dir: Path,
    out: Path,
    state: Path | None,
    changed: bool,
    timeout: float | None,
) -> None:
    """List packages and their tests, and the packages of the set that have none."""
    import shutil

    if changed:
        from nixtest.history.changed import changed_lines
        from nixtest.profiles import default_state_dir

        try:
            lines = changed_lines(
                tests_dir, packages, set_spec, state if state is not None else default_state_dir(), timeout
            )
        except NixtestError as exc:
            _fail_usage(exc)
        click.echo("\n".join(lines))
        return

    from nixtest.interactive import listing_lines, make_listing
    from nixtest.packagesets import load_set

    names: list[str] | None = None
    set_error = ""
    try:
        names = load_set(set_spec).names()
    except NixtestError as exc:
        set_error = exc.message
    try:
        listing = make_listing(tests_dir, packages, names, set_error)
    except NixtestError as exc:
        _fail_usage(exc)
    width = max(40, shutil.get_terminal_size().columns - 1)
    click.echo("\n".join(listing_lines(listing, set_spec, width=width)))


# --- show, debug, shell, rerun (nixtest/interactive.py) ---------------------------

#: pytest's exit code for failed tests: a test that cannot be prepared is one
EXIT_FAILED = 1
EXIT_INTERNAL = 3


def _stop(message: str, code: int) -> NoReturn:
    click.echo(f"nixtest: {message}", err=True)
    sys.exit(code)


def _prepare_one(
    item: str, set_spec: str, tests_dir: Path, out: Path, state: Path | None, *, interactive: bool = False
) -> Any:
    """Finds PKG::TEST and prepares it as a run would: its profiles and its wrapper in OUT."""
    from nixtest.definitions import BadTest
    from nixtest.interactive import find_definition
    from nixtest.results import TestResult
    from nixtest.runner import Context, prepare

    try:
        definition = find_definition(tests_dir, item)
    except NixtestError as exc:
        _stop(exc.message, EXIT_USAGE)
    if isinstance(definition, BadTest):
        _stop(definition.error.message, EXIT_FAILED)
    if interactive and definition.kind in ("run", "imports"):
        article = "a run" if definition.kind == "run" else "an imports"
        _stop(
            f"{definition.nodeid} is {article}: test: it has no Python frame to debug; "
            f"`nixtest shell {definition.nodeid}` opens a shell in its environment",
            EXIT_USAGE,
        )
    kwargs: dict[str, Any] = {"set_spec": set_spec, "out": out}
    if state is not None:
        kwargs["state"] = state
    context = Context(**kwargs)
    from nixtest.safefs import check_folder

    try:
        # the wrapper written into OUT is run next (debug, shell): OUT must be ours alone
        check_folder(context.out, "the output folder")
        check_folder(context.state, "the state folder")
    except NixtestError as exc:
        _stop(exc.message, EXIT_USAGE)
    prepared = prepare(definition, context)
    if isinstance(prepared, TestResult):
        _stop(f"{item}: cannot prepare the test: {prepared.message}", EXIT_FAILED)
    for warning in prepared.warnings:
        click.echo(f"nixtest: warning: {warning}", err=True)
    return prepared


def _exec_wrapper(wrapper: Path, flags: list[str]) -> NoReturn:
    """Replaces nixtest with the wrapper: in the foreground, on this terminal."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(str(wrapper), [str(wrapper), *flags])
    except OSError as exc:
        _stop(f"cannot run {wrapper}: {exc.strerror or exc}", EXIT_INTERNAL)


def _wrapper_flags(keep: bool, workdir: Path | None) -> list[str]:
    flags = ["--keep"] if keep else []
    if workdir is not None:
        flags += ["--workdir", str(workdir)]
    return flags


keep_option = click.option("--keep", is_flag=True, help="keep the working directory and print its path")
workdir_option = click.option(
    "--workdir",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="use DIR (new or empty) as the working directory",
    metavar="DIR",
)


@main.command()
@click.argument("test", metavar="PKG::TEST", shell_complete=complete_tests)
@common_options
def show(test: str, set_spec: str, tests_dir: Path, out: Path, state: Path | None) -> None:
    """The resolved definition, profile, environment, working directory and wrapper of PKG::TEST.

    It builds the test's profile and writes its wrapper, as a run would.
    Secrets are shown by name only.
    """
    from nixtest.interactive import show_lines

    prepared = _prepare_one(test, set_spec, tests_dir, out, state)
    click.echo("\n".join(show_lines(prepared)))


@main.command()
@click.argument("test", metavar="PKG::TEST", shell_complete=complete_tests)
@common_options
@keep_option
@workdir_option
@click.option(
    "--timeout",
    default=None,
    envvar="NIXTEST_TIMEOUT",
    type=SECONDS,
    metavar="S",
    help="timeout if the test sets none [default: 600]; suspended while ipdb is open",
)
def debug(
    test: str,
    set_spec: str,
    tests_dir: Path,
    out: Path,
    state: Path | None,
    keep: bool,
    workdir: Path | None,
    timeout: float | None,
) -> None:
    """Run PKG::TEST in the foreground; open ipdb where it fails.

    Builds the test's environment and wrapper as a run would, then runs
    `OUT/rerun/PKG/TEST --ipdb`.  Quitting the debugger ends the run; the
    exit code is the test's (1 when it failed).
    """
    from nixtest.interactive import wrapper_timeout
    from nixtest.wrappers import seconds

    prepared = _prepare_one(test, set_spec, tests_dir, out, state, interactive=True)
    limit = seconds(wrapper_timeout(prepared.test, timeout))
    _exec_wrapper(prepared.wrapper, ["--ipdb", "--timeout", limit, *_wrapper_flags(keep, workdir)])


@main.command()
@click.argument("test", metavar="PKG::TEST", shell_complete=complete_tests)
@common_options
@keep_option
@workdir_option
def shell(
    test: str, set_spec: str, tests_dir: Path, out: Path, state: Path | None, keep: bool, workdir: Path | None
) -> None:
    """A shell in the working directory and environment of PKG::TEST; the test is not run.

    The profile's bash or sh if it has one, else /bin/sh; the prompt names
    the test.  Runs `OUT/rerun/PKG/TEST --shell`.
    """
    prepared = _prepare_one(test, set_spec, tests_dir, out, state)
    _exec_wrapper(prepared.wrapper, ["--shell", *_wrapper_flags(keep, workdir)])


@main.command()
@out_option("the output folder of the run to repeat")
@state_option
@click.option("-v", "--verbose", count=True, help="more output")
def rerun(out: Path, state: Path | None, verbose: int) -> None:
    """Run again the tests that failed in the last run into --out.

    With the set, the --tests folder and the options of that run.  The
    reports in OUT are then those of the tests run again.  Exits 0, saying
    so, when nothing failed.
    """
    from nixtest.interactive import cache_dir, last_failed, load_run, test_names
    from nixtest.profiles import default_state_dir

    state_dir = state if state is not None else default_state_dir()
    try:
        options = load_run(state_dir, out)
        failed = last_failed(state_dir, out)
    except NixtestError as exc:
        _fail_usage(exc)
    if not failed:
        click.echo(f"nixtest: nothing failed in the last run into {options.out}: nothing to run again")
        sys.exit(0)
    shown = ", ".join(test_names(failed))
    plural = "s" if len(failed) != 1 else ""
    click.echo(f"nixtest: running again {len(failed)} test{plural} that failed in the last run: {shown}")
    try:
        os.chdir(options.cwd)
    except OSError as exc:
        _stop(f"cannot go back to the folder of the last run, {options.cwd}: {exc.strerror}", EXIT_USAGE)
    try:
        args = pytest_args(
            selection_paths(Path(options.tests_dir), tuple(options.selection)),
            set_spec=options.set_spec,
            out=Path(options.out),
            state=state_dir,
            jobs=options.jobs,
            keyword=options.keyword,
            timeout=options.timeout,
            verbose=max(verbose, options.verbose),
            only=selected_tests(tuple(options.selection)),
            extra=(*options.extra, "--lf", "--lfnf=none"),
            cache_dir=cache_dir(state_dir, Path(options.out)),
        )
    except NixtestError as exc:
        _fail_usage(exc)
    sys.exit(run_pytest(args))


@main.command()
@click.argument("selection", required=False, metavar="[PKG | PKG::TEST]", shell_complete=complete_selection)
@state_option
@click.option(
    "-n",
    "--limit",
    default=20,
    envvar="NIXTEST_LIMIT",
    show_default=True,
    type=click.IntRange(min=1),
    help="how many runs (or results) to show",
)
@click.option(
    "--html",
    "html_file",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="write the runs and every test's last outcomes (a strip, linking to the logs) to FILE",
)
def history(selection: str | None, state: Path | None, limit: int, html_file: Path | None) -> None:
    """The recorded runs; or the outcomes of PKG's tests, or of PKG::TEST, with a flaky verdict.

    Runs show their id (for --baseline), when, the set and tests folder,
    counts and what was newly failing.  A test shows each result's run,
    outcome, input key (shortened) and duration.  With --html FILE, the
    same view as a page: the last run's changes (newly failing first), the
    runs, and each test's last outcomes as a strip; the logs of earlier
    failed and flaky results go to a folder beside FILE.
    """
    from nixtest.history import database_path
    from nixtest.history.store import HistoryStore
    from nixtest.history.views import runs_lines, test_lines
    from nixtest.profiles import default_state_dir

    path = database_path(state if state is not None else default_state_dir())
    if not path.exists():
        click.echo(f"nixtest: no history yet: {path} does not exist")
        return
    try:
        store = HistoryStore(path)
    except NixtestError as exc:
        _stop(exc.message, EXIT_INTERNAL)
    if html_file is not None:
        from nixtest.history.strips import write_history_page

        if selection is not None:
            _stop("--html shows every test: name no PKG or PKG::TEST with it", EXIT_USAGE)
        try:
            written = write_history_page(store, html_file, limit)
        except OSError as exc:
            _stop(f"cannot write {html_file}: {exc.strerror or exc}", EXIT_INTERNAL)
        click.echo(f"nixtest history: wrote {written}")
        return
    if selection is None:
        lines = runs_lines(store, limit)
    else:
        package, _, test = selection.partition("::")
        lines = test_lines(store, package, test or None, limit)
    click.echo("\n".join(lines))


# --- nixtest jobset (nixtest/jobset.py) ------------------------------------------
# Kept above the `__main__` guard so that `python -m nixtest.cli jobset` knows it.


@main.command()
@click.argument("sources", nargs=-1, metavar="[SRC]...")
@click.option(
    "--into",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="folder to unpack the source trees into (then: nixtest run --tests DIR)",
)
@state_option
def sources(sources: tuple[str, ...], into: Path, state: Path | None) -> None:
    """Fetch and unpack Debian source packages of the host, for their autopkgtest suites.

    With no SRC, every installed source package whose Testsuite: names
    autopkgtest.  Each at its installed version where the archive still has
    it.  apt runs with a private state folder and the machine's deb-src lines
    (derived from its deb lines when it has none): /etc/apt is not touched and
    no root is needed.  Exits 1 when a source could not be fetched.
    """
    from nixtest.profiles import default_state_dir
    from nixtest.sources.debian import fetch

    try:
        # click.echo flushes: progress shows as it happens, also into a pipe or a CI log
        done = fetch(
            list(sources), into, state if state is not None else default_state_dir(), progress=click.echo
        )
    except NixtestError as exc:
        click.echo(f"nixtest sources: {exc.message}", err=True)
        sys.exit(1)
    click.echo(f"nixtest sources: {len(done.fetched)} fetched into {into}, {len(done.failed)} not fetched")
    sys.exit(1 if done.failed else 0)


@main.command("jobset")
@click.argument("packages", nargs=-1)
@common_options
@click.option(
    "--nixtest",
    "nixtest_command",
    default=None,
    envvar="NIXTEST_NIXTEST",
    metavar="PATH",
    help="the nixtest command the jobs run [default: this nixtest]",
)
@click.option(
    "-o",
    "--output",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="write the jobset to FILE (its paths relative to FILE's folder) instead of printing it",
)
def jobset(
    packages: tuple[str, ...],
    set_spec: str,
    tests_dir: Path,
    out: Path,
    state: Path | None,
    nixtest_command: str | None,
    output: Path | None,
) -> None:
    """Print a Hydra jobset (release.nix) for --set nix:FILE: one job per package test.

    The job `<package>.<test>` (e.g. tools.sed.substitute) builds `nixtest run
    PKG::TEST` into its output, a Hydra-ready OUT folder.  See
    docs/nix-and-hydra.md.
    """
    from nixtest.jobset import jobset_for

    warnings: list[str] = []
    try:
        text = jobset_for(set_spec, tests_dir, packages, nixtest_command, output, warnings)
    except NixtestError as exc:
        _fail_usage(exc)
    for warning in warnings:
        click.echo(f"nixtest jobset: warning: {warning}", err=True)
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        click.echo(f"nixtest jobset: wrote {output}", err=True)


# --- end of nixtest jobset ---------------------------------------------------------


if __name__ == "__main__":
    main()
