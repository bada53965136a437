"""Running autopkgtest suites: nixtest's own small suite, end to end, with the real dpkg set.

`nixtest run` collects the suite beside a tests.yaml package, runs every test
as autopkgtest would, writes wrappers that rerun a test as `nobody` under
`env -i`, and reports restrictions, Depends, skip reasons and artifacts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest
from autopkgtest_suites import DEMO_EXPECTED, nixtest_outcomes, write_demo

from conftest import nixtest_command, remove_tree, world_readable_dir

# the suite tests the host's dpkg packages hello, gzip and python3
pytestmark = [pytest.mark.dpkg, pytest.mark.tools("hello", "gzip", "python3")]


class DemoRun:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tests = root / "pt"
        self.out = root / "out"
        self.tests.mkdir()
        os.chmod(self.tests, 0o755)
        self.tree = write_demo(self.tests)
        # an ordinary nixtest package beside the suite
        plain = self.tests / "hello"
        plain.mkdir()
        (plain / "tests.yaml").write_text("tests:\n  greets:\n    run: hello\n")
        os.chmod(plain, 0o755)
        os.chmod(plain / "tests.yaml", 0o644)
        self.run = subprocess.run(
            nixtest_command("run", "--tests", str(self.tests), "--out", str(self.out)),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        self.outcomes = nixtest_outcomes(self.out / "junit.xml")

    def wrapper(self, test: str) -> Path:
        return self.out / "rerun" / "ntdemo" / test


@pytest.fixture(scope="module")
def demo() -> Iterator[DemoRun]:
    root = world_readable_dir("nixtest-apt-")
    yield DemoRun(root)
    remove_tree(root)


def test_every_test_gets_autopkgtests_outcome(demo: DemoRun) -> None:
    assert demo.run.returncode == 1, demo.run.stdout[-3000:]  # some tests fail on purpose
    got = {nodeid.partition("::")[2]: outcome for nodeid, (outcome, _) in demo.outcomes.items()}
    assert got.pop("greets") == "passed"  # the tests.yaml package beside the suite
    expected = dict(DEMO_EXPECTED)
    if os.geteuid() != 0:
        expected["as-root"] = "skipped"  # needs-root
    assert got == expected


def test_messages_name_the_rule(demo: DemoRun) -> None:
    messages = {nodeid.partition("::")[2]: message for nodeid, (_, message) in demo.outcomes.items()}
    assert messages["stderr-refused"] == "stderr: oops: a warning on stderr"
    assert messages["exit77"] == "non-zero exit status 77"
    assert messages["skip77"] == "exit status 77 and marked as skippable"
    assert messages["flaky-fails"].startswith("xfailed: non-zero exit status 1 (flaky")
    assert messages["breaker"].startswith("restriction breaks-testbed")
    assert "nixtest-no-such-package | nixtest-nor-this" in messages["missing-dep"]
    assert messages["command2"] == "non-zero exit status 1"  # bash -e stopped at `false`


def test_an_undeclared_command_is_named_with_its_package(demo: DemoRun) -> None:
    message = demo.outcomes["ntdemo::undeclared"][1]
    owner = subprocess.run(
        ["dpkg-query", "-S", os.path.realpath(shutil.which("python3", path="/usr/bin:/bin") or "")],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split(":")[0]
    assert "python3 (/usr/bin/python3, package " in message
    assert f"package {owner})" in message or "package python3-minimal)" in message
    assert "undeclared test dependency" in message
    # the terminal says it too
    assert "undeclared test dependency" in demo.run.stdout


def test_reports_show_restrictions_depends_and_artifacts(demo: DemoRun) -> None:
    junit = (demo.out / "junit.xml").read_text()
    assert "Restrictions: allow-stderr" in junit
    assert "Depends: @builddeps@" in junit
    assert "Depends resolved: gzip " in junit
    log = (demo.out / "log.xml").read_text()
    assert "Restrictions: breaks-testbed" in log
    assert "Test-Command: false; echo" in (demo.out / "log.html").read_text()
    note = demo.out / "artifacts" / "ntdemo" / "environment" / "note.txt"
    assert note.read_text() == "kept\n"
    products = (demo.out / "nix-support" / "hydra-build-products").read_text().splitlines()
    assert f"file artifact {note}" in products
    # a test that left nothing has no folder, and no product
    assert not (demo.out / "artifacts" / "ntdemo" / "command1").exists()
    # a skipped test has no wrapper; one that ran has
    assert not demo.wrapper("breaker").exists()
    assert demo.wrapper("command1").is_file()


def as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runuser", "-u", "nobody", "--", "env", "-i", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.root
def test_wrappers_rerun_as_nobody_and_fail_the_same_way(demo: DemoRun) -> None:
    refused = as_nobody(str(demo.wrapper("stderr-refused")))
    assert refused.returncode == 1
    assert "Hello, world!" in refused.stdout
    assert "stderr-refused failed: stderr: oops: a warning on stderr" in refused.stderr
    undeclared = as_nobody(str(demo.wrapper("undeclared")))
    assert undeclared.returncode == 1
    assert "python3: not found" in undeclared.stderr
    passed = as_nobody(str(demo.wrapper("environment")))
    assert passed.returncode == 0, passed.stderr
    flaky = as_nobody(str(demo.wrapper("flaky-fails")))
    assert flaky.returncode == 6 and "flaky" in flaky.stderr


@pytest.mark.root
def test_needs_root_runs_as_root_and_is_skipped_as_nobody(demo: DemoRun) -> None:
    assert demo.outcomes["ntdemo::as-root"][0] == "passed"
    as_root = subprocess.run([str(demo.wrapper("as-root"))], capture_output=True, text=True, check=False)
    assert as_root.returncode == 0, as_root.stderr
    skipped = as_nobody(str(demo.wrapper("as-root")))
    assert skipped.returncode == 5
    assert "as-root skipped: restriction needs-root: it runs only as root" in skipped.stderr


def test_shell_opens_in_the_tree_with_the_tests_environment(demo: DemoRun) -> None:
    child = pexpect.spawn(
        str(demo.wrapper("undeclared")),
        ["--shell"],
        env={"PATH": "/usr/bin:/bin", "TERM": "dumb"},
        encoding="utf-8",
        timeout=60,
    )
    try:
        child.expect_exact("[nixtest ntdemo::undeclared] $ ")
        child.sendline('echo "W=$(pwd) T=$AUTOPKGTEST_TMP A=$AUTOPKGTEST_ARTIFACTS P=$PATH"; ls debian/tests')
        child.expect(r"W=(\S+) T=(\S+) A=(\S+) P=(\S+)\r\n")
        workdir, tmp, artifacts, path = child.match.groups()
        assert workdir.endswith("/src") and tmp.endswith("/tmp") and artifacts.endswith("/artifacts")
        assert os.path.dirname(workdir) == os.path.dirname(tmp)
        assert path.endswith("/bin") and "/profiles/" in path
        child.expect_exact("undeclared")
        child.sendline("command -v python3 || echo no-python3-here")
        child.expect_exact("no-python3-here")
        child.sendline("exit 3")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 3
    assert not os.path.exists(os.path.dirname(workdir))  # not kept without --keep


def test_ipdb_is_refused_with_a_pointer_to_shell(demo: DemoRun) -> None:
    done = subprocess.run(
        [str(demo.wrapper("undeclared")), "--ipdb"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 4
    assert "an autopkgtest" in done.stderr and "--shell" in done.stderr


def test_a_broken_stanza_fails_alone() -> None:
    root = world_readable_dir("nixtest-apt-bad-")
    try:
        tree = root / "pt" / "broken"
        (tree / "debian" / "tests").mkdir(parents=True)
        (tree / "debian" / "tests" / "control").write_text(
            "Test-Command: true\nDepends:\n\n"
            "Tests: oops\nDepends: hello (>= )\n\n"
            "Test-Command: hello\nDepends: hello\n"
        )
        done = subprocess.run(
            nixtest_command("run", "--tests", str(root / "pt"), "--out", str(root / "out")),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        outcomes = nixtest_outcomes(root / "out" / "junit.xml")
        assert {k: v[0] for k, v in outcomes.items()} == {
            "broken::command1": "passed",
            "broken::oops": "error",
            "broken::command2": "passed",
        }
        error_line = [line for line in done.stdout.splitlines() if "stanza 2 (line 4)" in line]
        assert error_line, done.stdout
        assert "debian/tests/control: stanza 2 (line 4): test 'oops': key 'Depends'" in error_line[0]
    finally:
        remove_tree(root)


def test_a_set_without_bash_runs_test_command_with_the_machines(demo: DemoRun) -> None:
    # --set path: every program on PATH is a package; `@` is hello, and no package is essential
    out = demo.root / "out-path"
    done = subprocess.run(
        nixtest_command(
            "run", "--set", "path", "--tests", str(demo.tests), "--out", str(out), "ntdemo::command1"
        ),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert "/bin/bash -e -c" in (out / "rerun" / "ntdemo" / "command1").read_text()


def test_show_names_the_stanza_and_its_depends(demo: DemoRun) -> None:
    done = subprocess.run(
        nixtest_command("show", "--tests", str(demo.tests), "--out", str(demo.out), "ntdemo::builddeps"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = [line.strip() for line in done.stdout.splitlines()]
    assert "kind:        autopkgtest" in lines
    assert "Depends:     @builddeps@" in lines
    assert any(line.startswith("Depends resolved: gzip ") for line in lines)
    assert not any("--ipdb" in line for line in lines)  # an autopkgtest has no Python frame


def test_a_pass_is_cached_until_the_tree_or_the_closure_changes() -> None:
    root = world_readable_dir("nixtest-apt-cache-")
    try:
        tree = root / "pt" / "cached"
        (tree / "debian" / "tests").mkdir(parents=True)
        (tree / "debian" / "tests" / "control").write_text("Test-Command: hello\nDepends: hello\n")
        (tree / "data.txt").write_text("one\n")

        def run() -> dict[str, object]:
            done = subprocess.run(
                nixtest_command("run", "--tests", str(root / "pt"), "--out", str(root / "out")),
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
                # the suite's conftest turns the cache off for every test: on again here
                env={**os.environ, "NIXTEST_STATE": str(root / "state"), "NIXTEST_NO_CACHE": ""},
            )
            assert done.returncode == 0, done.stdout[-2000:]
            [test] = json.loads((root / "out" / "report.json").read_text())["tests"]
            return dict(test)

        first = run()
        assert first["outcome"] == "passed" and not first["cached"]
        packages = first["packages"]
        assert isinstance(packages, dict) and "hello" in packages and "bash" in packages  # the closure
        second = run()
        assert second["cached"]
        (tree / "data.txt").write_text("two\n")  # any file of the tree is an input
        assert not run()["cached"]
    finally:
        remove_tree(root)


@pytest.mark.root
def test_nixtest_run_as_nobody_skips_needs_root(demo: DemoRun) -> None:
    root = world_readable_dir("nixtest-apt-nobody-")
    try:
        os.chmod(root, 0o1777)  # sticky, as /tmp: root's own OUT and state may not lie in an open folder
        done = as_nobody(
            "PATH=/usr/bin:/bin",
            f"NIXTEST_STATE={root / 'state'}",
            *nixtest_command(
                "run", "--tests", str(demo.tests), "--out", str(root / "out"), "ntdemo::as-root"
            ),
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        outcome, message = nixtest_outcomes(root / "out" / "junit.xml")["ntdemo::as-root"]
        assert outcome == "skipped" and message == "restriction needs-root: it runs only as root"
    finally:
        remove_tree(root)


def test_keep_keeps_the_folder_and_the_artifacts_of_a_rerun(demo: DemoRun) -> None:
    done = subprocess.run(
        [str(demo.wrapper("environment")), "--keep"], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    kept = [line.rpartition(": ")[2] for line in lines if "working directory kept: " in line]
    artifacts = [line.rpartition("artifacts in ")[2] for line in lines if "artifacts in " in line]
    assert len(kept) == 1 and artifacts == [f"{kept[0]}/artifacts"]
    try:
        # a rerun writes only to its own folder: not to the run's OUT/artifacts
        assert Path(artifacts[0], "note.txt").read_text() == "kept\n"
        assert (Path(kept[0]) / "src" / "debian" / "tests" / "control").is_file()
    finally:
        shutil.rmtree(kept[0], ignore_errors=True)
