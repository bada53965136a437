"""Shared fixtures of nixtest's own test suite.

The markers for tests that need a real part of the machine (nix, chromium,
root, dpkg...) are in the checkout's top-level conftest.py.

Every test gets `NIXTEST_STATE` pointing at a temporary, world-readable state
folder (shared by the session, so that profiles are built once), so that no
test touches the default state folder.  Package test trees that a wrapper may
read as another user live in world-readable folders under /tmp: pytest's own
`tmp_path` is below /tmp/pytest-of-root, which is private.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

#: the same as `@pytest.mark.dpkg` (the checkout's conftest.py): kept for the tests that import it
needs_dpkg = pytest.mark.dpkg


def world_readable_dir(prefix: str) -> Path:
    """A new folder under /tmp that any user can read and enter."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(path, 0o755)
    return path


def remove_tree(path: Path) -> None:
    """`rm -rf`, also of read-only folders a test made."""
    if not os.path.lexists(path):
        return
    for folder, _, _ in os.walk(path):
        os.chmod(folder, 0o755)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def shared_state() -> Iterator[Path]:
    state = world_readable_dir("nixtest-state-")
    yield state
    remove_tree(state)


@pytest.fixture(autouse=True)
def nixtest_state(shared_state: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """NIXTEST_STATE for this test: a temporary folder, never the default one.

    The state folder (and so the run history) is shared by the whole session:
    the cache is off unless a test asks for it (tests/test_history*.py do, each
    with a state folder of its own), so that a test's runs really run.
    """
    monkeypatch.setenv("NIXTEST_STATE", str(shared_state))
    monkeypatch.setenv("NIXTEST_NO_CACHE", "1")
    return shared_state


class Suite:
    """A package test tree (`pt/<package>/tests.yaml`) and an output folder, world-readable."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tests = root / "pt"
        self.out = root / "out"
        self.tests.mkdir(mode=0o755)

    def package(self, name: str, tests_yaml: str, files: dict[str, str | bytes] | None = None) -> Path:
        """Writes `pt/<name>/tests.yaml` (dedented) and the other `files` (relative paths)."""
        folder = self.tests / name
        folder.mkdir(exist_ok=True)
        (folder / "tests.yaml").write_text(textwrap.dedent(tests_yaml), encoding="utf-8")
        for rel, content in (files or {}).items():
            path = folder / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(textwrap.dedent(content), encoding="utf-8")
        # readable by the user a wrapper may run as, whatever the umask
        for path in [folder, *folder.rglob("*")]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        return folder

    def wrapper(self, package: str, test: str) -> Path:
        return self.out / "rerun" / package / test

    def log(self, package: str, test: str) -> Path:
        return self.out / "logs" / package / f"{test}.log"

    def out_files(self) -> list[Path]:
        return sorted(p for p in self.out.rglob("*") if p.is_file())


@pytest.fixture
def suite() -> Iterator[Suite]:
    root = world_readable_dir("nixtest-suite-")
    yield Suite(root)
    remove_tree(root)


def nixtest_command(*args: str) -> list[str]:
    """The `nixtest` command line, run by this interpreter."""
    return [sys.executable, "-m", "nixtest.cli", *args]


def is_executable(path: Path) -> bool:
    return path.is_file() and bool(path.stat().st_mode & stat.S_IXOTH)


def pids_matching(marker: str) -> list[int]:
    """Live processes whose command line contains `marker` (like `pgrep -f`), zombies excluded."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = (
                Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            )
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        if marker in cmdline and "\nState:\tZ" not in status:
            found.append(int(entry))
    return found


def pgrep(marker: str) -> list[str]:
    """`pgrep -f marker`: the real tool, as a second opinion."""
    done = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True)
    return done.stdout.split()


def junit_outcomes(out: Path) -> dict[str, tuple[str, str]]:
    """`package::test` -> (passed/failed/error/skipped, message) from OUT/junit.xml."""
    results = {}
    for suite in ET.parse(out / "junit.xml").getroot().iter("testsuite"):
        for case in suite.iter("testcase"):
            outcome, message = "passed", ""
            for tag, name in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
                element = case.find(tag)
                if element is not None:
                    outcome, message = name, element.get("message") or element.text or ""
            results[f"{suite.get('name')}::{case.get('name')}"] = (outcome, message)
    return results
