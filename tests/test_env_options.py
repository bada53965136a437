"""NIXTEST_TESTS, NIXTEST_SET, NIXTEST_TIMEOUT and NIXTEST_JOBS, run for real.

DESIGN: every option also reads `NIXTEST_<OPTION>` from the environment.
Each variable here is given to a real `nixtest run` and checked by what the
run did, not by the arguments it built: which tests ran, from which package
set, when a test was stopped, and whether two tests ran at the same time.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from conftest import Suite, junit_outcomes, nixtest_command

#: seconds a whole run may take
RUN_TIMEOUT = 300


def nixtest_run(suite: Suite, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`nixtest run ARGS` from the suite's root, with the NIXTEST_ variables in `env` and no others."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NIXTEST_") or k == "NIXTEST_STATE"}
    return subprocess.run(
        nixtest_command("run", *args),
        cwd=suite.root,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )


def output_of(done: subprocess.CompletedProcess[str]) -> str:
    return (done.stdout + done.stderr)[-4000:]


def make_prefix_set(suite: Suite) -> Path:
    """A prefix set with one package, `greeter`, whose bin/greet prints a greeting."""
    prefix = suite.root / "greeter-1.0"
    (prefix / "bin").mkdir(parents=True)
    greet = prefix / "bin" / "greet"
    greet.write_text("#!/bin/sh\necho hello from the prefix\n")
    greet.chmod(0o755)
    for folder in (prefix, prefix / "bin"):
        folder.chmod(0o755)
    set_file = suite.root / "set.yaml"
    set_file.write_text(f"greeter: {{prefix: {prefix}, version: '1.0'}}\n")
    set_file.chmod(0o644)
    return set_file


def test_nixtest_tests_and_nixtest_set(suite: Suite) -> None:
    suite.package(
        "greeter", "tests:\n  greets:\n    run: greet\n    expect: {stdout: '^hello from the prefix$'}\n"
    )
    set_file = make_prefix_set(suite)
    out = suite.root / "env-out"

    # the tests folder and the package set both from the environment; the run starts elsewhere
    done = nixtest_run(
        suite, "--out", str(out), NIXTEST_TESTS=str(suite.tests), NIXTEST_SET=f"prefix:{set_file}"
    )
    assert done.returncode == 0, output_of(done)
    assert junit_outcomes(out) == {"greeter::greets": ("passed", "")}

    # without NIXTEST_SET, the host set: it has no package greeter
    done = nixtest_run(suite, "--out", str(out), NIXTEST_TESTS=str(suite.tests))
    assert done.returncode == 1, output_of(done)
    outcome, message = junit_outcomes(out)["greeter::greets"]
    assert outcome == "error" and "package 'greeter' is not in the package set 'host'" in message

    # without NIXTEST_TESTS, the default folder package_tests/ of the current folder: there is none
    done = nixtest_run(suite, "--out", str(out), NIXTEST_SET=f"prefix:{set_file}")
    assert done.returncode == 4, output_of(done)
    assert "package_tests" in done.stderr

    # an option on the command line wins over its variable
    done = nixtest_run(
        suite,
        "--out",
        str(out),
        "--set",
        "host",
        NIXTEST_TESTS=str(suite.tests),
        NIXTEST_SET=f"prefix:{set_file}",
    )
    assert done.returncode == 1 and junit_outcomes(out)["greeter::greets"][0] == "error", output_of(done)


@pytest.mark.dpkg
def test_nixtest_timeout_stops_a_test(suite: Suite) -> None:
    # no timeout of its own: the run's (default 600 s) applies
    suite.package("coreutils", "tests:\n  naps:\n    run: echo going to sleep; sleep 120\n")
    started = time.monotonic()
    done = nixtest_run(suite, "--tests", str(suite.tests), "--out", str(suite.out), NIXTEST_TIMEOUT="2")
    took = time.monotonic() - started
    assert done.returncode == 1, output_of(done)
    outcome, message = junit_outcomes(suite.out)["coreutils::naps"]
    assert outcome == "failed" and "timed out after 2 seconds" in message, message
    assert took < 100, f"the run took {took:.0f} s: the test was not stopped"
    assert "timed out after 2 seconds" in suite.log("coreutils", "naps").read_text()


# Two tests that each wait for the other to have started: both pass only if
# they run at the same time, however the parallel runs are scheduled.
RENDEZVOUS = """\
tests:
  one:
    run: >-
      touch "$MEET/one"; n=0;
      while [ ! -e "$MEET/two" ]; do n=$((n+1)); [ $n -le {ticks} ] || exit 1; sleep 0.1; done;
      echo met two
    environment: {{MEET: {meet}}}
  two:
    run: >-
      touch "$MEET/two"; n=0;
      while [ ! -e "$MEET/one" ]; do n=$((n+1)); [ $n -le {ticks} ] || exit 1; sleep 0.1; done;
      echo met one
    environment: {{MEET: {meet}}}
"""


def rendezvous(suite: Suite, seconds: int) -> Path:
    meet = suite.root / f"meet-{seconds}"
    meet.mkdir(mode=0o777)
    meet.chmod(0o777)
    suite.package("coreutils", RENDEZVOUS.format(ticks=seconds * 10, meet=meet))
    return meet


@pytest.mark.dpkg
def test_nixtest_jobs_runs_tests_at_the_same_time(suite: Suite) -> None:
    # NIXTEST_JOBS=2: the two tests meet (each waits up to 120 s for the other, for a loaded machine)
    rendezvous(suite, 120)
    done = nixtest_run(suite, "--tests", str(suite.tests), "--out", str(suite.out), NIXTEST_JOBS="2")
    assert done.returncode == 0, output_of(done)
    assert junit_outcomes(suite.out) == {"coreutils::one": ("passed", ""), "coreutils::two": ("passed", "")}

    # NIXTEST_JOBS=1: one at a time, so the first one waits in vain (3 s), the second finds it started
    rendezvous(suite, 3)
    done = nixtest_run(suite, "--tests", str(suite.tests), "--out", str(suite.out), NIXTEST_JOBS="1")
    assert done.returncode == 1, output_of(done)
    outcomes = sorted(outcome for outcome, _ in junit_outcomes(suite.out).values())
    assert outcomes == ["failed", "passed"], junit_outcomes(suite.out)
