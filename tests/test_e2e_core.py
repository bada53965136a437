"""End to end: real package tests of this machine's packages, run by `nixtest run` and by pytest.

Every run is a real subprocess (through pytester), with the real dpkg package
set, real profiles, real wrappers and real processes.  The package tests and
the output folder live in a world-readable folder under /tmp, so that a wrapper
can also be run by hand as `nobody`.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import secrets
import shutil
import subprocess
import sys
import sysconfig
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

import nixtest
from conftest import Suite, pgrep, pids_matching, world_readable_dir

# the end-to-end runs test the host's dpkg packages hello, coreutils, bash and python3
pytestmark = [pytest.mark.dpkg, pytest.mark.tools("hello")]

#: seconds a whole run may take before the test gives up on it
RUN_TIMEOUT = 180

PytesterRun = pytest.RunResult


def nixtest_run(
    pytester: pytest.Pytester, suite: Suite, *args: str, python: str = sys.executable
) -> PytesterRun:
    """`nixtest run --tests pt --out out ARGS` in a subprocess."""
    return pytester.run(
        python,
        "-m",
        "nixtest.cli",
        "run",
        "--tests",
        str(suite.tests),
        "--out",
        str(suite.out),
        *args,
        timeout=RUN_TIMEOUT,
    )


def pytest_run(pytester: pytest.Pytester, suite: Suite, *args: str) -> PytesterRun:
    """Plain `pytest pt/ --nixtest-out out ARGS`, the plugin found by its entry point."""
    return pytester.runpytest_subprocess(
        str(suite.tests), "--nixtest-out", str(suite.out), *args, timeout=RUN_TIMEOUT
    )


def text_of(run: PytesterRun) -> str:
    return run.stdout.str() + "\n" + run.stderr.str()


def junit_outcomes(out: Path) -> dict[str, str]:
    """`package::test` -> passed/failed/error/skipped, from OUT/junit.xml."""
    root = ET.parse(out / "junit.xml").getroot()
    outcomes = {}
    for suite in root.iter("testsuite"):
        for case in suite.iter("testcase"):
            outcome = "passed"
            for tag in ("failure", "error", "skipped"):
                if case.find(tag) is not None:
                    outcome = {"failure": "failed"}.get(tag, tag)
            outcomes[f"{suite.get('name')}::{case.get('name')}"] = outcome
    return outcomes


def junit_case(out: Path, nodeid: str) -> ET.Element:
    package, test = nodeid.split("::")
    root = ET.parse(out / "junit.xml").getroot()
    for suite in root.iter("testsuite"):
        for case in suite.iter("testcase"):
            if suite.get("name") == package and case.get("name") == test:
                return case
    raise AssertionError(f"{nodeid} is not in junit.xml")


def run_by_hand(
    wrapper: Path, *args: str, as_nobody: bool = False, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The wrapper, run from another folder with a cleared environment (optionally as nobody)."""
    assignments = [f"{k}={v}" for k, v in (env or {}).items()]
    argv = ["env", "-i", "PATH=/usr/bin:/bin", *assignments, str(wrapper), *args]
    if as_nobody:
        argv = ["runuser", "-u", "nobody", "--", *argv]
    return subprocess.run(
        argv, cwd="/", capture_output=True, text=True, timeout=RUN_TIMEOUT, stdin=subprocess.DEVNULL
    )


# --------------------------------------------------------------------------- classic scripts

CLASSIC = """\
# A nixtest script as written in 2014: plumbum, and the globals nixtest gives it.
import os
from plumbum.cmd import hello

log.info("testing hello in %s", os.getcwd())
try:
    from plumbum.cmd import ls
except ImportError:
    pass
else:
    raise AssertionError("ls is on the PATH of a profile of hello alone")

assert os.environ["PATH"] == os.path.join(os.path.realpath("profile"), "bin"), os.environ["PATH"]
assert envvars(absjoin("profile"))["PATH"] == absjoin("profile", "bin")
assert os.environ["HOME"] == os.getcwd()

hello & succeeds("hello runs")
greeting = hello["--greeting", os.environ["GREETING"]] & succeeds("hello greets as told")
assert greeting == os.environ["GREETING"] + "\\n", repr(greeting)
(hello > "/dev/full") & fails("hello reports that it cannot write")

# a symlink to a profile of coreutils alone
ls = local[absjoin("core", "bin", "ls")]
listing = ls["-1"] & succeeds("core/bin/ls lists the working directory")
assert set(listing.split()) >= {"data.txt", "src", "core", "profile"}, listing

# sources are copied writable
with open(absjoin("src", "input.txt"), "a") as f:
    f.write("appended\\n")
with local.env(**envvars(absjoin("core"))):
    text = local["cat"]["src/input.txt"] & succeeds("cat from core's envvars reads the source")
assert text == "read-only in the package\\nappended\\n", repr(text)
"""

BROKEN = """\
from plumbum.cmd import hello

hello & succeeds("first step works")
(hello > "/dev/full") & succeeds("second step: hello writes to /dev/full")
hello & succeeds("third step")
"""


@pytest.fixture
def hello_suite(suite: Suite) -> Iterator[Suite]:
    folder = suite.package(
        "hello",
        """
        tests:
          classic:
            script: classic.py
            skel: skel/
            sources: {src: src/}
            symlinks:
              core: [coreutils]
            environment: {GREETING: "Grüß dich, 'world'"}
          broken:
            script: broken.py
          greets:
            run: hello
            expect: {stdout: '^Hello, world!$'}
        """,
        files={
            "classic.py": CLASSIC,
            "broken.py": BROKEN,
            "skel/data.txt": "from skel\n",
            "src/input.txt": "read-only in the package\n",
        },
    )
    os.chmod(folder / "src" / "input.txt", 0o444)
    os.chmod(folder / "src", 0o555)
    yield suite
    os.chmod(folder / "src", 0o755)


def test_classic_script_runs_unchanged_and_fails_at_its_step(
    pytester: pytest.Pytester, hello_suite: Suite
) -> None:
    suite = hello_suite
    run = nixtest_run(pytester, suite)
    output = text_of(run)
    assert run.ret == 1, output
    assert junit_outcomes(suite.out) == {
        "hello::classic": "passed",
        "hello::broken": "failed",
        "hello::greets": "passed",
    }, output
    assert "hello::broken failed: failed at step 2 'second step: hello writes to /dev/full'" in output
    assert "step 2 of 2: second step: hello writes to /dev/full" in output
    assert f"to reproduce: {suite.wrapper('hello', 'broken')}" in output
    failure = junit_case(suite.out, "hello::broken").find("failure")
    assert failure is not None
    assert "step 2 'second step: hello writes to /dev/full'" in (failure.get("message") or "")
    # every step of the classic script is in its log
    log = suite.log("hello", "classic").read_text()
    assert "INFO" in log and "testing hello in" in log

    # the source in the package folder is untouched
    assert (suite.tests / "hello" / "src" / "input.txt").read_text() == "read-only in the package\n"

    # all pass: exit 0, and PKG::TEST runs that test alone
    run = nixtest_run(pytester, suite, "hello::classic", "hello::greets")
    assert run.ret == 0, text_of(run)
    assert junit_outcomes(suite.out) == {"hello::classic": "passed", "hello::greets": "passed"}
    run.stdout.fnmatch_lines(["*2 passed, 1 deselected*"])


# --------------------------------------------------------------------------- wrappers as another user


def nobody_can_import(python: str) -> bool:
    done = subprocess.run(
        ["runuser", "-u", "nobody", "--", python, "-I", "-c", "import nixtest.driver, plumbum, pytest"],
        cwd="/",
        capture_output=True,
    )
    return done.returncode == 0


def readable_python(root: Path) -> str:
    """An interpreter with which `nobody` imports nixtest.

    The venv's own when it can; when the checkout (an editable install) is
    private, a world-readable venv of the same interpreter holding a copy of
    the nixtest package, and the venv's site-packages for its dependencies.
    """
    if nobody_can_import(sys.executable):
        return sys.executable
    venv = root / "py"
    base = os.path.realpath(sys.executable)
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python3").symlink_to(base)
    (venv / "pyvenv.cfg").write_text(
        f"home = {os.path.dirname(base)}\ninclude-system-site-packages = false\n"
        f"version = {platform.python_version()}\n"
    )
    site = venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    shutil.copytree(
        Path(nixtest.__file__).parent, site / "nixtest", ignore=shutil.ignore_patterns("__pycache__")
    )
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    for path in [venv, *venv.rglob("*")]:
        if not path.is_symlink():
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
    python = str(venv / "bin" / "python3")
    assert nobody_can_import(python), f"nobody cannot import nixtest with {python} either"
    return python


@pytest.mark.root
def test_wrappers_rerun_as_nobody_from_anywhere(pytester: pytest.Pytester, hello_suite: Suite) -> None:
    suite = hello_suite
    python = readable_python(suite.root)
    run = nixtest_run(pytester, suite, python=python)
    assert run.ret == 1, text_of(run)

    tmp = suite.root / "tmp"
    tmp.mkdir()
    os.chmod(tmp, 0o1777)
    env = {"TMPDIR": str(tmp)}
    failed = run_by_hand(suite.wrapper("hello", "broken"), as_nobody=True, env=env)
    assert failed.returncode == 1, failed.stderr
    assert "failed at step 2 'second step: hello writes to /dev/full'" in failed.stderr
    assert "hello: write error: No space left on device" in failed.stderr

    for test in ("classic", "greets"):
        passed = run_by_hand(suite.wrapper("hello", test), as_nobody=True, env=env)
        assert passed.returncode == 0, passed.stdout + passed.stderr
    assert list(tmp.iterdir()) == [], "the wrapper removes its working directory"

    kept = run_by_hand(suite.wrapper("hello", "greets"), "--keep", as_nobody=True, env=env)
    assert kept.returncode == 0, kept.stderr
    match = re.search(r"working directory kept: (\S+)", kept.stderr)
    assert match, kept.stderr
    workdir = Path(match.group(1))
    assert workdir.parent == tmp, "the working directory is made under the caller's TMPDIR"
    assert workdir.stat().st_uid != 0, "nobody owns it"


# --------------------------------------------------------------------------- environment values

NASTY_TEMPLATE = (
    "  lead $(touch {m1}) `touch {m2}` 'single' \"double\" back\\slash \\n \\\\\n"
    "second\tline   runs of spaces  ünïcødé ☃ ${{HOME}} $$ $1 ;|&<>*?[a] ~ !x\n"
)


@pytest.mark.parametrize("rerun_by", ["caller", pytest.param("nobody", marks=pytest.mark.root)])
def test_environment_values_arrive_byte_for_byte_and_never_run(
    pytester: pytest.Pytester, suite: Suite, rerun_by: str
) -> None:
    m1, m2 = suite.root / "MARKER1", suite.root / "MARKER2"
    nasty = NASTY_TEMPLATE.format(m1=m1, m2=m2)
    drop = suite.root / "drop"
    drop.mkdir()
    os.chmod(drop, 0o777)
    digest = hashlib.sha256(nasty.encode()).hexdigest()
    yaml_value = nasty.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    suite.package(
        "coreutils",
        f"""
        tests:
          env:
            run: 'printf %s "$NASTY" > "$DROP/got"; test "$(printf %s "$NASTY" | sha256sum)" = "{digest}  -"'
            environment:
              NASTY: "{yaml_value}"
              DROP: "{drop}"
        """,
    )

    run = nixtest_run(pytester, suite)
    assert run.ret == 0, text_of(run)
    assert (drop / "got").read_bytes() == nasty.encode()
    assert not m1.exists() and not m2.exists(), "a value was executed"

    # and by hand: by the caller, and by another user (the `root` marker: a skip or, in CI, an error)
    (drop / "got").unlink()
    by_hand = run_by_hand(suite.wrapper("coreutils", "env"), as_nobody=rerun_by == "nobody")
    assert by_hand.returncode == 0, by_hand.stderr
    assert (drop / "got").read_bytes() == nasty.encode()
    assert not m1.exists() and not m2.exists(), "a value was executed"


# --------------------------------------------------------------------------- secrets


def test_secret_reaches_the_test_and_is_never_written(
    pytester: pytest.Pytester, suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = f"Zq9-{secrets.token_hex(8)}-s3cr3t"
    digest = hashlib.sha256(secret.encode()).hexdigest()
    monkeypatch.setenv("API_TOKEN", secret)
    suite.package(
        "coreutils",
        f"""
        tests:
          reaches:
            run: 'echo "token=$API_TOKEN"; test "$(printf %s "$API_TOKEN" | sha256sum)" = "{digest}  -"'
            secrets: [API_TOKEN]
          shows:
            run: 'echo "token=$API_TOKEN"; echo "err $API_TOKEN" >&2; exit 1'
            secrets: [API_TOKEN]
          classic:
            script: show.py
            secrets: [API_TOKEN]
        """,
        files={
            "show.py": f"""\
                import hashlib, os
                token = os.environ["API_TOKEN"]
                assert hashlib.sha256(token.encode()).hexdigest() == "{digest}"
                print("the token is", token)
                local["echo"][token] & succeeds("echo the token " + token)
                local["false"] & succeeds("fail, holding " + token)
                """
        },
    )
    run = nixtest_run(pytester, suite)
    output = text_of(run)
    assert run.ret == 1, output
    assert junit_outcomes(suite.out) == {
        "coreutils::reaches": "passed",
        "coreutils::shows": "failed",
        "coreutils::classic": "failed",
    }, output
    assert secret not in output, "the secret is in pytest's terminal output"
    assert "token=***" in output
    assert "fail, holding ***" in output

    files = suite.out_files()
    names = {p.relative_to(suite.out).as_posix() for p in files}
    assert {"junit.xml", "log.xml", "logs/coreutils/shows.log", "rerun/coreutils/shows"} <= names
    for path in files:
        assert secret.encode() not in path.read_bytes(), f"the secret is written in {path}"
    assert b"token=***" in suite.log("coreutils", "shows").read_bytes()
    assert b"***" in (suite.out / "junit.xml").read_bytes()

    # the wrapper by hand takes it from the caller's environment
    assert run_by_hand(suite.wrapper("coreutils", "reaches"), env={"API_TOKEN": secret}).returncode == 0
    without = run_by_hand(suite.wrapper("coreutils", "reaches"))
    assert without.returncode == 1
    assert "the secret API_TOKEN is not set in your environment" in without.stderr


# --------------------------------------------------------------------------- big binary output


def test_megabytes_of_binary_output(pytester: pytest.Pytester, suite: Suite) -> None:
    # in YAML single quotes: the shell's printf, not YAML, reads the escapes
    noise = "head -c 3000000 /dev/urandom; printf ''\\0\\033[31m\\377\\376 end\\n''"
    suite.package(
        "coreutils",
        f"""
        tests:
          noise:
            run: '{noise}'
          noise-checked:
            run: '{noise}; echo; echo LAST LINE'
            expect: {{stdout: '^LAST LINE$'}}
          noise-fails:
            run: '{noise}; exit 1'
        """,
    )
    run = nixtest_run(pytester, suite)
    output = text_of(run)
    assert run.ret == 1, output[-3000:]
    # well-formed XML, whatever the bytes
    ET.parse(suite.out / "junit.xml")
    ET.parse(suite.out / "log.xml")
    assert junit_outcomes(suite.out) == {
        "coreutils::noise": "passed",
        "coreutils::noise-checked": "passed",
        "coreutils::noise-fails": "failed",
    }
    for test in ("noise", "noise-checked", "noise-fails"):
        assert suite.log("coreutils", test).stat().st_size >= 3_000_000, test
    assert suite.log("coreutils", "noise-checked").read_bytes().endswith(b"LAST LINE\n")
    # only a bounded tail is kept: the reports of three 3 MB tests stay small
    assert (suite.out / "junit.xml").stat().st_size < 2_000_000
    assert (suite.out / "log.xml").stat().st_size < 3_000_000
    assert len(output) < 200_000


# --------------------------------------------------------------------------- timeouts


def test_timeout_kills_every_child_also_one_ignoring_sigterm(pytester: pytest.Pytester, suite: Suite) -> None:
    soft = f"1000.{os.getpid()}{secrets.randbelow(10**6)}1"
    hard = f"1000.{os.getpid()}{secrets.randbelow(10**6)}2"
    suite.package(
        "coreutils",
        f"""
        tests:
          slow:
            run: "sleep {soft} & sleep {soft}"
            timeout: 2
          stubborn:
            run: "trap '' TERM; sleep {hard} & sleep {hard}"
            timeout: 2
        """,
    )
    start = time.monotonic()
    run = pytest_run(pytester, suite)
    took = time.monotonic() - start
    output = text_of(run)
    assert run.ret == 1, output
    assert took < 60, "the tests did not stop on time"
    assert pids_matching(soft) == [] and pgrep(soft) == []
    assert pids_matching(hard) == [] and pgrep(hard) == [], "a child ignoring SIGTERM survived"
    assert junit_outcomes(suite.out) == {"coreutils::slow": "failed", "coreutils::stubborn": "failed"}
    for test in ("slow", "stubborn"):
        assert f"coreutils::{test} failed: timed out after 2 seconds" in output
    slow_time = float(junit_case(suite.out, "coreutils::slow").get("time") or 0)
    stubborn_time = float(junit_case(suite.out, "coreutils::stubborn").get("time") or 0)
    assert 1.9 <= slow_time < 5, "SIGTERM ends a test that does not ignore it"
    assert 6.5 <= stubborn_time < 15, "SIGKILL comes after the grace period"


# --------------------------------------------------------------------------- bad definitions


def test_each_bad_definition_is_one_error_line_and_the_rest_runs(
    pytester: pytest.Pytester, suite: Suite
) -> None:
    suite.package(
        "hello",
        """
        tests:
          unknown-key:   {run: hello, scirpt: x.py}
          wrong-type:    {run: hello, timeout: soon}
          missing-file:  {script: nowhere.py}
          bad-regex:     {run: hello, expect: {stdout: '(['}}
          duplicate-key: {run: hello, run: 'false'}
          unknown-pkg:   {run: hello, profile: [hello, no-such-package-nixtest]}
          fine:          {run: hello}
        """,
    )
    suite.package("coreutils", "tests: {a: {run: true\n")
    suite.package("no-such-package-nixtest", "tests: {a: {run: 'true'}}")
    suite.package("bash", "tests: {version: {run: 'bash --version', expect: {stdout: '^GNU bash'}}}")
    run = nixtest_run(pytester, suite)
    output = text_of(run)
    assert run.ret == 1, output
    expected = {
        "hello::unknown-key": r"hello/tests\.yaml: test 'unknown-key': key 'scirpt': unknown key",
        "hello::wrong-type": r"hello/tests\.yaml: test 'wrong-type': key 'timeout': must be a positive",
        "hello::missing-file": r"hello/tests\.yaml: test 'missing-file': key 'script': no such file or "
        r"folder: \S*hello/nowhere\.py",
        "hello::bad-regex": r"hello/tests\.yaml: test 'bad-regex': key 'expect\.stdout': not a valid regular",
        "hello::duplicate-key": r"hello/tests\.yaml: test 'duplicate-key': key 'run': is given twice",
        "hello::unknown-pkg": r"hello/tests\.yaml: test 'unknown-pkg': key 'profile': package "
        r"'no-such-package-nixtest' is not in the package set 'host'",
        "coreutils::tests.yaml": r"coreutils/tests\.yaml: malformed YAML: ",
        "no-such-package-nixtest::a": r"no-such-package-nixtest/tests\.yaml: test 'a': package "
        r"'no-such-package-nixtest' is not in the package set 'host'",
    }
    lines = output.splitlines()
    for nodeid, pattern in expected.items():
        found = [line for line in lines if line.startswith(f"{nodeid} error: ") and re.search(pattern, line)]
        assert found, f"no error line for {nodeid} matching {pattern!r}"
    outcomes = junit_outcomes(suite.out)
    assert {k: v for k, v in outcomes.items() if v != "error"} == {
        "hello::fine": "passed",
        "bash::version": "passed",
    }
    assert sorted(k for k, v in outcomes.items() if v == "error") == sorted(expected)
    # (an installed nixtest may add "1 warning" in between: already imported, not rewritten)
    run.stdout.fnmatch_lines([f"*2 passed,*{len(expected)} errors*"])


# --------------------------------------------------------------------------- exit codes and selection


def test_exit_codes(pytester: pytest.Pytester, suite: Suite) -> None:
    suite.package("hello", "tests: {greets: {run: hello}}")
    assert nixtest_run(pytester, suite).ret == 0
    assert nixtest_run(pytester, suite, "-k", "no_such_test").ret == 5
    run = nixtest_run(pytester, suite, "no-such-package")
    assert run.ret == 4
    assert "nixtest: no tests for package 'no-such-package'" in text_of(run)
    empty = world_readable_dir("nixtest-empty-")
    try:
        run = pytester.run(
            sys.executable,
            "-m",
            "nixtest.cli",
            "run",
            "--tests",
            str(empty),
            "--out",
            str(suite.out),
            timeout=RUN_TIMEOUT,
        )
        assert run.ret == 5, text_of(run)
    finally:
        empty.rmdir()


def test_selection_last_failed_xdist_and_environment(
    pytester: pytest.Pytester, suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    suite.package(
        "hello",
        """
        tests:
          good-one: {run: hello}
          good-two: {run: hello, expect: {stdout: '^Hello'}}
          bad: {run: "hello > /dev/full"}
        """,
    )
    suite.package("bash", "tests: {version: {run: 'bash --version'}}")
    everything = {
        "hello::good-one": "passed",
        "hello::good-two": "passed",
        "hello::bad": "failed",
        "bash::version": "passed",
    }

    run = nixtest_run(pytester, suite, "-j", "2")
    assert run.ret == 1, text_of(run)
    assert "up to 2 tests at a time, in this process" in text_of(run)
    assert "workers" not in text_of(run), "-j is nixtest's own scheduler, not pytest-xdist"
    assert junit_outcomes(suite.out) == everything
    run.stdout.fnmatch_lines(["*1 failed, 3 passed*"])

    run = nixtest_run(pytester, suite, "-k", "good and not two")
    assert run.ret == 0
    assert junit_outcomes(suite.out) == {"hello::good-one": "passed"}

    run = nixtest_run(pytester, suite, "--lf")
    assert run.ret == 1
    assert junit_outcomes(suite.out) == {"hello::bad": "failed"}, "--lf reruns only what failed"

    run = nixtest_run(pytester, suite, "hello::good-two", "bash")
    assert run.ret == 0
    assert junit_outcomes(suite.out) == {"hello::good-two": "passed", "bash::version": "passed"}

    other = suite.root / "env-out"
    monkeypatch.setenv("NIXTEST_OUT", str(other))
    monkeypatch.setenv("NIXTEST_K", "bash")
    run = pytester.run(
        sys.executable, "-m", "nixtest.cli", "run", "--tests", str(suite.tests), timeout=RUN_TIMEOUT
    )
    assert run.ret == 0, text_of(run)
    assert junit_outcomes(other) == {"bash::version": "passed"}

    # plain pytest with the plugin gives the same results, also with xdist
    monkeypatch.delenv("NIXTEST_OUT")
    monkeypatch.delenv("NIXTEST_K")
    run = pytest_run(pytester, suite, "-n", "2")
    assert run.ret == 1
    assert junit_outcomes(suite.out) == everything


# --------------------------------------------------------------------------- run, imports, pytest modules

MODULE = """\
import os
from pathlib import Path

# Imported only inside the wrapper: the outer pytest never imports this file.
with open(os.environ.get("IMPORT_LOG", "{outer}"), "a") as log:
    log.write(f"{{os.getpid()}}\\n")


def test_fixtures(package, local, workdir, profile):
    assert package == "python3"
    assert Path.cwd() == workdir
    assert (workdir / "profile").resolve() == Path(profile).resolve()
    assert local["python3"]("-c", "print(6 * 7)") == "42\\n"


def test_broken_arithmetic():
    assert 6 * 7 == 41, "the answer changed"


def test_after_the_failure():
    pass
"""


def test_run_expect_imports_and_pytest_modules(pytester: pytest.Pytester, suite: Suite) -> None:
    outer, inner = suite.root / "outer-import", suite.root / "inner-import"
    suite.package(
        "python3",
        f"""
        tests:
          version:
            run: python3 --version
            expect: {{exit: 0, stdout: '^Python 3\\.'}}
          multiline:
            run: "printf 'first\\\\nsecond\\\\nthird\\\\n'; echo warning >&2; exit 3"
            expect: {{exit: 3, stdout: ['^second$', '^third$'], stderr: '^warning$'}}
          wrong-output:
            run: "echo actual"
            expect: {{stdout: '^expected$'}}
          wrong-exit:
            run: "exit 4"
            expect: {{exit: 2}}
          imports-ok:
            imports: [zlib, json, sqlite3]
          imports-missing:
            imports: [zlib, no_such_module_nixtest]
          module:
            script: test_module.py
            environment: {{IMPORT_LOG: "{inner}"}}
        """,
        files={"test_module.py": MODULE.format(outer=outer)},
    )
    run = pytest_run(pytester, suite)
    output = text_of(run)
    assert run.ret == 1, output
    assert junit_outcomes(suite.out) == {
        "python3::version": "passed",
        "python3::multiline": "passed",
        "python3::wrong-output": "failed",
        "python3::wrong-exit": "failed",
        "python3::imports-ok": "passed",
        "python3::imports-missing": "failed",
        "python3::module": "failed",
    }, output
    assert "stdout does not match '^expected$'" in output
    assert "python3::wrong-exit failed: failed at step 1: exited 4, expected 2" in output
    assert re.search(
        r"python3::imports-missing failed: failed at step 2 'import no_such_module_nixtest'", output
    )
    assert "ModuleNotFoundError: No module named 'no_such_module_nixtest'" in output
    assert re.search(
        r"python3::module failed: failed at step 2 'test_broken_arithmetic'.*the answer changed", output
    )
    assert "step 2 of 3: test_broken_arithmetic" in output
    assert not outer.exists(), "the outer pytest imported the package's test module"
    assert len(inner.read_text().split()) == 1, "the module is imported once, inside the wrapper"
