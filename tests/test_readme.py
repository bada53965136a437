"""The README's commands are the ones a new user runs; CI must run the second, exactly.

The third, a normal user's install, is run as `nobody` by tests/test_normal_user.py.
"""

from __future__ import annotations

import re
from pathlib import Path

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
