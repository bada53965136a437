"""The bundled package_tests/, run for real: the README's first command, a prefix set, the PATH fallback.

The README promises that `nixtest run` on a fresh Debian machine runs the
bundled tests against the machine's own packages; this runs that command (the
installed `nixtest` script, as the README names it, with its defaults) in a
copy of the checkout's package_tests/ and checks that every test defined there
passed.  The same tests then run under `--set prefix:FILE` (a prefix per
package, a view of the files the host package installed, as a Spack view or
/opt/x is) and through the `host` set's fallback on a machine without dpkg
(the programs on PATH).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from conftest import junit_outcomes, remove_tree, world_readable_dir

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "package_tests"
#: seconds a whole run of the bundled tests may take
RUN_TIMEOUT = 600

# The README's install line names these; the bundled tests test them.
pytestmark = [
    pytest.mark.dpkg,
    pytest.mark.tools("bash", "ls", "git", "gzip", "openssl", "python3", "sqlite3"),
]


def bundled_tests() -> set[str]:
    """Every `package::test` the bundled tests.yaml files define."""
    found = set()
    for tests_yaml in sorted(BUNDLED.glob("*/tests.yaml")):
        tests = yaml.safe_load(tests_yaml.read_text())["tests"]
        found.update(f"{tests_yaml.parent.name}::{name}" for name in tests)
    return found


@pytest.fixture
def checkout() -> Iterator[Path]:
    """A world-readable folder holding a copy of the bundled package_tests/, as a checkout does."""
    folder = world_readable_dir("nixtest-bundled-")
    shutil.copytree(BUNDLED, folder / "package_tests")
    # readable by anyone, modes kept: git::commit-log's commit hash covers the executable bit
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            mode = path.stat().st_mode
            os.chmod(path, mode | (0o555 if path.is_dir() else 0o444))
    yield folder
    remove_tree(folder)


def readme_run_command() -> list[str]:
    """The README's first command, its last part: `/opt/nixtest/bin/nixtest run`, for this install."""
    readme = (ROOT / "README.md").read_text()
    first = readme.split("```sh\n", 1)[1].split("\n```", 1)[0]
    argv = shlex.split(first.split("&&")[-1])
    assert argv == ["/opt/nixtest/bin/nixtest", "run"], argv
    # the same script, installed next to the interpreter that runs this suite
    installed = Path(sys.executable).parent / "nixtest"
    assert installed.is_file(), f"the nixtest command is not installed next to {sys.executable}"
    return [str(installed), *argv[1:]]


def run(cwd: Path, argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT, stdin=subprocess.DEVNULL
    )


def test_the_readme_run_passes_every_bundled_test(checkout: Path) -> None:
    done = run(checkout, readme_run_command())
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-5000:]
    # its defaults: --tests package_tests, --out nixtest-out
    results = junit_outcomes(checkout / "nixtest-out")
    expected = bundled_tests()
    assert len(expected) >= 30
    assert set(results) == expected
    not_passed = {test: result for test, result in results.items() if result[0] != "passed"}
    assert not not_passed, not_passed
    assert f"{len(expected)} passed in" in done.stdout.splitlines()[-1], done.stdout[-2000:]
    assert not (checkout / "nixtest-out" / "nix-support" / "failed").exists()


# -- prefix:FILE ------------------------------------------------------------------

#: a prefix's top-level folders, and where a Debian package keeps them
PREFIX_TOPS = ("bin", "sbin", "lib", "lib64", "include", "share", "libexec")


def dpkg_query(*args: str) -> str:
    return subprocess.run(["dpkg-query", *args], check=True, capture_output=True, text=True).stdout


def binaries_of_the_same_source(package: str) -> list[str]:
    """`package` and the installed binary packages built from its source (python3 and python3-minimal)."""
    source = {}
    for line in dpkg_query("-W", "-f", "${db:Status-Abbrev}\t${Package}\t${source:Package}\n").splitlines():
        status, name, src = line.split("\t")
        if status.startswith("ii"):
            source[name] = src
    return sorted(name for name, src in source.items() if src == source[package])


def make_prefix(prefix: Path, package: str) -> None:
    """A view of what the host package installed, as a Spack view is: PREFIX/bin/x -> /usr/bin/x."""
    for binary in binaries_of_the_same_source(package):
        for line in dpkg_query("-L", binary).splitlines():
            path = Path(line)
            parts = path.parts[2:] if path.parts[1:2] == ("usr",) else path.parts[1:]
            if not parts or parts[0] not in PREFIX_TOPS or path.is_dir() or not os.path.lexists(path):
                continue
            link = prefix.joinpath(*parts)
            if os.path.lexists(link):
                continue
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(path)


def test_the_bundled_tests_pass_on_a_prefix_set(checkout: Path) -> None:
    packages = sorted(p.parent.name for p in BUNDLED.glob("*/tests.yaml"))
    entries = {}
    for package in packages:
        prefix = checkout / "prefixes" / package
        make_prefix(prefix, package)
        assert (prefix / "bin").is_dir(), f"{package} installed no programs"
        version = dpkg_query("-W", "-f", "${Version}", package)
        entries[package] = {"prefix": str(prefix), "version": version}
    set_file = checkout / "prefixes.yaml"
    set_file.write_text(yaml.safe_dump(entries))

    done = run(checkout, readme_run_command() + ["--set", f"prefix:{set_file}"])
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    results = junit_outcomes(checkout / "nixtest-out")
    assert set(results) == bundled_tests()
    assert all(outcome == "passed" for outcome, _ in results.values()), results

    # the profiles are made of the prefixes, not of the host's /usr
    wrapper = (checkout / "nixtest-out" / "rerun" / "gzip" / "version").read_text()
    profile = re.search(r"^nt_profile=(\S+)$", wrapper, re.MULTILINE)
    assert profile, wrapper
    assert os.readlink(Path(profile.group(1)) / "bin" / "gzip") == str(
        checkout / "prefixes" / "gzip" / "bin" / "gzip"
    )


# -- the host set without dpkg: the programs on PATH --------------------------------

#: what the PATH set cannot give the bundled tests: a package is one program of that name
NOT_ON_PATH = {
    # no program is called coreutils
    "coreutils::version": ("error", "package 'coreutils' is not in the package set 'host'"),
    "coreutils::text-pipeline": ("error", "package 'coreutils' is not in the package set 'host'"),
    "coreutils::false-fails": ("error", "package 'coreutils' is not in the package set 'host'"),
    "coreutils::tools": ("error", "package 'coreutils' is not in the package set 'host'"),
    "bash::with-coreutils": ("error", "key 'symlinks.tools': package 'coreutils' is not in the package set"),
    "git::commit-log": ("error", "key 'profile': package 'coreutils' is not in the package set 'host'"),
    "git::no-identity": ("error", "key 'profile': package 'coreutils' is not in the package set 'host'"),
    # the package gzip is the program gzip: gunzip is another one
    "gzip::files": ("failed", "CommandNotFound: ('gunzip'"),
}


def test_the_bundled_tests_through_the_path_fallback(checkout: Path) -> None:
    # A machine without dpkg: every program of this one on PATH but dpkg's own.
    bin_dir = checkout / "bin"
    bin_dir.mkdir()
    for folder in ("/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"):
        for program in sorted(Path(folder).iterdir()) if Path(folder).is_dir() else []:
            if program.name.startswith("dpkg") or os.path.lexists(bin_dir / program.name):
                continue
            (bin_dir / program.name).symlink_to(program)
    env = {**os.environ, "PATH": str(bin_dir)}

    done = run(checkout, readme_run_command(), env=env)
    assert done.returncode == 1, (done.stdout + done.stderr)[-5000:]
    results = junit_outcomes(checkout / "nixtest-out")
    assert set(results) == bundled_tests()
    for test, (outcome, message) in NOT_ON_PATH.items():
        assert results[test][0] == outcome and message in results[test][1], (test, results[test])
    passed = {test for test, (outcome, _) in results.items() if outcome == "passed"}
    assert passed == bundled_tests() - set(NOT_ON_PATH)
    # a profile of the PATH set is the program itself
    assert "CommandNotFound: ('gunzip', [<LocalPath " in results["gzip::files"][1]
