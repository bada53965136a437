"""The README's two commands are the ones a new user runs; CI must run the second, exactly."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```sh\n(.*?)\n```", text, re.DOTALL)


def test_readme_has_the_two_commands() -> None:
    commands = readme_commands()
    assert len(commands) == 2, commands
    run, test = commands
    assert run.endswith("/opt/nixtest/bin/nixtest run")
    assert test.endswith("/opt/nixtest/bin/pytest")


def test_ci_runs_the_readme_test_command_exactly() -> None:
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert readme_commands()[1] in ci_lines


def test_ci_fails_on_no_tests() -> None:
    text = (ROOT / ".ci" / "run").read_text()
    assert re.search(r'if \[ "\$rc" -eq 5 \]; then.*?exit 1', text, re.DOTALL)
