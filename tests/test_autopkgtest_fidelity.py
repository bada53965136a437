"""Real Debian suites, fetched by `nixtest sources`, run by nixtest and by Debian's autopkgtest.

Every test both can run must get the same outcome from both, and every
difference must be nixtest's stricter profile, naming the undeclared
dependency.  The sources are small suites of packages every CI machine has
installed; nixtest's own suite `ntdemo` covers the restrictions no small real
suite does.

Debian's tool takes about 10 s a test as root (it builds, installs and purges
a dependency package for each), and changes the machine's dpkg database while
it does: the comparison runs in CI (CI=true), where the machine is thrown away.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from autopkgtest_suites import (
    DEMO_EXPECTED,
    autopkgtest_outcomes,
    compare,
    nixtest_outcomes,
    run_autopkgtest,
    write_demo,
)

from conftest import nixtest_command, remove_tree, world_readable_dir

#: small real suites of packages .ci/run installs (or every Debian machine has)
REAL_SOURCES = ["ed", "gzip", "hello", "less", "mawk"]

pytestmark = [pytest.mark.dpkg, pytest.mark.debian_archive]


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


class Fetched:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.into = root / "suites"
        self.state = root / "state"
        self.run = subprocess.run(
            nixtest_command("sources", *REAL_SOURCES, "nixtest-no-such-source", "--into", str(self.into)),
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
            env={**os.environ, "NIXTEST_STATE": str(self.state)},
        )
        for path in [self.into, *self.into.rglob("*")]:
            if path.is_dir() and not path.is_symlink():
                os.chmod(path, os.stat(path).st_mode | 0o755)

    def tree(self, source: str) -> Path:
        [tree] = [p for p in self.into.iterdir() if p.name.startswith(f"{source}-")]
        return tree


@pytest.fixture(scope="module")
def fetched() -> Iterator[Fetched]:
    root = world_readable_dir("nixtest-sources-")
    yield Fetched(root)
    remove_tree(root)


def test_sources_fetches_each_and_names_what_it_could_not(fetched: Fetched) -> None:
    assert fetched.run.returncode == 1, fetched.run.stderr  # one source does not exist
    lines = fetched.run.stdout.splitlines()
    assert lines[0].startswith("nixtest sources: updating a private apt index")
    for number, source in enumerate(REAL_SOURCES, 1):
        tree = fetched.tree(source)
        assert (tree / "debian" / "tests" / "control").is_file()
        progress = [
            line for line in lines if line.startswith(f"[{number}/{len(REAL_SOURCES) + 1}] {source} ")
        ]
        assert progress and progress[0].endswith(str(tree)), lines
    failed = [line for line in lines if "not fetched:" in line]
    assert failed == [
        "nixtest sources: nixtest-no-such-source: not fetched: the archive has no such source package"
    ]
    # pinned to the installed version when the archive has it
    installed = subprocess.run(
        ["dpkg-query", "-W", "-f", "${source:Version}", "hello"], capture_output=True, text=True, check=True
    ).stdout
    assert f"hello {installed}:" in fetched.run.stdout or "is not in the archive" in fetched.run.stdout
    # only the trees: the downloads stay in the state folder's private apt folder
    assert sorted(p.name for p in fetched.into.iterdir()) == sorted(
        fetched.tree(s).name for s in REAL_SOURCES
    )
    assert (fetched.state / "apt" / "lists").is_dir()


def test_etc_apt_is_left_alone(fetched: Fetched) -> None:
    # the private configuration: no deb-src line was added to the machine's lists
    machine = "".join(p.read_text(errors="replace") for p in Path("/etc/apt").rglob("*.sources"))
    ours = (fetched.state / "apt" / "sources.list.d" / "nixtest.sources").read_text()
    assert "deb-src" in ours
    assert ("deb-src" in machine) == ("derived" not in fetched.run.stdout)


@pytest.mark.root
def test_a_normal_user_fetches_sources() -> None:
    root = world_readable_dir("nixtest-sources-nobody-")
    try:
        os.chmod(root, 0o777)
        done = subprocess.run(
            [
                "runuser",
                "-u",
                "nobody",
                "--",
                "env",
                "-i",
                "PATH=/usr/bin:/bin",
                f"NIXTEST_STATE={root / 'state'}",
                *nixtest_command("sources", "hello", "--into", str(root / "suites")),
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        [tree] = (root / "suites").iterdir()
        assert (tree / "debian" / "tests" / "control").is_file()
        assert tree.stat().st_uid == int(subprocess.check_output(["id", "-u", "nobody"]))
    finally:
        remove_tree(root)


@pytest.mark.root
@pytest.mark.autopkgtest
def test_nixtest_and_autopkgtest_agree(fetched: Fetched) -> None:
    if not in_ci():
        pytest.skip(
            "Debian's autopkgtest installs and purges packages as root, about 10 s a test: runs with CI=true"
        )
    write_demo(fetched.into)
    out = fetched.root / "out"
    run = subprocess.run(
        nixtest_command("run", "--tests", str(fetched.into), "--out", str(out)),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env={**os.environ, "NIXTEST_STATE": str(fetched.state)},
    )
    ours = nixtest_outcomes(out / "junit.xml")
    assert ours, run.stdout[-3000:]
    theirs: dict[str, tuple[str, str]] = {}
    for source in [*REAL_SOURCES, "ntdemo"]:
        tree = fetched.tree(source)
        output = fetched.root / "autopkgtest" / source
        output.parent.mkdir(exist_ok=True)
        code = run_autopkgtest(tree, output)
        if code in (16, 20):
            # autopkgtest's own failure (the testbed, apt or dpkg busy): once more, then it counts
            shutil.rmtree(output, ignore_errors=True)
            code = run_autopkgtest(tree, output)
        log = output.with_suffix(".log").read_text(errors="replace")
        assert code in (0, 2, 4, 12, 14), f"autopkgtest {tree} exited {code}: {log[-3000:]}"
        theirs.update(autopkgtest_outcomes(output / "summary", source))
    # every test of the real suites ran in both, and nothing is left unexplained
    assert compare(ours, theirs) == []
    for source in REAL_SOURCES:
        assert any(k.startswith(f"{source}::") for k in theirs), source
    # ntdemo: the same outcomes as autopkgtest's, test by test, but for the two known differences
    for test, outcome in DEMO_EXPECTED.items():
        theirs_outcome = theirs[f"ntdemo::{test}"][0]
        if test == "undeclared":
            # autopkgtest's testbed has python3 because the machine has; nixtest's profile does not
            assert theirs_outcome == "passed" and outcome == "failed"
            assert "python3 (/usr/bin/python3, package python3-minimal)" in ours[f"ntdemo::{test}"][1]
        elif test == "missing-dep":
            # autopkgtest cannot install it ("badpkg"), nixtest skips it, naming it
            assert theirs_outcome == "failed" and ours[f"ntdemo::{test}"][0] == "skipped"
        else:
            assert theirs_outcome == outcome, (test, theirs[f"ntdemo::{test}"], ours[f"ntdemo::{test}"])


def test_progress_shows_while_it_fetches() -> None:
    root = world_readable_dir("nixtest-sources-progress-")
    try:
        proc = subprocess.Popen(
            nixtest_command("sources", "hello", "--into", str(root / "suites")),
            stdout=subprocess.PIPE,
            text=True,
            # Python's own buffering of a pipe, as a CI log gets it
            env={
                **{k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"},
                "NIXTEST_STATE": str(root / "state"),
            },
        )
        assert proc.stdout is not None
        first = proc.stdout.readline()
        at_first = time.monotonic()
        rest = proc.stdout.read()
        at_end = time.monotonic()
        assert proc.wait(timeout=600) == 0, rest
        assert first.startswith("nixtest sources: updating a private apt index")
        # it arrives before apt-get update and the download are done, not with the rest at the end
        assert at_end - at_first > 0.5
    finally:
        remove_tree(root)
