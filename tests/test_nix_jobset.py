"""`nixtest jobset`: the release.nix it prints, evaluated and built by the real Nix.

The jobs of examples/nix/ are built for real (each runs nixtest inside its
Nix build); a fresh file in the tests folder makes them new derivations on
every run, so that nothing comes from an earlier build.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from nixtest.jobset import Job, find_jobs, job_paths, nix_attr, nix_path
from nixtest.packagesets import load_set
from nixtest.profiles import build_profile

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "nix"
OFFLINE_NIX_CONFIG = "substituters =\nsandbox = false\nbuild-users-group ="

#: every job of examples/nix/ and whether its test fails (on purpose: goodbye.greets)
EXAMPLE_JOBS = {
    "coreutils.selftest": False,
    "coreutils.version": False,
    "goodbye.greets": True,
    "goodbye.version": False,
    "hello.alone": False,
    "hello.greets": False,
    "hello.module": False,
    "hello.session": False,
    "hello.version": False,
    "python3.modules": False,
    "python3.version": False,
    "tools.sed.substitute": False,
    "tools.sed.version": False,
}


@pytest.fixture(scope="module", autouse=True)
def nix_config() -> Iterator[None]:
    """Nix without a binary cache (none is reachable): CI's NIX_CONFIG when it has one."""
    with pytest.MonkeyPatch.context() as patch:
        if not os.environ.get("NIX_CONFIG"):
            patch.setenv("NIX_CONFIG", OFFLINE_NIX_CONFIG)
        yield


def make_readable(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():
            os.chmod(path, 0o755 if path.is_dir() else 0o644)


def readable_dir(prefix: str) -> Path:
    path = Path(subprocess.check_output(["mktemp", "-d", f"/tmp/{prefix}XXXXXX"], text=True).strip())
    os.chmod(path, 0o755)
    return path


def nixtest(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nixtest.cli", *args], capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def fresh_example() -> Iterator[Path]:
    """examples/nix/ in a world-readable folder, its tests made new for this run."""
    root = readable_dir("nixtest-jobset-")
    example = root / "nix"
    shutil.copytree(EXAMPLE, example, ignore=shutil.ignore_patterns("__pycache__"))
    (example / "package_tests" / "RUN-ID").write_text(uuid.uuid4().hex + "\n")
    make_readable(root)
    yield example
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def release(nix_config: None, fresh_example: Path) -> Path:
    """`nixtest jobset` of the example, written into the example's folder."""
    file = fresh_example / "release.nix"
    done = nixtest(
        "jobset",
        "--set",
        f"nix:{fresh_example}",
        "--tests",
        str(fresh_example / "package_tests"),
        "-o",
        str(file),
    )
    assert done.returncode == 0, done.stderr
    return file


# ---------------------------------------------------------------------------
# no Nix needed


def test_attribute_names_and_paths(tmp_path: Path) -> None:
    assert nix_attr("hello") == "hello" and nix_attr("x-1_y'") == "x-1_y'"
    assert nix_attr("tools.sed") == '"tools.sed"' and nix_attr("7zip") == '"7zip"'
    assert nix_attr("in") == '"in"' and nix_attr('a"b${c}') == '"a\\"b\\${c}"'
    assert nix_path(Path("/a/b/default.nix")) == "/a/b/default.nix"
    assert nix_path(Path("/a/b c")) == '/. + "/a/b c"'
    assert nix_path(Path("/a/b/default.nix"), Path("/a/b")) == "./default.nix"
    assert nix_path(Path("/a/tests"), Path("/a/b")) == "../tests"
    assert nix_path(Path("/a/b c"), Path("/a")) == './. + "/b c"'


def test_job_paths_nest_attribute_paths() -> None:
    jobs = [Job("hello", "greets", ""), Job("tools.sed", "v1.2", ""), Job("a..b", "t", "")]
    assert job_paths(jobs) == [("hello", "greets"), ("tools", "sed", "v1.2"), ("a..b", "t")]
    # A package `tools` with a test `sed` and a package `tools.sed`: the latter is quoted whole.
    clash = [Job("tools", "sed", ""), Job("tools.sed", "x", "")]
    assert job_paths(clash) == [("tools", "sed"), ("tools.sed", "x")]


def test_jobs_know_their_profiles() -> None:
    jobs = {f"{j.package}::{j.test}": j for j in find_jobs(EXAMPLE / "package_tests")}
    assert set(jobs) == {"::".join(attr.rsplit(".", 1)) for attr in EXAMPLE_JOBS}
    selftest = jobs["coreutils::selftest"]
    assert selftest.selection == "coreutils::selftest"
    assert selftest.packages == ["coreutils", "hello", "tools.sed"]
    assert selftest.profiles == [("coreutils",), ("hello",), ("tools.sed",)]
    assert jobs["hello::greets"].profiles == [("hello",)] and jobs["hello::greets"].timeout == 600
    assert [j.package for j in find_jobs(EXAMPLE / "package_tests", ["hello"])] == ["hello"] * 5


def test_jobset_needs_a_nix_set() -> None:
    done = nixtest("jobset", "--set", "host", "--tests", str(EXAMPLE / "package_tests"))
    assert done.returncode == 4
    assert (
        done.stderr.strip() == "nixtest: nixtest jobset needs --set nix:FILE (a Nix package set), not 'host'"
    )
    done = nixtest("jobset", "--set", "nix:/no/such.nix", "--tests", str(EXAMPLE / "package_tests"))
    assert done.returncode == 4 and "/no/such.nix: no such Nix file" in done.stderr
    done = nixtest("jobset", "nosuch", "--set", f"nix:{EXAMPLE}", "--tests", str(EXAMPLE / "package_tests"))
    assert done.returncode == 4 and "no tests for package(s): nosuch" in done.stderr


# ---------------------------------------------------------------------------
# with Nix


@pytest.mark.nix
def test_bad_nix_file_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "bad.nix").write_text("{ a = ")
    done = nixtest(
        "jobset", "--set", f"nix:{tmp_path / 'bad.nix'}", "--tests", str(EXAMPLE / "package_tests")
    )
    assert done.returncode == 4
    assert len(done.stderr.strip().splitlines()) == 1
    assert f"{tmp_path / 'bad.nix'}: listing its packages: syntax error" in done.stderr


@pytest.mark.nix
def test_jobset_evaluates(release: Path, fresh_example: Path) -> None:
    text = release.read_text()
    assert "packageSet ? ./default.nix" in text and "tests ? ./package_tests" in text
    assert f'nixtest ? "{os.path.dirname(sys.executable)}/nixtest"' in text
    drvs = subprocess.run(["nix-instantiate", str(release)], capture_output=True, text=True)
    assert drvs.returncode == 0, drvs.stderr
    assert len(drvs.stdout.split()) == len(EXAMPLE_JOBS)
    listed = subprocess.check_output(["nix-env", "-qaP", "-f", str(release)], text=True)
    assert {line.split()[0] for line in listed.splitlines()} == set(EXAMPLE_JOBS)
    # Printed, the paths are absolute; nixtest may be a derivation (its bin/nixtest runs).
    printed = nixtest(
        "jobset", "hello", "--set", f"nix:{fresh_example}", "--tests", str(fresh_example / "package_tests")
    )
    assert printed.returncode == 0, printed.stderr
    assert f"packageSet ? {fresh_example}/default.nix" in printed.stdout
    (fresh_example / "printed.nix").write_text(printed.stdout)
    command = subprocess.check_output(
        [
            "nix-instantiate",
            "--eval",
            "--json",
            "-E",
            f'(import {fresh_example}/printed.nix {{ nixtest = {{ outPath = "/opt/x"; }}; }})'
            ".hello.greets.nixtestCommand",
        ],
        text=True,
    )
    assert json.loads(command) == "/opt/x/bin/nixtest"


@pytest.mark.nix
def test_every_job_builds_a_hydra_output(release: Path, fresh_example: Path, tmp_path: Path) -> None:
    links = fresh_example / "results"
    args = ["nix-build", str(release), "--max-jobs", "4", "-o", str(links / "r")]
    for attr in EXAMPLE_JOBS:
        args += ["-A", attr]
    done = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]  # a failed test still builds
    outs = dict(zip(EXAMPLE_JOBS, done.stdout.split()))
    assert len(outs) == len(EXAMPLE_JOBS)
    for attr, fails in EXAMPLE_JOBS.items():
        out = Path(outs[attr])
        package, test = attr.rsplit(".", 1)
        for name in ("junit.xml", "log.xml", "log.html", "nix-support/hydra-build-products"):
            assert (out / name).is_file(), (attr, name)
        products = (out / "nix-support" / "hydra-build-products").read_text()
        assert f"report junit {out}/junit.xml" in products, products
        assert (out / "nix-support" / "failed").exists() == fails, attr
        assert os.access(out / "rerun" / package / test, os.X_OK), attr
    # The job kept what its wrapper names: the profile and the tests are in its closure.
    selftest = Path(outs["coreutils.selftest"])
    refs = subprocess.check_output(["nix-store", "-q", "--references", str(selftest)], text=True).split()
    assert sum("-nixtest-profile-" in r for r in refs) == 3 and any(
        "-nixtest-package-tests" in r for r in refs
    )
    wrapper = (selftest / "rerun" / "coreutils" / "selftest").read_text()
    assert "nt_profile=/nix/store/" in wrapper and "/nix/store/" in wrapper.split("--spec", 1)[1]
    # The same profiles as `nixtest run` builds: one derivation for both.
    pset = load_set(f"nix:{fresh_example}")
    local = {
        str(build_profile(pset, [name], tmp_path / "state").path)
        for name in ("coreutils", "hello", "tools.sed")
    }
    assert local == {r for r in refs if "-nixtest-profile-" in r}
    # Reproducing a job: its wrapper, straight from the store, as any user, after a GC.
    subprocess.run(["nix-collect-garbage"], check=True, capture_output=True)
    for attr, fails in [("coreutils.selftest", False), ("hello.session", False), ("goodbye.greets", True)]:
        package, test = attr.rsplit(".", 1)
        rerun = subprocess.run(
            [
                "runuser",
                "-u",
                "nobody",
                "--",
                "env",
                "-i",
                "PATH=/usr/bin:/bin",
                f"{outs[attr]}/rerun/{package}/{test}",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert rerun.returncode == (1 if fails else 0), (attr, rerun.stdout, rerun.stderr)


@pytest.mark.nix
def test_jobs_of_broken_definitions_fail_with_output(tmp_path: Path) -> None:
    """A package the set lacks and a bad definition: the jobs build and report the error."""
    root = readable_dir("nixtest-jobset-bad-")
    try:
        shutil.copy(EXAMPLE / "default.nix", root / "default.nix")
        shutil.copytree(EXAMPLE / "src", root / "src")
        tests = root / "pt"
        (tests / "nosuch").mkdir(parents=True)
        (tests / "nosuch" / "tests.yaml").write_text("tests:\n  t:\n    run: 'true'\n")
        (tests / "hello").mkdir()
        (tests / "hello" / "tests.yaml").write_text(
            f"# {uuid.uuid4().hex}\ntests:\n"
            "  bad:\n    run: hello\n    colour: blue\n"
            "  good:\n    run: hello\n"
        )
        make_readable(root)
        done = nixtest(
            "jobset", "--set", f"nix:{root}", "--tests", str(tests), "-o", str(root / "release.nix")
        )
        assert done.returncode == 0, done.stderr
        assert "warning: package 'nosuch' is not in nix:" in done.stderr
        build = subprocess.run(
            [
                "nix-build",
                str(root / "release.nix"),
                "-A",
                "nosuch.t",
                "-A",
                "hello.bad",
                "-A",
                "hello.good",
                "--no-out-link",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert build.returncode == 0, build.stderr[-3000:]
        nosuch, bad, good = (Path(p) for p in build.stdout.split())
        assert (nosuch / "nix-support" / "failed").exists() and (bad / "nix-support" / "failed").exists()
        assert not (good / "nix-support" / "failed").exists()
        assert "is not in the package set" in (nosuch / "junit.xml").read_text()
        assert "colour" in (bad / "junit.xml").read_text()
    finally:
        shutil.rmtree(root, ignore_errors=True)
