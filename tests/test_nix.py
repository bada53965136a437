"""The nix:FILE package set and Nix profiles, against the real Nix (nix-env, nix-build, nix-store).

Everything is built from self-contained expressions (examples/nix/ and small
sets written here): derivations built by the machine's /bin/sh, nothing
downloaded.  Without nix-build on PATH these tests are skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from nixtest import nix
from nixtest.errors import PackageSetError, ProfileError, UnknownPackage
from nixtest.nix import NixSet, load_nix_set, nix_error, nix_string, profile_label, store_name
from nixtest.packagesets import load_set
from nixtest.profiles import build_profile

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "nix"
#: offline, unsandboxed (the builders use the machine's /bin/sh), builds as root
OFFLINE_NIX_CONFIG = "substituters =\nsandbox = false\nbuild-users-group ="


@pytest.fixture(autouse=True)
def nix_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nix without a binary cache (none is reachable): CI's NIX_CONFIG when it has one."""
    if not os.environ.get("NIX_CONFIG"):
        monkeypatch.setenv("NIX_CONFIG", OFFLINE_NIX_CONFIG)


def readable_dir(prefix: str) -> Path:
    path = Path(subprocess.check_output(["mktemp", "-d", f"/tmp/{prefix}XXXXXX"], text=True).strip())
    os.chmod(path, 0o755)
    return path


def make_readable(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():
            os.chmod(path, 0o755 if path.is_dir() else 0o644)


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def copy_example(dest: Path) -> Path:
    """examples/nix/ copied (its pytest module would leave __pycache__ in the checkout)."""
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns("__pycache__"))
    make_readable(dest)
    return dest


def run_nixtest(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nixtest.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def outcomes(out: Path) -> dict[str, str]:
    """`package::test` -> passed/failed/error/skipped, from OUT/junit.xml."""
    result = {}
    for case in ET.parse(out / "junit.xml").getroot().iter("testcase"):
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        outcome = (
            {"failure": "failed", "error": "error", "skipped": "skipped"}.get(kinds[0], "?")
            if kinds
            else "passed"
        )
        result[f"{case.get('classname')}::{case.get('name')}"] = outcome
    return result


def as_nobody(wrapper: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runuser", "-u", "nobody", "--", "env", "-i", "PATH=/usr/bin:/bin", str(wrapper)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def store_path_exists(path: str | Path) -> bool:
    done = subprocess.run(["nix-store", "--check-validity", str(path)], capture_output=True)
    return done.returncode == 0 and os.path.exists(path)


def write_set(folder: Path, body: str, name: str = "default.nix") -> Path:
    """A Nix file: `mk NAME SCRIPT` builds with /bin/sh; `nonce` makes its store paths new."""
    file = folder / name
    head = f"""
    let
      nonce = "{uuid.uuid4().hex}";
      mk = name: script: derivation {{
        inherit name nonce;
        system = builtins.currentSystem;
        builder = "/bin/sh";
        args = [ "-c" ("set -e\\n" + script) ];
        PATH = "/usr/bin:/bin";
      }};
      tool = name: word: mk name ''
        mkdir -p $out/bin
        printf '#!/bin/sh\\necho %s\\n' '${{word}}' > $out/bin/tool
        chmod +x $out/bin/tool
      '';
    in
    """
    file.write_text(textwrap.dedent(head) + textwrap.dedent(body))
    os.chmod(file, 0o644)
    return file


@pytest.fixture
def scratch() -> Iterator[Path]:
    path = readable_dir("nixtest-nix-")
    yield path
    remove(path)


@pytest.fixture(scope="module")
def example() -> Iterator[Path]:
    path = readable_dir("nixtest-nix-example-")
    yield copy_example(path / "nix")
    remove(path)


# ---------------------------------------------------------------------------
# no Nix needed


def test_nix_error_is_one_line() -> None:
    syntax = (
        "error: syntax error, unexpected end of file\n\n       at /x/bad.nix:1:6:\n\n            1| { a =\n"
    )
    assert nix_error(syntax) == "syntax error, unexpected end of file (at /x/bad.nix:1:6)"
    build = (
        "this derivation will be built:\n  /nix/store/abc-x.drv\n"
        "error: builder for '/nix/store/abc-x.drv' failed with exit code 2;\n"
        "       last 2 log lines:\n       > first\n       > no such tool\n"
        "       For full logs, run 'nix log /nix/store/abc-x.drv'.\n"
    )
    assert nix_error(build) == (
        "builder for '/nix/store/abc-x.drv' failed with exit code 2; last log line: no such tool;"
        " full log: nix-store -l /nix/store/abc-x.drv"
    )
    printed = (
        "this derivation will be built:\n  /nix/store/abc-x.drv\nbuilding '/nix/store/abc-x.drv'...\n"
        "first\nno such tool\nerror: builder for '/nix/store/abc-x.drv' failed with exit code 2\n"
    )
    assert nix_error(printed) == nix_error(build)
    assert nix_error("warning: w\nsomething odd\n") == "something odd"
    assert nix_error("") == "no error message"


def test_names_for_the_store_and_for_nix() -> None:
    assert store_name("tools.sed") == "tools.sed"
    assert store_name("a b/c") == "a_b_c"
    assert store_name(".hidden") == "_hidden"
    assert profile_label(["a", "tools.sed"]) == "a+tools.sed"
    long = profile_label([f"package-number-{i}" for i in range(10)])
    assert len(long) <= 64 and long.endswith("+10pkgs")
    assert nix_string('a "b" ${c} \\ \n') == '"a \\"b\\" \\${c} \\\\ \\n"'


def test_prebuilt_set_runs_no_nix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside a jobset's build, nixtest answers from what release.nix built: no Nix command runs."""
    data = {
        "set": "nix:/nowhere/default.nix",
        "packages": {"hello": {"name": "hello-2.12.1", "version": "2.12.1", "outputs": [str(tmp_path)]}},
        "profiles": {"hello": str(tmp_path / "profile")},
    }
    monkeypatch.setenv(nix.PREBUILT_ENV, json.dumps(data))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no nix-* to call
    pset = load_set("nix:/nowhere/default.nix")
    assert isinstance(pset, NixSet)
    assert pset.names() == ["hello"] and pset.version("hello") == "2.12.1"
    assert not pset.has("goodbye")
    profile = build_profile(pset, ["hello"], tmp_path / "state")
    assert profile.path == tmp_path / "profile" and profile.packages == ("hello",)
    assert not (tmp_path / "state").exists()
    with pytest.raises(UnknownPackage):
        build_profile(pset, ["goodbye"], tmp_path / "state")
    # Another set's spec ignores the variable; a spec naming no file is an error.
    with pytest.raises(PackageSetError, match="no such Nix file"):
        load_set("nix:/elsewhere/default.nix")


def test_bad_specs() -> None:
    with pytest.raises(PackageSetError, match="expected nix:FILE"):
        load_nix_set("nix:", "")
    with pytest.raises(PackageSetError, match=r"/no/such\.nix: no such Nix file"):
        load_set("nix:/no/such.nix")


# ---------------------------------------------------------------------------
# the set


@pytest.mark.nix
def test_bad_nix_files_are_one_line_errors(scratch: Path) -> None:
    cases = {
        "syntax.nix": ("{ a = ", r"syntax\.nix: listing its packages: syntax error.*\(at .*syntax\.nix:1:"),
        "number.nix": (
            "42",
            r"number\.nix: listing its packages: expression does not evaluate to a derivation",
        ),
        "needs.nix": ("{ pkgs }: { }", r"needs\.nix: listing its packages: cannot evaluate a function"),
    }
    for name, (text, pattern) in cases.items():
        (scratch / name).write_text(text)
        pset = load_set(f"nix:{scratch / name}")
        with pytest.raises(PackageSetError, match=pattern) as info:
            pset.names()
        assert "\n" not in info.value.message
    # A folder is its default.nix; nix-env would read every .nix file in it.
    (scratch / "default.nix").write_text("{ }")
    assert load_set(f"nix:{scratch}").names() == []


@pytest.mark.nix
def test_listing_versions_and_nested_names(scratch: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = write_set(
        scratch,
        """
        {
          hello = mk "hello-2.12.1" "mkdir -p $out/bin";
          plain = mk "plain" "mkdir -p $out";
          tools = { recurseForDerivations = true; sed = mk "sed-4.9" "mkdir -p $out/bin"; };
          hidden = { grep = mk "grep-3.8" "mkdir -p $out/bin"; };
          notapackage = 3;
        }
        """,
    )
    calls: list[list[str]] = []
    real_run = subprocess.run

    def counting_run(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        calls.append(list(args))
        return real_run(args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(nix.subprocess, "run", counting_run)
    pset = load_set(f"nix:{file}")
    assert pset.names() == ["hello", "plain", "tools.sed"]
    assert pset.version("hello") == "2.12.1" and pset.version("tools.sed") == "4.9"
    assert pset.version("plain") == ""
    assert pset.has("hello") and pset.has("tools.sed") and not pset.has("tools")
    assert not pset.has("tools") and pset.has("hello")
    listings = [c for c in calls if c[:2] == ["nix-env", "-qaP"] and "-A" not in c]
    assert len(listings) == 1, calls  # one evaluation of the whole set for the run
    lookups = [c for c in calls if "-A" in c]
    assert [c[-1] for c in lookups] == ["tools"], calls  # an unlisted name: looked up once
    assert all(c[0] != "nix-build" for c in calls)  # nothing built to list
    # An attribute path nix-env -qa does not descend into is a package all the same.
    assert pset.has("hidden.grep") and pset.version("hidden.grep") == "3.8"
    assert not pset.has("hidden.nope") and not pset.has("notapackage") and not pset.has("nope")
    assert pset.names() == ["hello", "hidden.grep", "plain", "tools.sed"]
    with pytest.raises(UnknownPackage):
        pset.version("nope")


@pytest.mark.nix
def test_packages_are_built_lazily_with_gc_roots(scratch: Path) -> None:
    file = write_set(
        scratch,
        """
        rec {
          data = mk "data-1.0" "mkdir -p $out/share; echo hi > $out/share/greeting";
          hello = mk "hello-2.12.1" "mkdir -p $out/bin; echo 'cat ${data}/share/greeting' > $out/bin/hello";
          unused = mk "unused-1" "mkdir -p $out/bin";
        }
        """,
    )
    out_paths = json.loads(
        subprocess.check_output(["nix-env", "-qaP", "--json", "--out-path", "-f", str(file)])
    )
    path = {attr: info["outputs"]["out"] for attr, info in out_paths.items()}
    state = scratch / "state"
    pset = NixSet(file, state_dir=state)
    assert pset.names() == ["data", "hello", "unused"]
    assert not any(store_path_exists(p) for p in path.values())  # listing built nothing

    profile = build_profile(pset, ["hello"], state)
    assert store_path_exists(path["hello"]) and store_path_exists(path["data"])
    assert not store_path_exists(path["unused"])
    assert pset.dependencies("hello") == ["data"]
    assert pset.files("hello") == [Path(path["hello"]) / "bin" / "hello"]
    roots = list((state / "gcroots").iterdir())
    assert len(roots) == 1 and os.readlink(roots[0] / "hello") == path["hello"]
    assert os.readlink(state / "profiles" / profile.path.name) == str(profile.path)

    # The roots keep the package and the profile through a garbage collection.
    unrooted = subprocess.check_output(
        ["nix-build", str(file), "-A", "unused", "--no-out-link"], text=True, stderr=subprocess.DEVNULL
    ).strip()
    subprocess.run(["nix-collect-garbage"], check=True, capture_output=True)
    assert not store_path_exists(unrooted)  # the collector did run
    assert store_path_exists(profile.path) and store_path_exists(path["hello"])
    assert store_path_exists(path["data"])  # a dependency, through its references


@pytest.mark.nix
def test_profiles_are_nix_profiles(example: Path, scratch: Path) -> None:
    state = scratch / "state"
    pset = load_set(f"nix:{example}")
    hello = build_profile(pset, ["hello"], state)
    assert str(hello.path).startswith("/nix/store/") and hello.path.name.endswith("-nixtest-profile-hello")
    assert sorted(os.listdir(hello.path / "bin")) == ["hello"]  # no ls, though the machine has one
    assert not (hello.path / "bin" / "ls").exists()
    # what nix-env -i builds: nix-env reads it back as a profile
    listed = subprocess.check_output(
        ["nix-env", "-p", str(state / "profiles" / hello.path.name), "-q"], text=True
    )
    assert listed.split() == ["hello-2.12.1"]
    # content-addressed by Nix: the same packages, the same store path, in any order
    both = build_profile(pset, ["tools.sed", "hello", "tools.sed"], state)
    assert both.packages == ("hello", "tools.sed")
    assert build_profile(load_set(f"nix:{example}"), ["hello", "tools.sed"], state).path == both.path
    assert sorted(os.listdir(both.path / "bin")) == ["hello", "sed"]
    assert both.path != hello.path and both.collisions == ()


@pytest.mark.nix
def test_collisions_follow_priority_then_order(scratch: Path) -> None:
    file = write_set(
        scratch,
        """
        {
          a = tool "a-1" "from-a";
          b = tool "b-1" "from-b";
          c = (tool "c-1" "from-c") // { meta.priority = 1; };
        }
        """,
    )
    pset = load_set(f"nix:{file}")
    state = scratch / "state"

    def says(profile_path: Path) -> str:
        return subprocess.check_output([str(profile_path / "bin" / "tool")], text=True).strip()

    ab = build_profile(pset, ["b", "a"], state)
    assert says(ab.path) == "from-a"
    assert len(ab.collisions) == 1 and ab.collisions[0].startswith(
        "bin/tool: provided by a and b; kept a's ("
    )
    abc = build_profile(pset, ["a", "b", "c"], state)
    assert says(abc.path) == "from-c"  # meta.priority 1 beats the default 5
    assert [c.split(";")[0] for c in abc.collisions] == [
        "bin/tool: provided by c and a",
        "bin/tool: provided by c and b",
    ]


@pytest.mark.nix
def test_a_failed_build_is_a_one_line_profile_error(scratch: Path) -> None:
    file = write_set(scratch, '{ broken = mk "broken-1" "echo the build went wrong >&2; exit 3"; }')
    pset = load_set(f"nix:{file}")
    with pytest.raises(ProfileError) as info:
        build_profile(pset, ["broken"], scratch / "state")
    message = info.value.message
    assert "building package 'broken'" in message and "failed with exit code 3" in message
    assert "last log line: the build went wrong" in message and "nix-store -l /nix/store/" in message


# ---------------------------------------------------------------------------
# runs


@pytest.mark.nix
def test_example_run(example: Path, scratch: Path) -> None:
    out = scratch / "out"
    done = run_nixtest(
        "run",
        "--set",
        f"nix:{example}",
        "--tests",
        str(example / "package_tests"),
        "--out",
        str(out),
        "--state",
        str(scratch / "state"),
    )
    assert done.returncode == 1, done.stdout + done.stderr
    got = outcomes(out)
    assert got == {
        "coreutils::selftest": "passed",
        "coreutils::version": "passed",
        "goodbye::greets": "failed",
        "goodbye::version": "passed",
        "hello::alone": "passed",
        "hello::greets": "passed",
        "hello::module": "passed",
        "hello::session": "passed",
        "hello::version": "passed",
        "python3::modules": "passed",
        "python3::version": "passed",
        "tools.sed::substitute": "passed",
        "tools.sed::version": "passed",
    }, done.stdout
    assert (out / "nix-support" / "failed").exists() and (out / "log.xml").exists()
    for name in got:
        package, test = name.split("::")
        wrapper = (out / "rerun" / package / test).read_text()
        assert "nt_profile=/nix/store/" in wrapper and "PATH=/nix/store/" in wrapper, name
    # Any user can run the wrappers: classic, pytest module, run:, imports:, nested name.
    for package, test in [
        ("hello", "session"),
        ("hello", "module"),
        ("coreutils", "selftest"),
        ("tools.sed", "substitute"),
        ("python3", "modules"),
    ]:
        rerun = as_nobody(out / "rerun" / package / test)
        assert rerun.returncode == 0, (package, test, rerun.stdout, rerun.stderr)
    assert as_nobody(out / "rerun" / "goodbye" / "greets").returncode == 1


@pytest.mark.nix
def test_only_selected_tests_build_their_packages(scratch: Path) -> None:
    file = write_set(
        scratch,
        """
        {
          hello = tool "hello-1" "hi";
          other = tool "other-1" "never built";
        }
        """,
    )
    tests = scratch / "pt"
    for package in ("hello", "other"):
        (tests / package).mkdir(parents=True)
        (tests / package / "tests.yaml").write_text("tests:\n  says:\n    run: tool\n")
    make_readable(scratch)
    out_paths = json.loads(
        subprocess.check_output(["nix-env", "-qaP", "--json", "--out-path", "-f", str(file)])
    )
    done = run_nixtest(
        "run",
        "hello::says",
        "--set",
        f"nix:{file}",
        "--tests",
        str(tests),
        "--out",
        str(scratch / "out"),
        "--state",
        str(scratch / "state"),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert store_path_exists(out_paths["hello"]["outputs"]["out"])
    assert not store_path_exists(out_paths["other"]["outputs"]["out"])


COMPARE_SET = """
{
  coreutils = mk "coreutils-9.1" ''
    mkdir -p $out/bin
    for t in cat ls sort; do ln -s /usr/bin/$t $out/bin/$t; done
  '';
  sed = mk "sed-4.9" "mkdir -p $out/bin; ln -s /usr/bin/sed $out/bin/sed";
}
"""

SELFTEST = """\
# ruff: noqa: F821
import os

from plumbum.cmd import cat, ls, sort

here = str(local.cwd)
for name, program in (("coreutils", "ls"), ("sed", "sed")):
    linked = os.path.realpath(absjoin(here, name))
    assert os.path.exists(absjoin(linked, "bin", program)), (name, linked)
assert not os.path.exists(absjoin(os.path.realpath(absjoin(here, "coreutils")), "bin", "sed"))
ls["-l", "words.txt"] & succeeds("the skel is there")
(cat["words.txt"] | sort) & succeeds("sort the words")
sed = local[absjoin(here, "sed", "bin", "sed")]
said = sed["-e", "s/WORD/" + os.environ["SELFTEST_WORD"] + "/", "words.txt"] & succeeds("sed")
assert said.splitlines()[0] == "hello nixtest", said
ls["no-such-file"] & fails("ls of a missing file fails")
"""


@pytest.mark.nix
@pytest.mark.dpkg  # compares with the host set
def test_same_outcomes_as_on_the_host_set(scratch: Path) -> None:
    file = write_set(scratch, COMPARE_SET)
    tests = scratch / "pt"
    (tests / "coreutils" / "skel").mkdir(parents=True)
    (tests / "coreutils" / "skel" / "words.txt").write_text("hello WORD\nzebra\napple\n")
    (tests / "coreutils" / "selftest.py").write_text(SELFTEST)
    (tests / "coreutils" / "tests.yaml").write_text(
        textwrap.dedent(
            """\
            tests:
              selftest:
                script: selftest.py
                skel: skel/
                symlinks: {coreutils: [coreutils], sed: [sed]}
                environment: {SELFTEST_WORD: nixtest}
              fails-on-purpose:
                run: ls /no/such/file
            """
        )
    )
    (tests / "sed").mkdir()
    (tests / "sed" / "tests.yaml").write_text(
        "tests:\n  substitute:\n    run: echo abc | sed s/b/x/\n    profile: [sed, coreutils]\n"
        "    expect: {stdout: '^axc$'}\n"
    )
    (tests / "no-such-package-nixtest").mkdir()
    (tests / "no-such-package-nixtest" / "tests.yaml").write_text("tests:\n  t:\n    run: 'true'\n")
    make_readable(scratch)
    results = {}
    for label, spec in (("host", "host"), ("nix", f"nix:{file}")):
        out = scratch / f"out-{label}"
        done = run_nixtest("run", "--set", spec, "--tests", str(tests), "--out", str(out))
        assert done.returncode == 1, done.stdout + done.stderr
        results[label] = outcomes(out)
        wrapper = out / "rerun" / "coreutils" / "selftest"
        assert as_nobody(wrapper).returncode == 0, as_nobody(wrapper).stderr
        assert ("/nix/store/" in wrapper.read_text()) == (label == "nix")
    assert (
        results["nix"]
        == results["host"]
        == {
            "coreutils::selftest": "passed",
            "coreutils::fails-on-purpose": "failed",
            "sed::substitute": "passed",
            "no-such-package-nixtest::t": "error",
        }
    )
