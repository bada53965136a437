"""Small autopkgtest suites of our own, and reading outcomes from nixtest's and autopkgtest's reports.

Shared by the end-to-end tests and by `bench/run_autopkgtest.py`.  The suite
`ntdemo` covers what no small real suite on a Debian machine does: each
restriction nixtest honours or skips, Test-Command, Tests-Directory,
@builddeps@, an uninstalled Depends and an undeclared test dependency.
"""

from __future__ import annotations

import os
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

DEMO_CONTROL = """\
Source: ntdemo
Section: misc
Priority: optional
Maintainer: nixtest <nixtest@example.org>
Build-Depends: gzip
Standards-Version: 4.6.2

Package: hello
Architecture: any
Description: the binary package `@` stands for
 hello is installed on the machines nixtest's own tests run on.
"""

DEMO_CHANGELOG = """\
ntdemo (1.0-1) unstable; urgency=medium

  * A suite of nixtest's own, for its comparison with autopkgtest.

 -- nixtest <nixtest@example.org>  Tue, 01 Dec 2026 00:00:00 +0000
"""

# Comments and continuation lines on purpose: they are part of the format.
DEMO_TESTS = """\
# nixtest's own autopkgtest suite
Tests: stderr-allowed
Depends: hello
Restrictions: allow-stderr

Tests: stderr-refused
Depends: hello

Tests: skip77
Depends: hello
Restrictions: skippable

Tests: exit77
Depends: hello

Tests: flaky-fails
Depends: hello
Restrictions: flaky

Tests: as-root
Depends: hello
Restrictions: needs-root

Tests: breaker
Depends: hello
Restrictions: breaks-testbed

Test-Command: hello --greeting="from a
 Test-Command"
Depends: @

Test-Command: false; echo "bash -e stops before this"
Depends: hello

Test-Command: test -w debian/tests/control && test -d "$AUTOPKGTEST_TMP"
 && test -z "$(ls -A "$AUTOPKGTEST_TMP")" && test "$ADTTMP" = "$AUTOPKGTEST_TMP"
 && test "$ADT_ARTIFACTS" = "$AUTOPKGTEST_ARTIFACTS" && echo kept > "$AUTOPKGTEST_ARTIFACTS/note.txt"
Features: test-name=environment
Depends: hello

Tests: in-dir
Tests-Directory: upstream/tests
Depends: hello

Tests: builddeps
Depends: @builddeps@

Tests: missing-dep
Depends: hello, nixtest-no-such-package | nixtest-nor-this

Tests: undeclared
Depends: hello
"""

DEMO_SCRIPTS = {
    "debian/tests/stderr-allowed": "#!/bin/sh\necho 'a warning, allowed' >&2\nhello\n",
    "debian/tests/stderr-refused": "#!/bin/sh\nhello\necho 'oops: a warning on stderr' >&2\n",
    "debian/tests/skip77": "#!/bin/sh\necho 'cannot test this here'\nexit 77\n",
    "debian/tests/exit77": "#!/bin/sh\nexit 77\n",
    "debian/tests/flaky-fails": "#!/bin/sh\necho 'fails now and then'\nexit 1\n",
    "debian/tests/as-root": '#!/bin/sh\nset -e\ntest "$(id -u)" = 0\nhello\n',
    "debian/tests/breaker": "#!/bin/sh\necho 'never run: it would break the machine'\nexit 1\n",
    "upstream/tests/in-dir": "#!/bin/sh\nset -e\ntest -f upstream/tests/in-dir\nhello -t\n",
    "debian/tests/builddeps": "#!/bin/sh\nset -e\ngzip --version >/dev/null\n",
    "debian/tests/missing-dep": "#!/bin/sh\nexit 0\n",
    # python3 is on the machine, but neither hello nor an essential package brings it
    "debian/tests/undeclared": "#!/bin/sh\nset -e\npython3 -c 'print(\"hi\")'\n",
}

#: what nixtest gives each test of ntdemo as root
DEMO_EXPECTED = {
    "stderr-allowed": "passed",
    "stderr-refused": "failed",
    "skip77": "skipped",
    "exit77": "failed",
    "flaky-fails": "xfailed",
    "as-root": "passed",
    "breaker": "skipped",
    "command1": "passed",
    "command2": "failed",
    "environment": "passed",
    "in-dir": "passed",
    "builddeps": "passed",
    "missing-dep": "skipped",
    "undeclared": "failed",
}


def write_demo(root: Path) -> Path:
    """The ntdemo source tree under `root`, readable by every user."""
    tree = root / "ntdemo-1.0"
    files = {
        "debian/control": DEMO_CONTROL,
        "debian/changelog": DEMO_CHANGELOG,
        "debian/tests/control": DEMO_TESTS,
        "debian/source/format": "3.0 (native)\n",
        **DEMO_SCRIPTS,
    }
    for rel, text in files.items():
        path = tree / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        # autopkgtest makes a test program executable itself; so does nixtest
        os.chmod(path, 0o644)
    for folder in [tree, *tree.rglob("*")]:
        if folder.is_dir():
            os.chmod(folder, 0o755)
    return tree


# ---------------------------------------------------------------------------
# outcomes


def nixtest_outcomes(junit: Path) -> dict[str, tuple[str, str]]:
    """`pkg::test` -> (outcome, message) from nixtest's junit.xml."""
    found: dict[str, tuple[str, str]] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        nodeid = f"{case.get('classname')}::{case.get('name')}"
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            element = case.find(tag)
            if element is not None:
                message = element.get("message") or element.text or ""
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                if tag == "skipped" and message.startswith("xfailed"):
                    outcome = "xfailed"
        found[nodeid] = (outcome, message)
    return found


_AUTOPKGTEST_OUTCOMES = {"PASS": "passed", "FAIL": "failed", "SKIP": "skipped", "FLAKY": "xfailed"}


def autopkgtest_outcomes(summary: Path, source: str) -> dict[str, tuple[str, str]]:
    """`source::test` -> (outcome, detail) from autopkgtest's summary file."""
    found = {}
    for line in summary.read_text(encoding="utf-8", errors="replace").splitlines():
        match = re.match(r"^(\S+)\s+(PASS|FAIL|SKIP|FLAKY)\s*(.*)$", line)
        if match:
            found[f"{source}::{match.group(1)}"] = (_AUTOPKGTEST_OUTCOMES[match.group(2)], match.group(3))
    return found


def run_autopkgtest(tree: Path, output: Path, tests: list[str] | None = None, timeout: float = 900) -> int:
    """Debian's `autopkgtest` on an unpacked tree with its `null` server (as root), quietly."""
    argv = ["autopkgtest", "--no-built-binaries", f"--output-dir={output}"]
    for name in tests or []:
        argv.append(f"--test-name={name}")
    argv += [str(tree), "--", "null"]
    with open(output.with_suffix(".log"), "wb") as log:
        done = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, timeout=timeout, check=False)
    return done.returncode


def compare(nixtest: dict[str, tuple[str, str]], debian: dict[str, tuple[str, str]]) -> list[str]:
    """Problems: a test both ran with another outcome, not explained by an undeclared dependency."""
    problems = []
    for nodeid, (theirs, detail) in sorted(debian.items()):
        ours, message = nixtest.get(nodeid, ("missing", ""))
        if ours == "missing":
            problems.append(f"{nodeid}: autopkgtest ran it ({theirs}), nixtest has no such test")
            continue
        if "skipped" in (ours, theirs) or ours == theirs:
            continue
        if ours == "failed" and "undeclared test dependency" in message:
            continue  # nixtest's stricter profile, and it names the package
        problems.append(f"{nodeid}: nixtest {ours} ({message}), autopkgtest {theirs} ({detail})")
    return problems
