"""The `nixtest` command: a shell front end to pytest with the nixtest plugin."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from nixtest.definitions import DEFINITIONS_FILE
from nixtest.errors import NixtestError, UsageError

F = TypeVar("F", bound=Callable[..., Any])

#: pytest's exit codes, which nixtest keeps
EXIT_USAGE = 4


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
        click.option(
            "--out",
            "out",
            default="nixtest-out",
            envvar="NIXTEST_OUT",
            show_default=True,
            type=click.Path(file_okay=False, path_type=Path),
            help="output folder: reports, logs, wrappers",
        ),
        click.option(
            "--state",
            "state",
            default=None,
            envvar="NIXTEST_STATE",
            type=click.Path(file_okay=False, path_type=Path),
            help="state folder for profiles [default: XDG cache]",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def run_options(func: F) -> F:
    options = [
        click.option(
            "-j",
            "--jobs",
            default="1",
            envvar="NIXTEST_JOBS",
            show_default=True,
            metavar="N",
            help="tests run in parallel (a number, or 'auto')",
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
            type=float,
            metavar="S",
            help="timeout of tests that set none [default: 600]",
        ),
        click.option("-v", "--verbose", count=True, help="more output"),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="nixtest")
def main() -> None:
    """Test a package set one package at a time."""


def selection_paths(tests_dir: Path, selection: tuple[str, ...]) -> list[str]:
    """`PKG` and `PKG::TEST` as the paths pytest collects."""
    if not tests_dir.is_dir():
        raise UsageError(f"no test definitions: {tests_dir} is not a folder (see --tests)")
    if not selection:
        return [str(tests_dir)]
    paths = []
    for item in selection:
        package, sep, test = item.partition("::")
        if not package or "/" in package or (sep and not test):
            raise UsageError(f"not a package or PKG::TEST: {item!r}")
        if not (tests_dir / package / DEFINITIONS_FILE).is_file():
            raise UsageError(
                f"no tests for package {package!r}: {tests_dir / package / DEFINITIONS_FILE} does not exist"
            )
        paths.append(str(tests_dir / package) + (f"::{test}" if sep else ""))
    return paths


def pytest_args(
    paths: list[str],
    *,
    set_spec: str,
    out: Path,
    state: Path | None,
    jobs: str = "1",
    keyword: str | None = None,
    timeout: float | None = None,
    verbose: int = 0,
    extra: tuple[str, ...] = (),
) -> list[str]:
    args = [*paths, "--nixtest-set", set_spec, "--nixtest-out", str(out), "-rfEs"]
    # nixtest's own run, not the project's pytest configuration
    args += ["-c", os.devnull, "--rootdir", os.getcwd()]
    if state is not None:
        args += ["--nixtest-state", str(state)]
    if timeout is not None:
        args += ["--nixtest-timeout", str(timeout)]
    if keyword:
        args += ["-k", keyword]
    if jobs not in ("1", "0"):
        if jobs != "auto" and not jobs.isdigit():
            raise UsageError(f"-j takes a number or 'auto', got {jobs!r}")
        args += ["-n", jobs]
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
@click.argument("selection", nargs=-1, type=click.UNPROCESSED)
@common_options
@run_options
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
) -> None:
    """Run package tests: all, those of PKG, or PKG::TEST.

    Arguments starting with '-' that nixtest does not know go to pytest
    (e.g. `nixtest run -- --lf -x`).  The exit code is pytest's: 0 all
    passed, 1 some failed, 2 interrupted, 3 internal error, 4 usage error,
    5 no tests.
    """
    names = tuple(s for s in selection if not s.startswith("-"))
    extra = tuple(s for s in selection if s.startswith("-"))
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
            extra=extra,
        )
    except NixtestError as exc:
        _fail_usage(exc)
    sys.exit(run_pytest(args))


@main.command("list")
@click.argument("packages", nargs=-1)
@common_options
def list_(packages: tuple[str, ...], set_spec: str, tests_dir: Path, out: Path, state: Path | None) -> None:
    """List packages and their tests."""
    from nixtest.definitions import BadTest, find_packages, load_package

    folders = find_packages(tests_dir)
    if packages:
        wanted = set(packages)
        folders = [f for f in folders if f.name in wanted]
        missing = wanted - {f.name for f in folders}
        if missing:
            _fail_usage(UsageError(f"no tests for package(s): {', '.join(sorted(missing))}"))
    for folder in folders:
        for definition in load_package(folder):
            note = f"  (error: {definition.error.message})" if isinstance(definition, BadTest) else ""
            click.echo(f"{definition.nodeid}{note}")


if __name__ == "__main__":
    main()
