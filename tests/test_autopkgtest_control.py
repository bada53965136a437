"""Reading debian/tests/control: fields, expansions, and one-line errors for a bad stanza."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from conftest import needs_dpkg
from nixtest.definitions import BadTest
from nixtest.definitions import TestDef as Def
from nixtest.packagesets import load_set
from nixtest.sources.autopkgtest import (
    load_suite,
    missing_commands,
    resolve_depends,
    skip_reason,
    source_name,
)

CONTROL = """\
Source: demo
Build-Depends: debhelper-compat (= 13), gzip <!nocheck>, nixtest-only-in-stage1 <stage1>,
 sed [amd64 arm64 i386 armhf ppc64el s390x riscv64 mips64el]
Build-Depends-Indep: python3-all

Package: demo-bin
Architecture: any
Depends: ${misc:Depends}

Package: demo-doc
Architecture: all

Package: demo-udeb
Architecture: any
Package-Type: udeb
"""


def write_tree(
    root: Path, control: str, tests: dict[str, str] | None = None, debian_control: str = CONTROL
) -> Path:
    (root / "debian" / "tests").mkdir(parents=True)
    (root / "debian" / "control").write_text(debian_control, encoding="utf-8")
    (root / "debian" / "tests" / "control").write_text(textwrap.dedent(control), encoding="utf-8")
    for rel, text in (tests or {}).items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def by_name(definitions: list) -> dict[str, Def | BadTest]:
    return {d.name: d for d in definitions}


def test_fields_continuations_and_comments(tmp_path: Path) -> None:
    tree = write_tree(
        tmp_path / "demo-1.0",
        """\
        # a comment line
        Tests: first, second
          third
        Depends: demo-bin, gzip (>= 1.0) | nixtest-absent, # a comment after a value
        Restrictions: allow-stderr,
         needs-root
        Features: test-name-is-not-this
        Classes: desktop

        Test-Command: echo one &&
         echo two
        Depends:

        Test-Command: true
        Features: test-name=named

        Test-Command: false
        """,
        {f"debian/tests/{n}": "#!/bin/sh\n" for n in ("first", "second", "third")},
    )
    tests = by_name(load_suite(tree))
    assert list(tests) == ["first", "second", "third", "command1", "named", "command3"]
    first = tests["first"]
    assert isinstance(first, Def) and first.autopkgtest is not None
    spec = first.autopkgtest
    assert first.package == "demo"  # Source: of debian/control, not the folder's name
    assert spec.path == "debian/tests/first"
    assert spec.depends == (("demo-bin",), ("gzip (>= 1.0)", "nixtest-absent"))
    assert spec.restrictions == ("allow-stderr", "needs-root")
    assert spec.classes == ("desktop",)
    command = tests["command1"]
    assert isinstance(command, Def) and command.autopkgtest is not None
    # continuation lines are joined, as autopkgtest joins them
    assert command.autopkgtest.command == "echo one && echo two"
    assert command.autopkgtest.depends == ()  # an empty Depends: is no dependency
    # no Depends: means @, every binary package but udebs
    last = tests["command3"]
    assert isinstance(last, Def) and last.autopkgtest is not None
    assert last.autopkgtest.depends == (("demo-bin",), ("demo-doc",))


def test_at_builddeps_tests_directory_and_at_in_alternatives(tmp_path: Path) -> None:
    tree = write_tree(
        tmp_path / "x",
        """\
        Tests: upstream
        Tests-Directory: t/suite
        Depends: @builddeps@, @ | nixtest-other

        Tests: escape
        Tests-Directory: ../outside
        """,
        {"t/suite/upstream": "#!/bin/sh\n"},
    )
    tests = by_name(load_suite(tree, arch="amd64"))
    upstream = tests["upstream"]
    assert isinstance(upstream, Def) and upstream.autopkgtest is not None
    assert upstream.autopkgtest.path == "t/suite/upstream"
    assert upstream.autopkgtest.depends == (
        ("debhelper-compat (= 13)",),
        ("gzip",),  # <!nocheck>: kept in a plain build; <stage1>: left out
        ("sed [amd64 arm64 i386 armhf ppc64el s390x riscv64 mips64el]",),
        ("python3-all",),
        ("build-essential",),
        ("demo-bin", "nixtest-other"),
        ("demo-doc", "nixtest-other"),
    )
    escape = tests["escape"]
    assert isinstance(escape, BadTest)
    assert "stanza 2" in escape.error.message and "'Tests-Directory'" in escape.error.message


def test_a_malformed_stanza_is_an_error_for_its_tests_alone(tmp_path: Path) -> None:
    tree = write_tree(
        tmp_path / "demo",
        """\
        Tests: good
        Depends: gzip

        Tests: bad-depends
        Depends: gzip (>= ), sed

        Tests: bad-line
        Depends: gzip
        this line has no colon

        Tests: good-too

        Tests: no-program

        Restrictions: needs-root

        Tests: both
        Test-Command: true
        """,
        {"debian/tests/good": "", "debian/tests/good-too": "", "debian/tests/bad-depends": ""},
    )
    tests = by_name(load_suite(tree))
    assert isinstance(tests["good"], Def) and isinstance(tests["good-too"], Def)
    errors = {name: t.error.message for name, t in tests.items() if isinstance(t, BadTest)}
    assert set(errors) == {"bad-depends", "bad-line", "no-program", "stanza6", "both"}
    for message in errors.values():
        assert "\n" not in message
        assert "debian/tests/control: stanza " in message
    assert "stanza 2 (line 4)" in errors["bad-depends"] and "key 'Depends'" in errors["bad-depends"]
    assert "gzip (>= )" in errors["bad-depends"]
    assert "stanza 3 (line 7)" in errors["bad-line"] and "line 9" in errors["bad-line"]
    assert "no test program" in errors["no-program"] and "key 'Tests'" in errors["no-program"]
    assert "needs 'Tests' or 'Test-Command'" in errors["stanza6"]
    assert "only one of" in errors["both"]


def test_source_name_falls_back_to_the_folder(tmp_path: Path) -> None:
    tree = tmp_path / "only-debian"
    (tree / "debian" / "tests").mkdir(parents=True)
    (tree / "debian" / "tests" / "control").write_text("Test-Command: true\nDepends:\n")
    assert source_name(tree) == "only-debian"
    [test] = load_suite(tree)
    assert test.nodeid == "only-debian::command1"


@pytest.mark.parametrize(
    ("restrictions", "reason"),
    [
        ("allow-stderr, flaky, skippable, superficial, needs-root, rw-build-tree", ""),
        ("breaks-testbed", "restriction breaks-testbed"),
        ("isolation-container", "restriction isolation-container"),
        ("isolation-machine", "restriction isolation-machine"),
        ("needs-reboot", "restriction needs-reboot"),
        ("build-needed", "restriction build-needed"),
        ("needs-internet", "restriction needs-internet"),
        ("allow-stderr nixtest-made-up", "unknown restriction nixtest-made-up"),
    ],
)
def test_restrictions_that_skip(tmp_path: Path, restrictions: str, reason: str) -> None:
    tree = write_tree(tmp_path / "demo", f"Test-Command: true\nRestrictions: {restrictions}\n")
    [test] = load_suite(tree)
    assert isinstance(test, Def) and test.autopkgtest is not None
    assert skip_reason(test.autopkgtest).startswith(reason) if reason else skip_reason(test.autopkgtest) == ""


def test_an_unknown_field_and_another_architecture_skip(tmp_path: Path) -> None:
    tree = write_tree(
        tmp_path / "demo",
        "Test-Command: true\nX-Made-Up: 1\n\nTest-Command: true\nArchitecture: nixtest-arch\n",
    )
    first, second = load_suite(tree, arch="amd64")
    assert isinstance(first, Def) and first.autopkgtest is not None
    assert isinstance(second, Def) and second.autopkgtest is not None
    assert skip_reason(first.autopkgtest) == "unknown field X-Made-Up"
    assert "does not include amd64" in skip_reason(second.autopkgtest)


@needs_dpkg
def test_depends_resolve_against_the_host_set(tmp_path: Path) -> None:
    tree = write_tree(
        tmp_path / "demo",
        """\
        Test-Command: true
        Depends: nixtest-absent | gzip, sed (>= 1.0), coreutils (<< 1.0) | nixtest-absent2,
         awk, nixtest-only-elsewhere [nixtest-arch]
        """,
    )
    [test] = load_suite(tree, arch="amd64")
    assert isinstance(test, Def) and test.autopkgtest is not None
    chosen, missing = resolve_depends(test.autopkgtest, load_set("host"), arch="amd64")
    # the first alternative the set has; a virtual package (awk) by its provider
    assert chosen[:2] == ["gzip", "sed"] and len(chosen) == 3
    assert missing == ["coreutils (<< 1.0) | nixtest-absent2"]


def test_commands_a_failure_says_were_not_found(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "cat").symlink_to("/bin/cat")
    output = (
        "sh: 1: foo: not found\n"
        "/x/debian/tests/t: 12: bar: not found\n"
        "bash: line 1: baz: command not found\n"
        "env: ‘qux’: No such file or directory\n"
        "FileNotFoundError: [Errno 2] No such file or directory: 'quux'\n"
        'Can\'t exec "apt-get": No such file or directory at debian/tests/smoke line 42.\n'
        "sh: 1: cat: not found\n"  # the profile has it: not a missing command
        "cat: /no/such/file: No such file or directory\n"  # a missing file, not a command
    )
    assert missing_commands(output, tmp_path) == ["foo", "bar", "baz", "qux", "quux", "apt-get"]
