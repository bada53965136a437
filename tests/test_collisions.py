"""A real profile collision, end to end: two packages of a prefix set install the same file.

docs/nix-and-hydra.md promises that nixtest shows a collision as a warning,
"as for every set".  Here `nixtest run` builds a real profile of two prefixes
that both have `bin/tool`; the first package's file wins, the test runs it,
and the warning is in junit.xml, log.xml, log.html, the failure report on the
terminal, and `nixtest show`.
"""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import lxml.html
import pytest

from conftest import Suite, nixtest_command


def make_prefix(root: Path, name: str, says: str) -> Path:
    prefix = root / "prefixes" / name
    tool = prefix / "bin" / "tool"
    tool.parent.mkdir(parents=True)
    tool.write_text(f"#!/bin/sh\necho {says}\n")
    tool.chmod(0o755)
    for folder in (root / "prefixes", prefix, prefix / "bin"):
        folder.chmod(0o755)
    return prefix


@pytest.fixture
def colliding(suite: Suite) -> tuple[Suite, Path, str]:
    """A prefix set of `a` and `b`, both with bin/tool, and tests whose profile merges both."""
    a = make_prefix(suite.root, "a", "from-a")
    make_prefix(suite.root, "b", "from-b")
    set_file = suite.root / "set.yaml"
    set_file.write_text(
        f"a: {{prefix: {suite.root / 'prefixes' / 'a'}, version: '1.0'}}\n"
        f"b: {{prefix: {suite.root / 'prefixes' / 'b'}, version: '2.0'}}\n"
    )
    suite.package(
        "a",
        """\
        tests:
          first-wins:
            run: tool
            profile: [a, b]
            expect: {stdout: '^from-a$'}
          expects-b:
            run: tool
            profile: [a, b]
            expect: {stdout: '^from-b$'}
          alone:
            run: tool
        """,
    )
    warning = f"profile a+b: collision: bin/tool: provided by a and b; kept a's ({a / 'bin' / 'tool'})"
    return suite, set_file, warning


def nixtest(suite: Suite, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        nixtest_command(*args),
        cwd=suite.root,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def test_a_real_collision_is_a_warning_in_every_report(colliding: tuple[Suite, Path, str]) -> None:
    suite, set_file, warning = colliding
    done = nixtest(
        suite, "run", "--set", f"prefix:{set_file}", "--tests", str(suite.tests), "--out", str(suite.out)
    )
    assert done.returncode == 1, done.stdout + done.stderr

    # the first package's file is the one the test ran
    cases = {c.get("name"): c for c in ET.parse(suite.out / "junit.xml").getroot().iter("testcase")}
    assert cases["first-wins"].find("failure") is None and cases["first-wins"].find("error") is None
    assert cases["expects-b"].find("failure") is not None

    # the warning, in junit.xml, for the passing and the failing test, not for the one without a collision
    for name in ("first-wins", "expects-b"):
        assert f"warning: {warning}" in (cases[name].findtext("system-out") or ""), name
    assert "collision" not in (cases["alone"].findtext("system-out") or "")

    # log.xml: a line marked as a warning in each colliding test's nest
    lines = [
        line.text
        for line in ET.parse(suite.out / "log.xml").getroot().iter("line")
        if line.get("warning") == "1"
    ]
    assert lines == [f"warning: {warning}"] * 2, lines

    # log.html: shown as a warning
    page = lxml.html.parse(str(suite.out / "log.html")).getroot()
    shown = [
        div.text_content() for div in page.xpath("//div[contains(concat(' ', @class, ' '), ' warning ')]")
    ]
    assert shown == [f"warning: {warning}"] * 2, shown

    # the failure report on the terminal
    assert f"  warning: {warning}" in done.stdout.splitlines(), done.stdout[-3000:]


def test_nixtest_show_prints_the_collision(colliding: tuple[Suite, Path, str]) -> None:
    suite, set_file, warning = colliding
    done = nixtest(suite, "show", "--set", f"prefix:{set_file}", "--tests", str(suite.tests), "a::first-wins")
    assert done.returncode == 0, done.stdout + done.stderr
    assert warning in done.stdout + done.stderr
    alone = nixtest(suite, "show", "--set", f"prefix:{set_file}", "--tests", str(suite.tests), "a::alone")
    assert "collision" not in alone.stdout + alone.stderr
