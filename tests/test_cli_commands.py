"""`nixtest show`, `nixtest list` and `nixtest rerun`, run as the real command."""

from __future__ import annotations

import os
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import Suite, nixtest_command

# the tests use the host packages hello and coreutils
pytestmark = pytest.mark.tools("hello", "ls")

SECRET = "show-must-not-print-9c1f"


def nixtest(
    suite: Suite, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        nixtest_command(*args),
        capture_output=True,
        text=True,
        timeout=180,
        cwd=cwd or suite.root,
        env=dict(os.environ, **(env or {})),
    )


# -- show ---------------------------------------------------------------------------


def test_show_prints_the_resolved_test_and_no_secret_value(suite: Suite) -> None:
    suite.package(
        "hello",
        """\
        tests:
          greet:
            script: greet.py
            profile: [hello]
            environment: {GREETING: "Hi there", LEVEL: 3}
            secrets: [API_TOKEN, UNSET_TOKEN]
            skel: skel/
            sources: {src: upstream/}
            symlinks: {tools: [coreutils], data: upstream/data.txt}
            timeout: 42
        """,
        {"greet.py": "print('hi')\n", "skel/a.txt": "a\n", "upstream/data.txt": "d\n"},
    )
    done = nixtest(
        suite, "show", "--tests", str(suite.tests), "--out", str(suite.out), "hello::greet",
        env={"API_TOKEN": SECRET},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert SECRET not in text + done.stderr
    lines = [line.strip() for line in text.splitlines()]
    assert lines[0] == "hello::greet"
    assert "kind:        classic nixtest script" in lines
    assert "timeout:     42 s (its own)" in lines
    assert "packages:    hello" in lines
    wrapper = suite.wrapper("hello", "greet")
    assert f"path:        {wrapper}" in lines and wrapper.is_file()
    profile = next(line.split()[-1] for line in lines if line.startswith("path:") and "/profiles/" in line)
    assert Path(profile, "bin", "hello").exists()
    assert f"PATH={profile}/bin" in lines
    assert f"LD_LIBRARY_PATH={profile}/lib" in lines
    assert "GREETING=Hi there" in lines and "LEVEL=3" in lines
    assert "HOME=<working directory>" in lines
    assert any(
        line.startswith("API_TOKEN  (a secret") and "now set in your environment" in line for line in lines
    )
    assert any(line.startswith("UNSET_TOKEN  (a secret") and "NOT set" in line for line in lines)
    assert any(
        line.startswith("skel:") and line.endswith("hello/skel/ copied to be the working directory")
        for line in lines
    )
    assert any(
        line.startswith("source:") and "src <- " in line and "(copied, writable)" in line for line in lines
    )
    assert f"symlink:     profile -> {profile}" in lines
    tools = next(line for line in lines if line.startswith("symlink:     tools -> "))
    assert tools.endswith("(a profile of coreutils)") and "/profiles/" in tools
    assert any(
        line.startswith("symlink:     data -> ") and line.endswith("upstream/data.txt") for line in lines
    )
    assert f"to debug: {wrapper} --ipdb" in lines


def test_show_of_a_broken_or_unknown_test(suite: Suite) -> None:
    suite.package("hello", "tests:\n  broken:\n    run: hello\n    colour: blue\n")
    base = ["show", "--tests", str(suite.tests), "--out", str(suite.out)]
    done = nixtest(suite, *base, "hello::broken")
    assert done.returncode == 1
    assert "test 'broken': key 'colour': unknown key" in done.stderr
    done = nixtest(suite, *base, "hello::missing")
    assert done.returncode == 4
    assert "package 'hello' has no test 'missing'" in done.stderr
    done = nixtest(suite, *base, "hello")
    assert done.returncode == 4
    assert "not a PKG::TEST name: 'hello'" in done.stderr


# -- list ---------------------------------------------------------------------------


def big_prefix_set(root: Path, count: int) -> Path:
    """A `prefix:` set of `count` packages, pkg00000..., all in one empty prefix."""
    prefix = root / "prefix"
    prefix.mkdir()
    lines = [f"pkg{i:05d}: {prefix}" for i in range(count)]
    path = root / "set.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_list_shows_tests_and_counts_untested_packages_of_a_large_set(suite: Suite) -> None:
    count = 10_000
    set_file = big_prefix_set(suite.root, count)
    suite.package("pkg00042", "tests:\n  version:\n    run: echo ok\n  broken:\n    scirpt: x.py\n")
    suite.package("notinset", "tests:\n  smoke:\n    run: echo ok\n")
    args = ["list", "--set", f"prefix:{set_file}", "--tests", str(suite.tests)]
    start = time.monotonic()
    done = nixtest(suite, *args)
    elapsed = time.monotonic() - start
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "notinset  (1 test)  (not in the package set)" in lines
    assert "pkg00042  (2 tests)" in lines
    assert any(line.split() == ["pkg00042::version", "run:", "echo", "ok"] for line in lines)
    assert any(line.strip().startswith("pkg00042::broken") and "error:" in line for line in lines)
    assert f"packages without tests: {count - 1} of {count} in the package set prefix:{set_file}:" in lines
    untested = " ".join(
        lines[lines.index(next(x for x in lines if x.startswith("packages without"))) + 1 : -1]
    )
    names = untested.split()
    assert len(names) == count - 1 and "pkg00042" not in names and names[0] == "pkg00000"
    assert lines[-1] == f"3 tests in 2 package(s); {count - 1} untested package(s) of {count} in the set"
    assert elapsed < 15, f"nixtest list took {elapsed:.1f} s for a set of {count} packages"

    # named packages: their tests, and those of them without tests
    done = nixtest(suite, *args, "pkg00042", "pkg00007")
    assert done.returncode == 0, done.stderr
    assert "pkg00042  (2 tests)" in done.stdout and "notinset" not in done.stdout
    assert f"packages without tests: 1 of {count} in the package set prefix:{set_file}:" in done.stdout
    assert "\n  pkg00007\n" in done.stdout

    done = nixtest(suite, *args, "nosuchpackage")
    assert done.returncode == 4
    assert "no tests for package(s) and not in the package set: nosuchpackage" in done.stderr


def test_list_still_lists_tests_when_the_set_cannot_be_read(suite: Suite) -> None:
    suite.package("hello", "tests:\n  version:\n    run: hello --version\n")
    done = nixtest(suite, "list", "--set", "prefix:/nonexistent.yaml", "--tests", str(suite.tests))
    assert done.returncode == 0, done.stderr
    assert "hello::version" in done.stdout
    assert "untested packages: unknown: the package set could not be read" in done.stdout


# -- rerun --------------------------------------------------------------------------

RERUN_TESTS = """\
tests:
  greets:
    run: hello
  wrong:
    run: test -e fixed
    profile: [coreutils]
    skel: skel/
  versions:
    run: hello --version
"""


def test_rerun_runs_exactly_what_failed_with_the_same_options(suite: Suite) -> None:
    suite.package("hello", RERUN_TESTS, {"skel/.keep": ""})
    suite.package("coreutils", "tests:\n  naps:\n    run: sleep 4\n  listing:\n    run: ls /\n")
    out = ["--out", str(suite.out)]
    # --timeout 2 fails coreutils::naps, which sets no timeout of its own
    first = nixtest(suite, "run", "--tests", "pt", *out, "--timeout", "2", "-k", "not listing")
    assert first.returncode == 1, first.stdout + first.stderr
    assert "2 failed, 2 passed, 1 deselected" in first.stdout

    # from another folder; the run's set, --tests, -k and --timeout are kept
    elsewhere = suite.root / "elsewhere"
    elsewhere.mkdir()
    done = nixtest(suite, "rerun", *out, cwd=elsewhere)
    assert done.returncode == 1, done.stdout + done.stderr
    said = "nixtest: running again 2 tests that failed in the last run: coreutils::naps, hello::wrong"
    assert said in done.stdout
    assert "2 failed, 3 deselected" in done.stdout
    assert "coreutils::naps failed: timed out after 2 seconds" in done.stdout
    cases = {c.get("name") for c in ET.parse(suite.out / "junit.xml").getroot().iter("testcase")}
    assert cases == {"naps", "wrong"}

    # fix one: the next rerun runs both, the one after only the other
    (suite.tests / "hello" / "skel" / "fixed").write_text("")
    done = nixtest(suite, "rerun", *out)
    assert "1 failed, 1 passed, 3 deselected" in done.stdout, done.stdout
    done = nixtest(suite, "rerun", *out)
    assert "running again 1 test that failed in the last run: coreutils::naps" in done.stdout
    assert "1 failed, 4 deselected" in done.stdout

    suite.package("coreutils", "tests:\n  naps:\n    run: sleep 1\n  listing:\n    run: ls /\n")
    done = nixtest(suite, "rerun", *out)
    assert done.returncode == 0 and "1 passed, 4 deselected" in done.stdout
    done = nixtest(suite, "rerun", *out)
    assert done.returncode == 0
    assert (
        done.stdout.strip()
        == f"nixtest: nothing failed in the last run into {suite.out}: nothing to run again"
    )


def test_rerun_without_a_run_and_after_a_clean_run(suite: Suite) -> None:
    suite.package("hello", "tests:\n  greets:\n    run: hello\n")
    out = ["--out", str(suite.out)]
    done = nixtest(suite, "rerun", *out)
    assert done.returncode == 4
    assert f"no run into {suite.out} is known" in done.stderr
    assert nixtest(suite, "run", "--tests", "pt", *out).returncode == 0
    done = nixtest(suite, "rerun", *out)
    assert done.returncode == 0
    assert "nothing failed in the last run" in done.stdout
    # pytest's cache is kept in the state folder, not in the current folder
    assert not (suite.root / ".pytest_cache").exists()
