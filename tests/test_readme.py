"""The README's commands are the ones a new user runs; CI must run the second, exactly.

The third, a normal user's install, is run as `nobody` by tests/test_normal_user.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```sh\n(.*?)\n```", text, re.DOTALL)


def test_readme_has_the_three_commands() -> None:
    commands = readme_commands()
    assert len(commands) == 3, commands
    run, test, user = commands
    assert run.endswith("/opt/nixtest/bin/nixtest run")
    assert test.endswith("/opt/nixtest/bin/pytest")
    # the normal user's way: no root, no apt-get, nothing outside the home folder
    assert user.endswith("/bin/nixtest run") and user.startswith("python3 -m venv ~/")
    assert "apt-get" not in user and "/opt/" not in user and "sudo" not in user


def test_ci_runs_the_readme_test_command_exactly() -> None:
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert readme_commands()[1] in ci_lines


def test_ci_fails_on_no_tests() -> None:
    text = (ROOT / ".ci" / "run").read_text()
    assert re.search(r'if \[ "\$rc" -eq 5 \]; then.*?exit 1', text, re.DOTALL)


# -- .ci/run: the skip count, and no skip that is not expected -------------------

CHECK_SKIPS = ROOT / ".ci" / "check-skips"
EXPECTED_SKIPS = ROOT / ".ci" / "expected-skips"


def test_ci_sets_ci_and_checks_the_skips_of_the_readme_run() -> None:
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    readme_run = lines.index(readme_commands()[1])
    before, after = lines[:readme_run], lines[readme_run + 1 :]
    assert "export CI=true" in before
    assert any(line.startswith("export NIXTEST_SUITE_OUTCOMES=") for line in before)
    assert any(".ci/check-skips" in line and ".ci/expected-skips" in line for line in after)


def run_suite(pytester: pytest.Pytester, tests: str, expected: str = "") -> subprocess.CompletedProcess[str]:
    """A pytest run under the checkout's conftest.py, then `.ci/check-skips` on what it recorded."""
    pytester.makeconftest((ROOT / "conftest.py").read_text())
    pytester.makepyfile(test_ci=tests)
    outcomes = pytester.path / "outcomes.jsonl"
    expected_file = pytester.path / "expected-skips"
    expected_file.write_text("# the skips CI accepts\n" + expected)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    env["NIXTEST_SUITE_OUTCOMES"] = str(outcomes)
    subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"],
        cwd=pytester.path,
        env=env,
        capture_output=True,
        timeout=120,
    )
    return subprocess.run(
        [sys.executable, str(CHECK_SKIPS), str(outcomes), str(expected_file)],
        capture_output=True,
        text=True,
        timeout=60,
    )


PASSING = "def test_a():\n    pass\n\ndef test_b():\n    pass\n"
SKIPPING = PASSING + "\nimport pytest\n\n@pytest.mark.tools('no-such-tool-77ab')\ndef test_c():\n    pass\n"


def test_check_skips_prints_the_counts(pytester: pytest.Pytester) -> None:
    done = run_suite(pytester, PASSING)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["CI: 2 passed, 0 skipped"]


def test_check_skips_fails_on_a_skip_not_expected(pytester: pytest.Pytester) -> None:
    done = run_suite(pytester, SKIPPING)
    assert done.returncode == 1
    assert done.stdout.splitlines() == ["CI: 2 passed, 1 skipped"]
    assert "CI: unexpected skip: test_ci.py::test_c: needs no-such-tool-77ab not on PATH" in done.stderr


def test_check_skips_lists_an_expected_skip_with_its_reason(pytester: pytest.Pytester) -> None:
    done = run_suite(pytester, SKIPPING, "test_ci.py::test_c\tneeds no-such-tool-77ab not on PATH\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "CI: 2 passed, 1 skipped",
        "CI: expected skip: test_ci.py::test_c: needs no-such-tool-77ab not on PATH",
    ]
    # the same test skipped for another reason is not the expected skip
    done = run_suite(pytester, SKIPPING, "test_ci.py::test_c\tneeds something else\n")
    assert done.returncode == 1 and "unexpected skip: test_ci.py::test_c" in done.stderr


def test_check_skips_without_outcomes_fails(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(CHECK_SKIPS), str(tmp_path / "none.jsonl"), str(EXPECTED_SKIPS)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and "no test outcomes were recorded" in done.stderr
