"""Debugging a failed package test, in a real pseudo-terminal (pexpect).

`OUT/rerun/<pkg>/<test> --ipdb` and `nixtest debug PKG::TEST` stop at an
`ipdb>` prompt in the test's own frame; `--shell` and `nixtest shell` give a
shell in the test's working directory and environment; the failure reports
carry the commands that do so; bash completes package and test names.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pexpect
import pytest

from conftest import Suite, nixtest_command, pids_matching

# the tests use the host packages hello and coreutils
pytestmark = pytest.mark.tools("hello", "ls")

#: seconds for each expected output
EXPECT_TIMEOUT = 30
#: a value for the test's secret: it must reach the test, and no report
SECRET = "s3cret-value-0b5e7"

TESTS_YAML = """\
tests:
  greet:
    script: greet.py
    profile: [hello, coreutils]
    environment: {GREETING: "Hello from nixtest"}
    secrets: [DEMO_TOKEN]
    skel: skel/
    timeout: 3
  module:
    script: test_module.py
    profile: [hello]
  version:
    run: hello --version
  hangs:
    script: hangs.py
    profile: [coreutils]
    timeout: 2
  sleeps:
    run: echo sleeping; sleep @RUN_NAP@; echo woke up
    profile: [coreutils]
    timeout: 2
"""

# fails at its second step, on line 5
GREET = """\
from plumbum.cmd import hello, ls
expected = local.env["GREETING"]
hello["-g", expected] & succeeds("hello greets")
missing = "no-such-file.txt"
ls[missing] & succeeds("the input file is there")
log.info("not reached")
"""

MODULE = """\
def test_greeting(local):
    wanted = "Bonjour"
    out = local["hello"]()
    assert out.strip() == wanted
"""

HANGS = """\
from plumbum.cmd import sleep
naptime = @SCRIPT_NAP@
sleep[naptime] & succeeds("a long nap")
"""

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[=>]")


def plain(text: str) -> str:
    return ANSI.sub("", text).replace("\r", "")


class Naps:
    """The sleeps of `hangs` and `sleeps`, unique to this process and test.

    `pids_matching` looks at every process of the machine: a suite running
    beside this one (another checkout) must not look like a sleep we left behind.
    """

    count = 0

    def __init__(self) -> None:
        Naps.count += 1
        unique = f"{os.getpid()}{Naps.count:03d}"
        self.script = f"37.{unique}"  # hangs.py: plumbum's sleep
        self.run = f"38.{unique}"  # sleeps: the run line's sleep


@pytest.fixture
def naps() -> Naps:
    return Naps()


@pytest.fixture
def hello(suite: Suite, naps: Naps) -> Suite:
    suite.package(
        "hello",
        TESTS_YAML.replace("@RUN_NAP@", naps.run),
        {
            "greet.py": GREET,
            "test_module.py": MODULE,
            "hangs.py": HANGS.replace("@SCRIPT_NAP@", naps.script),
            "skel/input.txt": "skel data 42\n",
        },
    )
    return suite


def nixtest_args(suite: Suite, command: str, *args: str) -> list[str]:
    return nixtest_command(command, "--tests", str(suite.tests), "--out", str(suite.out), *args)


def run_nixtest(suite: Suite, *selection: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        nixtest_args(suite, "run", *selection),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=suite.root,
    )


def spawn(argv: list[str], cwd: Path, **env: str) -> pexpect.spawn:
    environment = dict(os.environ, TERM="dumb", **env)
    child = pexpect.spawn(
        argv[0],
        argv[1:],
        env=environment,
        cwd=str(cwd),
        encoding="utf-8",
        codec_errors="replace",
        timeout=EXPECT_TIMEOUT,
        dimensions=(50, 200),
    )
    return child


def at_ipdb(child: pexpect.spawn) -> str:
    """Waits for the ipdb prompt; returns what came before it, without terminal escapes."""
    child.expect(r"ipdb> ")
    return plain(child.before)


def ipdb_command(child: pexpect.spawn, command: str) -> str:
    child.sendline(command)
    return at_ipdb(child)


def quit_ipdb(child: pexpect.spawn) -> tuple[int, str]:
    """`q`, then the end of the process: (exit code, what it printed after)."""
    child.sendline("q")
    child.expect(pexpect.EOF)
    rest = plain(child.before)
    child.close()
    assert child.signalstatus is None, rest
    return child.exitstatus, rest


# -- --ipdb -------------------------------------------------------------------------


def check_classic_post_mortem(child: pexpect.spawn, suite: Suite) -> None:
    before = at_ipdb(child)
    script = suite.tests / "hello" / "greet.py"
    # the frame is the script's line that failed, not nixtest's
    assert f"> {script}(5)<module>()" in before, before
    assert "ls[missing] & succeeds" in before
    assert "step 2 'the input file is there' failed" in before
    assert "'no-such-file.txt'" in ipdb_command(child, "p missing")
    assert "'Hello from nixtest'" in ipdb_command(child, "p expected")
    code, rest = quit_ipdb(child)
    assert code == 1, rest
    assert "hello::greet failed: failed at step 2 'the input file is there'" in rest
    assert "not reached" not in rest


def test_wrapper_ipdb_stops_at_the_scripts_failing_line(hello: Suite) -> None:
    done = run_nixtest(hello, "hello::greet")
    assert done.returncode == 1, done.stdout + done.stderr
    child = spawn([str(hello.wrapper("hello", "greet")), "--ipdb"], hello.root)
    check_classic_post_mortem(child, hello)


def test_nixtest_debug_builds_the_wrapper_and_stops_at_the_failing_line(hello: Suite) -> None:
    wrapper = hello.wrapper("hello", "greet")
    assert not wrapper.exists()
    child = spawn(nixtest_args(hello, "debug", "hello::greet"), hello.root, DEMO_TOKEN=SECRET)
    check_classic_post_mortem(child, hello)
    assert wrapper.is_file() and os.access(wrapper, os.X_OK)
    assert SECRET not in wrapper.read_text()


def test_ipdb_in_a_pytest_module_opens_at_the_test_function(hello: Suite) -> None:
    child = spawn(nixtest_args(hello, "debug", "hello::module"), hello.root)
    before = at_ipdb(child)
    assert f"> {hello.tests / 'hello' / 'test_module.py'}(4)test_greeting()" in before, before
    assert "'Bonjour'" in ipdb_command(child, "p wanted")
    assert "'Hello, world!'" in ipdb_command(child, "p out.strip()")
    code, rest = quit_ipdb(child)
    assert code == 1, rest
    assert "hello::module failed: failed at step 1 'test_greeting'" in rest


def test_the_timeout_is_suspended_while_ipdb_is_open(hello: Suite) -> None:
    # greet has a 3-second timeout; the debugger stays open longer than that
    child = spawn(nixtest_args(hello, "debug", "hello::greet"), hello.root)
    at_ipdb(child)
    time.sleep(4.5)
    assert "42" in ipdb_command(child, "p 6 * 7")
    code, rest = quit_ipdb(child)
    assert code == 1
    assert "timed out" not in rest


def test_a_timeout_opens_ipdb_where_the_script_hangs(hello: Suite, naps: Naps) -> None:
    child = spawn(nixtest_args(hello, "debug", "hello::hangs"), hello.root)
    start = time.monotonic()
    before = at_ipdb(child)
    assert time.monotonic() - start < 20
    assert "TestTimeout: timed out after 2 seconds" in before
    assert f"> {hello.tests / 'hello' / 'hangs.py'}(3)<module>()" in before, before
    assert naps.script in ipdb_command(child, "p naptime")
    code, rest = quit_ipdb(child)
    assert code == 1
    assert "timed out after 2 seconds (at line 3 of hangs.py)" in rest
    assert not pids_matching(f"sleep {naps.script}")


def test_a_wrapper_run_by_hand_applies_the_tests_timeout(hello: Suite, naps: Naps) -> None:
    run_nixtest(hello, "hello::hangs", "hello::sleeps")
    for test, message in [
        ("hangs", "hello::hangs failed: timed out after 2 seconds (at line 3 of hangs.py)"),
        ("sleeps", "hello::sleeps timed out after 2 seconds"),
    ]:
        start = time.monotonic()
        done = subprocess.run([str(hello.wrapper("hello", test))], capture_output=True, text=True, timeout=60)
        assert done.returncode == 1, done.stderr
        assert message in done.stderr
        assert time.monotonic() - start < 15
        assert "woke up" not in done.stdout
    # --timeout changes it; 0 turns it off (here, a short nap is enough to tell)
    done = subprocess.run(
        [str(hello.wrapper("hello", "sleeps")), "--timeout", "1"], capture_output=True, text=True, timeout=60
    )
    assert "timed out after 1 seconds" in done.stderr
    assert not pids_matching(f"sleep {naps.script}") and not pids_matching(f"sleep {naps.run}")


def test_a_run_test_on_a_terminal_is_timed_and_leaves_nothing(hello: Suite, naps: Naps) -> None:
    run_nixtest(hello, "hello::sleeps")
    child = spawn([str(hello.wrapper("hello", "sleeps"))], hello.root)
    child.expect("sleeping")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1
    assert "timed out after 2 seconds" in plain(child.before)
    time.sleep(0.5)
    assert not pids_matching(f"sleep {naps.run}")


def test_ipdb_on_a_run_test_says_so_and_offers_a_shell(hello: Suite) -> None:
    run_nixtest(hello, "hello::version")
    wrapper = hello.wrapper("hello", "version")
    child = spawn([str(wrapper), "--ipdb"], hello.root)
    child.expect(pexpect.EOF)
    child.close()
    said = plain(child.before)
    assert child.exitstatus == 4
    assert "hello::version is a run: test: it has no Python frame to debug" in said
    assert f"{wrapper} --shell opens a shell" in said

    child = spawn(nixtest_args(hello, "debug", "hello::version"), hello.root)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 4
    assert "`nixtest shell hello::version` opens a shell in its environment" in plain(child.before)


def test_debug_names_an_unknown_test(hello: Suite) -> None:
    done = subprocess.run(nixtest_args(hello, "debug", "hello::nope"), capture_output=True, text=True)
    assert done.returncode == 4
    assert (
        "package 'hello' has no test 'nope'; its tests: greet, module, version, hangs, sleeps" in done.stderr
    )


# -- --shell ------------------------------------------------------------------------

PROMPT = "[nixtest hello::greet] $ "


def shell_run(child: pexpect.spawn, command: str) -> list[str]:
    """Runs a command at the test shell's prompt; its output lines (without the echoed command).

    The output ends at a marker line: `env` prints PS1, which holds the prompt.
    """
    child.sendline(f"{command}; echo '=='done'=='")
    child.expect(r"\n==done==\r?\n")
    lines = plain(child.before).split("\n")
    child.expect_exact(PROMPT)
    return [line for line in lines[1:] if line.strip()]


def check_test_shell(child: pexpect.spawn, suite: Suite, profile_packages: str) -> Path:
    child.expect_exact(PROMPT)
    (pwd,) = shell_run(child, "pwd")
    workdir = Path(pwd)
    assert workdir.is_dir() and workdir.name.startswith("nixtest-hello-greet.")
    env = dict(line.split("=", 1) for line in shell_run(child, "env") if "=" in line)
    profile = Path(env["PATH"]).parent
    assert env["PATH"] == f"{profile}/bin" and profile.name.endswith(profile_packages)
    assert (profile / "bin" / "hello").exists() and (profile / "bin" / "ls").exists()
    assert env["LD_LIBRARY_PATH"] == f"{profile}/lib"
    assert env["NIX_CFLAGS_COMPILE"] == f"-I {profile}/include"
    assert env["GREETING"] == "Hello from nixtest"
    assert env["HOME"] == pwd and env["TMPDIR"] == f"{pwd}/.tmp"
    assert env["DEMO_TOKEN"] == SECRET
    # nothing of the caller's environment, which has NIXTEST_STATE, USER, ...
    allowed = {
        *("PATH", "LD_LIBRARY_PATH", "PKG_CONFIG_PATH", "NIX_LDFLAGS", "NIX_CFLAGS_COMPILE"),
        *("GREETING", "DEMO_TOKEN", "HOME", "TMPDIR", "TERM", "PS1", "PWD", "OLDPWD", "SHLVL", "_"),
    }
    assert set(env) <= allowed, set(env) - allowed
    assert shell_run(child, "cat input.txt") == ["skel data 42"]
    assert (workdir / "profile").resolve() == profile.resolve()
    assert shell_run(child, "hello") == ["Hello, world!"]
    child.sendline("exit 7")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 7
    return workdir


def test_nixtest_shell_is_in_the_tests_working_directory_and_environment(hello: Suite) -> None:
    child = spawn(nixtest_args(hello, "shell", "hello::greet"), hello.root, DEMO_TOKEN=SECRET)
    workdir = check_test_shell(child, hello, "coreutils+hello")
    assert not workdir.exists(), "the working directory is removed without --keep"
    assert not (hello.out / "logs").exists(), "the test was not run"


def test_wrapper_shell_keep_prints_and_keeps_the_working_directory(hello: Suite) -> None:
    run_nixtest(hello, "hello::greet")
    child = spawn([str(hello.wrapper("hello", "greet")), "--shell", "--keep"], hello.root, DEMO_TOKEN=SECRET)
    workdir = check_test_shell(child, hello, "coreutils+hello")
    assert f"nixtest: working directory kept: {workdir}" in plain(child.before)
    assert (workdir / "input.txt").read_text() == "skel data 42\n"
    shutil.rmtree(workdir)


@pytest.mark.tools("bash")
def test_the_shell_is_the_profiles_own_when_it_has_one(suite: Suite) -> None:
    suite.package("bash", "tests:\n  features:\n    run: bash --version\n    profile: [bash, coreutils]\n")
    child = spawn(nixtest_args(suite, "shell", "bash::features"), suite.root)
    prompt = "[nixtest bash::features] $ "
    child.expect_exact(prompt)
    child.sendline('echo "shell=[$BASH]"')
    child.expect(r"shell=\[(/\S+)\]")
    assert re.search(r"/profiles/[0-9a-f]+-bash\+coreutils/bin/bash$", child.match.group(1))
    child.expect_exact(prompt)
    child.sendline("exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


# -- the failure reports ------------------------------------------------------------


def test_every_report_carries_the_commands_that_reproduce_and_debug(hello: Suite) -> None:
    done = run_nixtest(hello, "hello::greet")
    assert done.returncode == 1
    wrapper = hello.wrapper("hello", "greet")
    lines = [f"to reproduce: {wrapper}", f"    to debug: {wrapper} --ipdb"]

    terminal = done.stdout.splitlines()
    at = terminal.index(lines[0])
    assert terminal[at : at + 2] == lines

    case = ET.parse(hello.out / "junit.xml").getroot().find(".//testcase[@name='greet']")
    assert case is not None
    failure = case.find("failure")
    assert failure is not None and failure.text is not None
    assert failure.text.rstrip("\n").splitlines()[-2:] == lines
    system_out = case.findtext("system-out") or ""
    assert "\n".join(lines) in system_out

    log_lines = [e.text for e in ET.parse(hello.out / "log.xml").getroot().iter("line")]
    at = log_lines.index(lines[0])
    assert log_lines[at : at + 2] == lines

    # and the command, taken from junit.xml as CI shows it, opens the debugger
    command = failure.text.rstrip("\n").splitlines()[-1].split("to debug: ", 1)[1].split()
    child = spawn(command, hello.root)
    check_classic_post_mortem(child, hello)


# -- shell completion ---------------------------------------------------------------


@pytest.mark.tools("bash")
def test_bash_completes_commands_packages_and_tests(hello: Suite) -> None:
    # the installed command: click names the completion variable after the program
    bindir = Path(sys.executable).parent
    # pip installs the command next to the interpreter: without it the install is broken
    assert (bindir / "nixtest").is_file(), f"the nixtest command is not installed next to {sys.executable}"
    hello.package("coreutils", "tests:\n  ls:\n    run: ls\n")
    hello.package("coreutils-extra", "tests:\n  cat:\n    run: cat /dev/null\n")
    env = {
        "PATH": f"{bindir}:{os.environ['PATH']}",
        "PS1": "READY> ",
        "INPUTRC": "/dev/null",
    }
    child = spawn(["bash", "--norc", "--noprofile", "-i"], hello.root, **env)
    child.expect_exact("READY> ")
    child.sendline('eval "$(_NIXTEST_COMPLETE=bash_source nixtest)" && echo "load""ed"')
    child.expect_exact("loaded")
    child.expect_exact("READY> ")

    def complete(line: str, inserted: str) -> None:
        """Tab after `line` makes bash insert `inserted` (after a bell when it is not the whole word)."""
        child.send(line + "\t")
        child.expect(re.escape(line) + "\x07?" + re.escape(inserted))
        child.send("\x03")  # drop the line
        child.expect_exact("READY> ")

    complete("nixtest deb", "ug ")
    # --tests given on the line, and from NIXTEST_TESTS
    complete("nixtest debug --tests pt hello::gr", "eet ")
    complete("nixtest run --tests pt hello::mo", "dule ")
    complete("nixtest list --tests pt coreutils-e", "xtra ")
    child.sendline("export NIXTEST_TESTS=pt")
    child.expect_exact("READY> ")
    complete("nixtest show hello::ve", "rsion ")
    # one package matches: its tests are offered, up to what they have in common
    complete("nixtest shell hel", "lo::")
    # tests to choose from: bash lists them (after the ':', as it splits words there)
    child.send("nixtest debug hello::\t\t")
    child.expect(r"greet\s+module\s+version\s+hangs\s+sleeps")
    child.send("\x03")
    child.expect_exact("READY> ")
    child.sendline("exit")
    child.expect(pexpect.EOF)
