"""What `nixtest run` says on the terminal: a true header, progress on a cold run,
and a "to debug" line that the wrapper accepts."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pexpect

from conftest import Suite, needs_dpkg, nixtest_command

TESTS = """\
tests:
  greets:
    run: hello
  wrong:
    run: hello -g bonjour
    expect: {stdout: '^Hallo$'}
  tools:
    run: ls
    profile: [hello, coreutils]
    symlinks: {more: [coreutils, diffutils]}
"""


def nixtest_run(suite: Suite, state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        nixtest_command(
            "run", "--tests", str(suite.tests), "--out", str(suite.out), "--state", str(state), *args
        ),
        cwd=suite.root,
        capture_output=True,
        text=True,
        timeout=300,
    )


@needs_dpkg
def test_the_header_names_what_the_run_uses_and_nothing_false(suite: Suite) -> None:
    suite.package("hello", TESTS)
    state = suite.root / "state"
    done = nixtest_run(suite, state)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    # pytest's header would say "configfile: ../../dev/null": nixtest passes -c /dev/null
    assert not [line for line in lines if "devnull" in line or "/dev/null" in line], lines[:8]
    assert not [line for line in lines if line.startswith(("configfile:", "rootdir:", "cachedir:"))]
    header = lines[1]
    assert header.startswith("nixtest 0.1.0 (pytest "), lines[:4]
    assert f"package set host, output {suite.out}, state {state}" in header


@needs_dpkg
def test_a_cold_run_says_which_profiles_it_builds_and_a_warm_run_is_quiet(suite: Suite) -> None:
    suite.package("hello", TESTS)
    state = suite.root / "state"
    cold = nixtest_run(suite, state).stdout.splitlines()
    # hello; coreutils+hello; coreutils+diffutils: three distinct profiles
    assert f"nixtest: 3 profiles to build; later runs reuse them from {state}" in cold, cold[:8]
    ready = [line for line in cold if line.startswith("nixtest: 3 profiles ready in ")]
    assert len(ready) == 1, cold[:8]
    # the phase comes before the first test's progress line
    assert cold.index(ready[0]) < next(i for i, line in enumerate(cold) if line.startswith("pt/hello "))
    assert len(list((state / "profiles").iterdir())) == 3
    warm = nixtest_run(suite, state).stdout
    assert "profiles to build" not in warm and "profile to build" not in warm


@needs_dpkg
def test_on_a_terminal_the_profile_being_built_is_shown_in_place(suite: Suite) -> None:
    suite.package("hello", TESTS)
    state = suite.root / "state"
    argv = nixtest_command("run", "--tests", str(suite.tests), "--out", str(suite.out), "--state", str(state))
    child = pexpect.spawn(argv[0], argv[1:], cwd=str(suite.root), encoding="utf-8", timeout=120)
    child.expect(r"\rnixtest: profile 1 of 3: hello ")
    child.expect(r"\rnixtest: profile 3 of 3: coreutils\+diffutils ")
    child.expect(r"\rnixtest: 3 profiles ready in [0-9.]+ s *\r?\n")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1


@needs_dpkg
def test_the_debug_line_of_a_run_test_offers_a_shell_that_works(suite: Suite) -> None:
    suite.package("hello", TESTS)
    done = nixtest_run(suite, suite.root / "state", "hello::wrong")
    wrapper = suite.wrapper("hello", "wrong")
    assert f"    to debug: {wrapper} --shell" in done.stdout.splitlines(), done.stdout
    assert "--ipdb" not in done.stdout
    # what the line offers, run as it says: the shell is in the test's environment
    shell = subprocess.run(
        [str(wrapper), "--shell"],
        input='echo "profile=$PATH"; exit 7\n',
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        env={"PATH": os.defpath},
    )
    assert shell.returncode == 7, shell.stderr
    assert "profile=" in shell.stdout and "/profiles/" in shell.stdout
