"""What a run says before its first test: its own header, and the profiles it builds.

A cold run (a new state folder, a new set, new package versions) builds the
profile of every test before the test can start; with `--set nix:FILE` each is
a `nix-build`.  Done lazily, in each test's setup, that is a long silence
after "collected N items".  So the run builds the new profiles first, as a
phase of its own that says how many and which one it is at.

Reports go through `Say`: on a terminal a transient line is rewritten in
place; in a log (CI) only the final lines are written, so the log stays short.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import platform
import sys
import time
from collections.abc import Iterable
from typing import Any, Protocol

from nixtest.definitions import Definition, TestDef
from nixtest.errors import NixtestError
from nixtest.profiles import profile_built
from nixtest.runner import Context

#: threads building profiles at once: two per CPU keep the filesystem busy while one
#: thread holds the interpreter to plan the next profile
BUILD_THREADS = 2 * len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 4


class Say(Protocol):
    def __call__(self, text: str, final: bool) -> None: ...


def header(ctx: Context) -> str:
    """`nixtest run`'s header line, in place of pytest's (its config file would be /dev/null)."""
    import pytest

    from nixtest import __version__

    return (
        f"nixtest {__version__} (pytest {pytest.__version__}, Python {platform.python_version()}): "
        f"package set {ctx.set_spec}, output {ctx.out}, state {ctx.state}"
    )


def profiles_of(definitions: Iterable[Definition]) -> list[tuple[str, ...]]:
    """Every distinct package list the tests need a profile of, in the order of the tests."""
    wanted: list[tuple[str, ...]] = []
    for definition in definitions:
        if not isinstance(definition, TestDef) or definition.autopkgtest is not None:
            continue  # an autopkgtest's profile is its Depends closure, known only in its setup
        lists = [definition.profile, *(link.packages for link in definition.symlinks if link.path is None)]
        for packages in lists:
            key = tuple(sorted(set(packages)))
            if key not in wanted:
                wanted.append(key)
    return wanted


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def build_profiles(definitions: Iterable[Definition], ctx: Context, say: Say) -> int:
    """Builds the profiles the tests need that are not in the state folder yet; returns how many.

    A profile that cannot be built is left to the tests that need it: their
    setup tries again and reports the error as theirs.
    """
    wanted = profiles_of(definitions)
    if not wanted:
        return 0
    say(f"nixtest: reading the package set {ctx.set_spec}", False)
    try:
        pset = ctx.pset
    except NixtestError:
        say("", False)
        return 0  # every test reports the set's error
    new: list[tuple[str, ...]] = []
    unsure = False
    for packages in wanted:
        try:
            built = profile_built(pset, packages, ctx.state)
        except NixtestError:
            continue  # a package the set lacks: its tests say which
        if built is None:
            unsure = True
        if not built:
            new.append(packages)
    if not new:
        say("", False)
        return 0
    what = "to build or check (nix-build)" if unsure else "to build"
    say(f"nixtest: {_plural(len(new), 'profile')} {what}; later runs reuse them from {ctx.state}", True)
    start = time.monotonic()
    # Our own builds run side by side: a build waits on the filesystem for most
    # of its time (a symlink or a folder at a time), and a thread waiting in a
    # system call lets the others run.  A set that builds its own profiles
    # (nix-build) is left to build them one at a time.
    workers = 1 if unsure else min(BUILD_THREADS, len(new))
    pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="nixtest-profile")
    try:
        futures = [pool.submit(_build, ctx, packages) for packages in new]
        # said in the tests' order as each is waited for: the line shows what holds the run up
        for n, (packages, future) in enumerate(zip(new, futures), 1):
            say(f"nixtest: profile {n} of {len(new)}: {'+'.join(packages) or '(empty)'}", False)
            future.result()
    finally:
        # on Ctrl-C, the builds not started are dropped; those under way end (a few ms)
        pool.shutdown(wait=True, cancel_futures=True)
    say(f"nixtest: {_plural(len(new), 'profile')} ready in {time.monotonic() - start:.1f} s", True)
    return len(new)


def _build(ctx: Context, packages: tuple[str, ...]) -> None:
    with contextlib.suppress(NixtestError, OSError):  # the tests that need it report it
        ctx.profile(packages)


def terminal_say(config: Any) -> Say:
    """A `Say` writing through pytest's terminal reporter, outside any capture."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capman = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return lambda text, final: None
    isatty = getattr(reporter, "isatty", False)
    tty = bool(isatty() if callable(isatty) else isatty)

    def say(text: str, final: bool) -> None:
        if not tty and not final:
            return
        if capman is not None:
            with capman.global_and_fixture_disabled():
                _write(text, final)
        else:
            _write(text, final)

    def _write(text: str, final: bool) -> None:
        if tty:
            reporter.rewrite(text, erase=True)
            # a final line stays; a cleared one leaves the cursor where it began
            reporter.write("\n" if final else "" if text else "\r")
        else:
            reporter.write_line(text)
        sys.stdout.flush()

    return say
