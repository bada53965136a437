"""The checkout's conftest.py: markers for tests that need a real part of the machine.

Each test copies the real top-level conftest.py into a fresh pytest project and
runs pytest on it: a missing part is a skip with its reason, an error with
CI=true; `-m "not nix"` deselects; the outcome file `.ci/run` reads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import remove_tree, world_readable_dir

CHECKOUT = Path(__file__).resolve().parent.parent
NO_NIX = (
    "needs Nix: nix-build, nix-env, nix-store, nix-instantiate not on PATH (Debian: apt-get install nix-bin)"
)

TESTS = """
import pytest

@pytest.mark.nix
def test_nix():
    pass

@pytest.mark.tools("no-such-tool-5d1e", "sh")
def test_tool():
    pass

@pytest.mark.debian_archive
def test_archive():
    pass

def test_reference(reference):
    pass

def test_plain():
    pass
"""


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    pytester.makeconftest((CHECKOUT / "conftest.py").read_text())
    pytester.makeini("[pytest]\naddopts = --strict-markers\n")
    pytester.makepyfile(test_parts=TESTS)
    # no nix, no apt-get: a PATH with only sh on it
    bin_dir = pytester.path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sh").symlink_to("/bin/sh")
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("NIXTEST_REFERENCE", raising=False)
    return pytester


def outcomes_of(result: pytest.RunResult) -> dict[str, str]:
    found = {}
    for report in result.reprec.getreports("pytest_runtest_logreport"):  # type: ignore[attr-defined]
        name = report.nodeid.split("::")[-1]
        if report.when == "call" or report.outcome != "passed":
            outcome = report.outcome if report.when == "call" else f"{report.when} {report.outcome}"
            found.setdefault(name, outcome)
    return found


def test_a_missing_part_is_skipped_with_its_reason(project: pytest.Pytester) -> None:
    result = project.runpytest("-rs")
    assert outcomes_of(result) == {
        "test_nix": "setup skipped",
        "test_tool": "setup skipped",
        "test_archive": "setup skipped",
        "test_reference": "setup skipped",
        "test_plain": "passed",
    }
    result.assert_outcomes(passed=1, skipped=4)
    result.stdout.fnmatch_lines_random(
        [
            "*needs Nix: nix-build, nix-env, nix-store, nix-instantiate not on PATH*",
            "*needs no-such-tool-5d1e not on PATH*",
            "*needs apt-get source: apt-get, dpkg-source not on PATH*",
            "*needs the shared schemas and stylesheets: */shared/reference/junit/jenkins-xunit-junit-10.xsd*",
        ]
    )


def test_with_ci_a_missing_part_fails(project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    result = project.runpytest()
    result.assert_outcomes(passed=1, errors=4)
    assert result.ret == 1
    result.stdout.fnmatch_lines_random(
        [
            "*CI=true and a part this test needs is missing: needs Nix: nix-build*",
            "*CI=true and a part this test needs is missing: needs no-such-tool-5d1e*",
        ]
    )
    assert "skipped" not in result.stdout.lines[-1]


def test_present_parts_run(project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    reference = project.path / "reference"
    for name in ("junit/jenkins-xunit-junit-10.xsd", "junit/junit5-jenkins-junit.xsd"):
        (reference / name).parent.mkdir(parents=True, exist_ok=True)
        (reference / name).write_text("")
    monkeypatch.setenv("NIXTEST_REFERENCE", str(reference))
    # a reference folder without the stylesheets is still missing one
    assert outcomes_of(project.runpytest("-k", "reference"))["test_reference"] == "setup skipped"
    for name in ("nixos-test-driver/log2html.xsl", "nix/mark-errors.xsl", "nix/log2html.xsl"):
        (reference / name).parent.mkdir(parents=True, exist_ok=True)
        (reference / name).write_text("")
    for name in ("hydra/mark-errors.xsl", "hydra/log2html.xsl"):
        (reference / name).parent.mkdir(parents=True, exist_ok=True)
        (reference / name).write_text("")
    monkeypatch.setenv("CI", "true")
    tool = project.path / "bin" / "no-such-tool-5d1e"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    result = project.runpytest("-k", "reference or tool or plain")
    result.assert_outcomes(passed=3, deselected=2)


def test_markers_select_and_deselect(project: pytest.Pytester) -> None:
    result = project.runpytest("-m", "not nix and not debian-archive and not tools and not reference")
    result.assert_outcomes(passed=1, deselected=4)
    # the underscore spelling and the registered name are the same marker
    result = project.runpytest("-m", "debian-archive or debian_archive")
    result.assert_outcomes(skipped=1, deselected=4)
    result = project.runpytest("-m", "reference")
    result.assert_outcomes(skipped=1, deselected=4)


def test_every_marker_is_registered(project: pytest.Pytester) -> None:
    result = project.runpytest("--markers")
    for name in ("nix", "chromium", "root", "autopkgtest", "debian-archive", "dpkg", "reference", "tools"):
        result.stdout.fnmatch_lines([f"@pytest.mark.{name}*"])
    # and a misspelt one is an error, not a test that silently runs everywhere
    project.makepyfile(test_typo="import pytest\n@pytest.mark.nxi\ndef test_t():\n    pass\n")
    result = project.runpytest("test_typo.py")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*'nxi' not found in `markers` configuration option*"])


def test_the_outcome_file(project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    record = project.path / "outcomes.jsonl"
    monkeypatch.setenv("NIXTEST_SUITE_OUTCOMES", str(record))
    project.makepyfile(
        test_more="""
        import os, pytest

        def test_fails():
            assert False

        @pytest.mark.xfail(reason="known")
        def test_xfails():
            assert False

        def test_env_is_not_passed_on():
            assert "NIXTEST_SUITE_OUTCOMES" not in os.environ
        """
    )
    project.runpytest()
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    by_name = {line["id"].split("::")[-1]: (line["outcome"], line["reason"]) for line in lines}
    assert by_name == {
        "test_nix": ("skipped", NO_NIX),
        "test_tool": ("skipped", "needs no-such-tool-5d1e not on PATH"),
        "test_archive": ("skipped", "needs apt-get source: apt-get, dpkg-source not on PATH"),
        "test_reference": by_name["test_reference"],
        "test_plain": ("passed", ""),
        "test_fails": ("failed", ""),
        "test_xfails": ("xfailed", "known"),
        "test_env_is_not_passed_on": ("passed", ""),
    }
    assert by_name["test_reference"][0] == "skipped"


@pytest.mark.root
def test_root_marker_as_root_and_as_nobody() -> None:
    """The `root` marker for real: the same test file run by root and by `nobody`."""
    folder = world_readable_dir("nixtest-markers-")
    try:
        (folder / "conftest.py").write_text((CHECKOUT / "conftest.py").read_text())
        (folder / "test_root.py").write_text(
            "import os, pytest\n@pytest.mark.root\ndef test_r():\n    assert os.geteuid() == 0\n"
        )
        for path in folder.iterdir():
            path.chmod(0o644)
        command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", "test_root.py"]
        env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
        as_root = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=120)
        assert as_root.returncode == 0 and "1 passed" in as_root.stdout, as_root.stdout
        as_nobody = ["runuser", "-u", "nobody", "--", *command]
        skipped = subprocess.run(as_nobody, cwd=folder, env=env, capture_output=True, text=True, timeout=120)
        assert skipped.returncode == 0, skipped.stdout + skipped.stderr
        assert "1 skipped" in skipped.stdout and "needs root" in skipped.stdout, skipped.stdout
        failed = subprocess.run(
            as_nobody, cwd=folder, env={**env, "CI": "true"}, capture_output=True, text=True, timeout=120
        )
        assert failed.returncode == 1, failed.stdout + failed.stderr
        assert "1 error" in failed.stdout and "CI=true and a part this test needs is missing: needs root" in (
            failed.stdout
        ), failed.stdout
    finally:
        remove_tree(folder)


# -- the suite itself --------------------------------------------------------------

SUITE_FILES = sorted([*(CHECKOUT / "tests").glob("*.py"), *(CHECKOUT / "bench").glob("*.py")])


def test_the_suite_has_no_ad_hoc_skips() -> None:
    """A part a test needs is a marker of conftest.py; a test extra is imported, not import-or-skipped."""
    ad_hoc = ("import" + "orskip(", "mark." + "skipif(")  # spelt apart: this file is scanned too
    found = [
        f"{path.relative_to(CHECKOUT)}:{number}: {line.strip()}"
        for path in SUITE_FILES
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if any(word in line for word in ad_hoc)
    ]
    assert not found, "\n".join(found)


def test_no_test_names_a_folder_of_this_machine_outside_the_checkout() -> None:
    """Besides ../shared (conftest.py's `reference`), the suite reads what it carries or makes."""
    outside = ("/" + "work/", "/" + "root/", "/" + "home/")
    found = [
        f"{path.relative_to(CHECKOUT)}:{number}: {line.strip()}"
        for path in [*SUITE_FILES, CHECKOUT / "conftest.py"]
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if any(word in line for word in outside)
    ]
    assert not found, "\n".join(found)
