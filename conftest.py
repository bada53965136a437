"""The checkout's pytest configuration, shared by `tests/` and `bench/`.

Markers for tests that need a real part of the machine:

    @pytest.mark.nix              nix-build, nix-env, nix-store, nix-instantiate on PATH
    @pytest.mark.chromium         a headless Chromium (chromium or chromium-browser)
    @pytest.mark.root             running as root, with runuser to become another user
    @pytest.mark.autopkgtest      Debian's own autopkgtest tool, on a dpkg host
    @pytest.mark.debian_archive   a reachable Debian archive for `apt-get source`
    @pytest.mark.dpkg             a dpkg host: dpkg-query and /var/lib/dpkg/status
    @pytest.mark.reference        ../shared/reference/ (schemas and stylesheets)
    @pytest.mark.tools("a", ...)  these commands on PATH

(`-m "not debian-archive"` is spelled with an underscore in Python,
`pytest.mark.debian_archive`; the marker is registered under both names.)

On a machine without the part, the test is skipped with the reason.  With
`CI=true` in the environment, a missing part fails the test instead: CI never
passes by skipping.  `pytest -m "not nix"` deselects a marker's tests.

The checks run at setup time, not at import, so that a test of this file can
take a part away (an empty PATH, another user).

With `NIXTEST_SUITE_OUTCOMES=FILE`, every test's outcome (and a skip's
reason) is written to FILE as JSON lines; `.ci/run` reads it to fail on a skip
that is not expected.  The variable is removed from the environment at once,
so that a pytest run that a test starts does not write to the same file.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import pytest

CHECKOUT = Path(__file__).resolve().parent


def reference_dir() -> Path:
    """`../shared/reference` beside the checkout: the schemas and stylesheets the reports are checked with.

    `NIXTEST_REFERENCE` names it when the checkout does not sit beside `shared/` (a git worktree).
    """
    override = os.environ.get("NIXTEST_REFERENCE")
    if override:
        return Path(override)
    return CHECKOUT.parent / "shared" / "reference"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def _missing_tools(*tools: str) -> str | None:
    absent = [tool for tool in tools if shutil.which(tool) is None]
    if absent:
        return f"{', '.join(absent)} not on PATH"
    return None


def _no_dpkg() -> str | None:
    if shutil.which("dpkg-query") is None or not os.path.exists("/var/lib/dpkg/status"):
        return "needs a dpkg host: dpkg-query and /var/lib/dpkg/status (Debian, Ubuntu)"
    return None


def _no_nix() -> str | None:
    missing = _missing_tools("nix-build", "nix-env", "nix-store", "nix-instantiate")
    return f"needs Nix: {missing} (Debian: apt-get install nix-bin)" if missing else None


def _no_chromium() -> str | None:
    if shutil.which("chromium") or shutil.which("chromium-browser"):
        return None
    return "needs chromium: not on PATH (Debian: apt-get install chromium)"


def _not_root() -> str | None:
    if os.geteuid() != 0:
        return "needs root (to run wrappers as another user)"
    if shutil.which("runuser") is None:
        return "needs runuser (util-linux) to run as another user"
    return None


def _no_autopkgtest() -> str | None:
    no_dpkg = _no_dpkg()
    if no_dpkg:
        return no_dpkg
    if shutil.which("autopkgtest") is None:
        return "needs Debian's autopkgtest: not on PATH (apt-get install autopkgtest)"
    return None


def _archive_hosts() -> list[tuple[str, int]]:
    """The (host, port) of every http(s) archive in the machine's apt sources."""
    hosts: list[tuple[str, int]] = []
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for source in sources:
        try:
            text = source.read_text(errors="replace")
        except OSError:
            continue
        for word in text.split():
            if word.startswith(("http://", "https://")):
                parts = urlsplit(word)
                if parts.hostname:
                    port = parts.port or (443 if parts.scheme == "https" else 80)
                    if (parts.hostname, port) not in hosts:
                        hosts.append((parts.hostname, port))
    return hosts


@functools.cache
def _archive_unreachable() -> str | None:
    # Asked once per session: a connection attempt costs up to seconds.
    missing = _missing_tools("apt-get", "dpkg-source")
    if missing:
        return f"needs apt-get source: {missing}"
    hosts = [host for host in _archive_hosts() if "debian" in host[0] or "ubuntu" in host[0]]
    if not hosts:
        return "needs a Debian archive: no debian/ubuntu http(s) archive in /etc/apt/sources.list{,.d}"
    for host, port in hosts:
        try:
            with socket.create_connection((host, port), timeout=5):
                return None
        except OSError:
            continue
    named = ", ".join(f"{h}:{p}" for h, p in hosts)
    return f"needs a reachable Debian archive: cannot connect to {named}"


#: what the report checks read from the reference folder
REFERENCE_FILES = [
    "junit/jenkins-xunit-junit-10.xsd",
    "junit/junit5-jenkins-junit.xsd",
    "nixos-test-driver/log2html.xsl",
    "nix/mark-errors.xsl",
    "nix/log2html.xsl",
    "hydra/mark-errors.xsl",
    "hydra/log2html.xsl",
]


def _no_reference() -> str | None:
    reference = reference_dir()
    missing = [name for name in REFERENCE_FILES if not (reference / name).is_file()]
    if missing:
        return f"needs the shared schemas and stylesheets: {reference}/{missing[0]} not found"
    return None


# marker name -> (help line, check returning the reason the part is missing, or None)
REQUIREMENTS: dict[str, tuple[str, Callable[[], str | None]]] = {
    "nix": ("needs the real Nix tools (nix-build...)", _no_nix),
    "chromium": ("needs a headless chromium", _no_chromium),
    "root": ("needs root and runuser (runs things as another user)", _not_root),
    "autopkgtest": ("needs Debian's autopkgtest tool on a dpkg host", _no_autopkgtest),
    "debian-archive": ("needs a reachable Debian archive (apt-get source)", _archive_unreachable),
    "dpkg": ("needs a dpkg host (dpkg-query, /var/lib/dpkg/status)", _no_dpkg),
    "reference": ("needs ../shared/reference (or $NIXTEST_REFERENCE)", _no_reference),
}
# `pytest.mark.debian-archive` is not Python: the underscore spelling is the same marker.
ALIASES = {"debian_archive": "debian-archive"}


def pytest_configure(config: pytest.Config) -> None:
    for name, (help_line, _) in REQUIREMENTS.items():
        config.addinivalue_line("markers", f"{name}: {help_line}; skipped without it, an error with CI=true")
    for alias, name in ALIASES.items():
        config.addinivalue_line("markers", f"{alias}: the same as {name}")
    config.addinivalue_line(
        "markers", "tools(*commands): needs these commands on PATH; skipped without, an error with CI=true"
    )
    outcomes = os.environ.pop("NIXTEST_SUITE_OUTCOMES", None)
    if outcomes:
        config.pluginmanager.register(OutcomeRecorder(Path(outcomes)), "nixtest-suite-outcomes")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        # `-m "not debian-archive"` sees the marker under its name whichever spelling a test used.
        for alias, name in ALIASES.items():
            if item.get_closest_marker(alias) and not item.get_closest_marker(name):
                item.add_marker(name)
        # a test that asks for the `reference` folder needs it, marked or not
        if "reference" in getattr(item, "fixturenames", ()) and not item.get_closest_marker("reference"):
            item.add_marker("reference")


@pytest.fixture(scope="session")
def reference() -> Path:
    """../shared/reference/: the JUnit schemas and the Nix, Hydra and NixOS stylesheets.

    A test that uses it is marked `reference`: skipped without it, an error with CI=true.
    """
    return reference_dir()


def missing_parts(item: pytest.Item) -> list[str]:
    """Why `item` cannot run here: one reason per missing part, empty when all are present."""
    reasons = []
    for name, (_, check) in REQUIREMENTS.items():
        if item.get_closest_marker(name) is not None:
            reason = check()
            if reason:
                reasons.append(reason)
    for mark in item.iter_markers("tools"):
        missing = _missing_tools(*mark.args)
        if missing:
            reasons.append(f"needs {missing}")
    return reasons


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # tryfirst: before any fixture is set up, so a missing part costs nothing.
    reasons = missing_parts(item)
    if not reasons:
        return
    reason = "; ".join(reasons)
    if in_ci():
        pytest.fail(f"CI=true and a part this test needs is missing: {reason}", pytrace=False)
    pytest.skip(reason)


class OutcomeRecorder:
    """Writes one JSON line per test: its id, outcome and, for a skip, the reason."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file: IO[str] | None = None

    def pytest_sessionstart(self) -> None:
        self.file = self.path.open("w", encoding="utf-8")

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.file is None:
            return
        outcome = None
        reason = ""
        if hasattr(report, "wasxfail"):
            outcome = "xfailed" if report.skipped else "xpassed"
            reason = str(report.wasxfail)
        elif report.skipped:
            outcome = "skipped"
            if isinstance(report.longrepr, tuple):
                reason = str(report.longrepr[2]).removeprefix("Skipped: ")
        elif report.failed:
            outcome = "failed" if report.when == "call" else "error"
        elif report.when == "call":
            outcome = "passed"
        if outcome:
            line = {"id": report.nodeid, "when": report.when, "outcome": outcome, "reason": reason}
            self.file.write(json.dumps(line) + "\n")
            self.file.flush()

    def pytest_sessionfinish(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
