"""Hardening: each attack of issue 9, as a hostile or careless user would make it.

Real runs of `nixtest run` and of wrappers, real processes and signals, real
users (`runuser -u nobody`), real files.  The numbers in the test names are the
issue's.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Suite, nixtest_command, pids_matching, remove_tree, world_readable_dir

pytestmark = [pytest.mark.dpkg]

RUN_TIMEOUT = 180
IS_ROOT = os.geteuid() == 0
RUNUSER = shutil.which("runuser") or "/usr/sbin/runuser"
needs_root = pytest.mark.root  # acts as root and as nobody


def run(
    suite: Suite,
    *args: str,
    env: dict[str, str] | None = None,
    user: str | None = None,
    cwd: Path | None = None,
    out: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """`nixtest run --tests pt --out out ARGS`, to the end."""
    # --no-cache: a test run again must run, not come from the history's cache
    argv = nixtest_command(
        "run", "--no-cache", "--tests", str(suite.tests), "--out", str(out or suite.out), *args
    )
    if user is not None:
        argv = [RUNUSER, "-u", user, "--", *argv]
    return subprocess.run(
        argv,
        cwd=cwd or suite.root,
        env=env if env is not None else dict(os.environ),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )


def start(suite: Suite, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`nixtest run` in the background, in a session of its own."""
    return subprocess.Popen(
        nixtest_command("run", "--no-cache", "--tests", str(suite.tests), "--out", str(suite.out), *args),
        cwd=suite.root,
        env=env if env is not None else dict(os.environ),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def wait_for(check: object, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def gone_within(marker: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while pids_matching(marker):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def junit_cases(out: Path) -> dict[str, ET.Element]:
    root = ET.parse(out / "junit.xml").getroot()
    return {
        f"{suite.get('name')}::{case.get('name')}": case
        for suite in root.iter("testsuite")
        for case in suite.iter("testcase")
    }


def report_texts(out: Path) -> dict[str, str]:
    """Every report, log and wrapper in OUT, as text."""
    return {
        str(p.relative_to(out)): p.read_text(errors="replace")
        for p in out.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }


@pytest.fixture
def nobody_dir() -> Iterator[Path]:
    """A world-readable folder under /tmp that nobody owns: its OUT, state and TMPDIR."""
    root = world_readable_dir("nixtest-nobody-")
    shutil.chown(root, "nobody")
    yield root
    remove_tree(root)


def as_nobody_env(root: Path) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "NIXTEST_STATE": str(root / "state"),
        "TMPDIR": str(root / "tmp"),
        "LANG": "C.UTF-8",
        **{k: v for k, v in os.environ.items() if k == "PYTHONPATH"},
    }


def killed_marker() -> str:
    """A `sleep` argument no other process has: a number of seconds with a random fraction."""
    return f"1000.{secrets.randbelow(10**8):08d}"


# --------------------------------------------------------------------------- 1-3 secrets


def test_1_no_secret_in_any_argv_during_a_run_or_a_wrapper_run_by_hand(suite: Suite) -> None:
    value = "argv-" + secrets.token_hex(12)
    suite.package(
        "coreutils",
        """
        tests:
          waits:
            run: sleep 2
            secrets: [NT_TOKEN]
          driven:
            run: sleep 2; echo done
            expect: {stdout: done}
            secrets: [NT_TOKEN]
        """,
    )
    seen: list[str] = []

    def watch(proc: subprocess.Popen[str] | subprocess.Popen[bytes]) -> None:
        while proc.poll() is None:
            seen.extend(str(pid) for pid in pids_matching(value))
            time.sleep(0.01)

    env = dict(os.environ, NT_TOKEN=value)
    proc = start(suite, env=env)
    watch(proc)
    output = proc.communicate()[0]
    assert proc.returncode == 0, output
    for test in ("waits", "driven"):
        by_hand = subprocess.Popen(
            [str(suite.wrapper("coreutils", test))],
            env={"PATH": "/usr/bin:/bin", "NT_TOKEN": value},
            cwd="/",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        watch(by_hand)
        assert by_hand.wait() == 0, by_hand.communicate()[0]
    assert seen == [], f"the secret was in the argv of processes {sorted(set(seen))}"


def test_2_a_secret_split_by_terminal_escapes_is_masked_in_every_report(suite: Suite) -> None:
    value = "esc" + secrets.token_hex(6)
    a, b = value[: len(value) // 2], value[len(value) // 2 :]
    printf = f"printf '{a}\\033[31m{b}\\n{a}\\033]0;title\\007{b}\\n'"
    suite.package(
        "coreutils",
        f"""
        tests:
          leaks:
            run: {printf}; exit 1
            secrets: [NT_TOKEN]
        """,
    )
    done = run(suite, env=dict(os.environ, NT_TOKEN=value))
    assert done.returncode == 1, done.stdout + done.stderr
    texts = report_texts(suite.out)
    for name in ("junit.xml", "log.xml", "log.html"):
        assert value not in texts[name], f"the secret is in {name}"
        assert "***" in texts[name], name
    assert value not in done.stdout + done.stderr


def test_3_a_secret_with_a_quote_is_masked_in_a_step_command(suite: Suite) -> None:
    value = "q" + secrets.token_hex(4) + "'" + secrets.token_hex(4) + '"z'
    suite.package(
        "coreutils",
        """
        tests:
          quoted:
            script: quoted.py
            secrets: [NT_TOKEN]
        """,
        files={
            "quoted.py": """
            import os
            from plumbum.cmd import echo
            token = os.environ["NT_TOKEN"]
            echo[token] & fails("echo does not fail")
            """
        },
    )
    done = run(suite, env=dict(os.environ, NT_TOKEN=value))
    assert done.returncode == 1, done.stdout + done.stderr
    first, last = value[1:9], value[10:18]
    leak = re.compile(re.escape(first) + ".{0,12}" + re.escape(last))
    for name, text in report_texts(suite.out).items():
        assert not leak.search(text), f"a rendering of the secret is in {name}: {leak.search(text)}"
    assert not leak.search(done.stdout + done.stderr)
    assert "***" in report_texts(suite.out)["junit.xml"]


# --------------------------------------------------------------------------- 4-6 processes


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_4_sigterm_and_sighup_stop_the_tests_and_write_the_reports(suite: Suite, sig: signal.Signals) -> None:
    marker = killed_marker()
    suite.package("coreutils", f"tests:\n  slow:\n    run: sleep {marker}\n")
    proc = start(suite)
    wait_for(lambda: pids_matching(f"sleep {marker}"), "the test to start")
    os.kill(proc.pid, sig)  # nixtest alone, as CI's cancel or a closed terminal does
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 2, output
    assert "Traceback" not in output, output
    assert gone_within(f"sleep {marker}", 10), "the test outlived nixtest"
    case = junit_cases(suite.out)["coreutils::slow"]
    error = case.find("error")
    assert error is not None and "interrupted" in (error.get("message") or ""), output


def test_4_sigkill_of_nixtest_kills_its_tests_and_the_next_run_cleans_up(suite: Suite) -> None:
    marker = killed_marker()
    suite.package("coreutils", f"tests:\n  slow:\n    run: sleep {marker}\n  quick:\n    run: 'true'\n")
    tmp = suite.root / "tmp"
    tmp.mkdir(mode=0o700)
    env = dict(os.environ, TMPDIR=str(tmp))
    proc = start(suite, "coreutils::slow", env=env)
    wait_for(lambda: pids_matching(f"sleep {marker}"), "the test to start")
    scratch = [p for p in tmp.iterdir() if p.name.startswith("nixtest-run-")]
    assert len(scratch) == 1
    proc.kill()
    proc.communicate(timeout=30)
    assert gone_within(f"sleep {marker}", 10), "the test outlived nixtest's SIGKILL"
    assert scratch[0].exists(), "a killed run cannot clean up: its folder is left"

    # a profile build killed half-way leaves a .build-* folder behind
    profiles = Path(os.environ["NIXTEST_STATE"]) / "profiles"
    profiles.mkdir(parents=True, exist_ok=True)
    builder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, tempfile, time; from nixtest.safefs import claim; "
            f"d = tempfile.mkdtemp(prefix='.build-test-', dir={str(profiles)!r}); claim(d); "
            "print(d, flush=True); time.sleep(300)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert builder.stdout is not None
    build = Path(builder.stdout.readline().strip())
    builder.kill()
    builder.wait()
    assert build.is_dir()

    done = run(suite, "coreutils::quick", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not scratch[0].exists(), "the next run removes what the killed one left"
    assert not build.exists(), "the next build removes a killed build's folder"
    assert [p for p in tmp.iterdir() if p.name.startswith("nixtest-run-")] == []


def test_4_sigkill_of_a_worker_kills_its_tests(suite: Suite) -> None:
    marker = killed_marker()
    suite.package(
        "coreutils",
        "tests:\n" + "".join(f"  t{i}:\n    run: sleep {marker}\n" for i in range(4)),
    )
    proc = start(suite, "-n2")  # pytest-xdist's workers, each a process
    wait_for(lambda: pids_matching(f"sleep {marker}"), "a test to start")
    sleeper = pids_matching(f"sleep {marker}")[0]
    # up from the test: the supervisor, then the pytest-xdist worker that started it
    chain = []
    pid = sleeper
    while pid > 1:
        pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        chain.append(pid)
    worker = next(
        p
        for p in chain
        if b"execnet" in Path(f"/proc/{p}/cmdline").read_bytes()
        or b"sys.stdin.readline" in Path(f"/proc/{p}/cmdline").read_bytes()
    )
    os.kill(worker, signal.SIGKILL)
    try:
        deadline = time.monotonic() + 10
        while (
            os.path.exists(f"/proc/{sleeper}")
            and b"Z" not in Path(f"/proc/{sleeper}/stat").read_bytes()[-200:].split(b")")[-1][:3]
        ):
            assert time.monotonic() < deadline, "the test of a killed worker lives on"
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=60)
    assert gone_within(f"sleep {marker}", 15)


@pytest.mark.tools("setsid")
def test_5_detached_daemons_end_with_their_test_and_the_report_says_so(suite: Suite) -> None:
    marker = killed_marker()
    suite.package(
        "util-linux",
        f"""
        tests:
          daemons:
            profile: [util-linux, coreutils, dash]
            run: setsid sleep {marker} & (setsid sh -c 'sleep {marker} &' &); sleep 0.5; echo started
          classic:
            profile: [util-linux, coreutils, dash]
            script: daemon.py
        """,
        # a Python-driven test: nixtest starts its driver from the warm zygote
        files={"daemon.py": f"import subprocess\nsubprocess.Popen(['setsid', 'sleep', '{marker}'])\n"},
    )
    done = run(suite)
    assert done.returncode == 0, done.stdout + done.stderr
    assert gone_within(f"sleep {marker}", 5), "a daemon of the test outlived it"
    cases = junit_cases(suite.out)
    out = cases["util-linux::daemons"].findtext("system-out") or ""
    assert "killed 2 leftover process" in out and f"sleep {marker}" in out, out
    out = cases["util-linux::classic"].findtext("system-out") or ""
    assert "killed 1 leftover process" in out and f"sleep {marker}" in out, out

    by_hand = subprocess.run(
        [str(suite.wrapper("util-linux", "daemons"))],
        env={"PATH": "/usr/bin:/bin"},
        cwd="/",
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    assert by_hand.returncode == 0, by_hand.stderr
    assert "killed 2 processes the test left running" in by_hand.stderr, by_hand.stderr
    assert gone_within(f"sleep {marker}", 5), "a daemon outlived the wrapper run by hand"


@needs_root
def test_6_cleanup_of_a_test_that_locks_its_folder_as_a_normal_user(suite: Suite, nobody_dir: Path) -> None:
    suite.package(
        "coreutils",
        """
        tests:
          locks:
            run: mkdir -p a/b && touch a/b/f && chmod 000 a/b a . && echo locked
          passes:
            run: 'true'
        """,
    )
    tmp = nobody_dir / "tmp"
    tmp.mkdir(mode=0o1777)
    os.chmod(tmp, 0o1777)
    done = run(suite, env=as_nobody_env(nobody_dir), user="nobody", out=nobody_dir / "out")
    assert done.returncode == 0, done.stdout + done.stderr
    cases = junit_cases(nobody_dir / "out")
    assert set(cases) == {"coreutils::locks", "coreutils::passes"}
    assert all(c.find("error") is None and c.find("failure") is None for c in cases.values())
    assert stat.S_IMODE(tmp.stat().st_mode) == 0o1777, "the folder above the test's was changed"
    assert list(tmp.iterdir()) == [], "the run's folder is removed"


# --------------------------------------------------------------------------- 7-8 trust


@needs_root
def test_7_root_refuses_an_out_or_state_folder_another_user_controls(suite: Suite, nobody_dir: Path) -> None:
    suite.package("coreutils", "tests:\n  t:\n    run: 'true'\n")
    theirs = nobody_dir / "out"
    theirs.mkdir()
    shutil.chown(theirs, "nobody")
    done = run(suite, out=theirs)
    assert done.returncode == 4, done.stdout + done.stderr
    assert "belongs to another user" in done.stdout + done.stderr
    assert not (theirs / "rerun").exists(), "root wrote a wrapper into another user's folder"

    open_out = suite.root / "open"
    open_out.mkdir()
    os.chmod(open_out, 0o777)
    done = run(suite, out=open_out)
    assert done.returncode == 4 and "can be written by other users" in done.stdout + done.stderr

    # nixtest show, debug and shell write the wrapper they run into OUT as well
    for command in ("show", "shell"):
        done = subprocess.run(
            nixtest_command(command, "coreutils::t", "--tests", str(suite.tests), "--out", str(theirs)),
            cwd=suite.root,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 4 and "belongs to another user" in done.stderr, (command, done.stderr)
    assert not (theirs / "rerun").exists(), "root wrote a wrapper into another user's folder"

    state = nobody_dir / "state"
    state.mkdir()
    shutil.chown(state, "nobody")
    done = run(suite, env=dict(os.environ, NIXTEST_STATE=str(state)))
    assert done.returncode == 4, done.stdout + done.stderr
    assert "state folder" in done.stdout + done.stderr
    errors = [
        line for line in (done.stdout + done.stderr).splitlines() if "nobody" in line or "another" in line
    ]
    assert len(errors) == 1, done.stdout + done.stderr


@needs_root
def test_7_root_writes_no_log_through_a_planted_symlink(suite: Suite) -> None:
    suite.package("coreutils", "tests:\n  t:\n    run: echo written\n")
    victim = suite.root / "root-only"
    victim.write_text("precious\n")
    os.chmod(victim, 0o600)
    logs = suite.out / "logs" / "coreutils"
    logs.mkdir(parents=True)
    (logs / "t.log").symlink_to(victim)
    done = run(suite)
    assert done.returncode == 0, done.stdout + done.stderr
    assert victim.read_text() == "precious\n"
    assert not (logs / "t.log").is_symlink() and "written" in (logs / "t.log").read_text()


@needs_root
def test_7_a_wrapper_refuses_a_workdir_of_another_user(suite: Suite, nobody_dir: Path) -> None:
    suite.package("coreutils", "tests:\n  t:\n    run: 'true'\n")
    assert run(suite).returncode == 0
    theirs = nobody_dir / "work"
    theirs.mkdir()
    shutil.chown(theirs, "nobody")
    below_open = nobody_dir / "open"
    below_open.mkdir(mode=0o777)
    os.chmod(below_open, 0o777)
    for workdir in (theirs, below_open / "w"):
        done = subprocess.run(
            [str(suite.wrapper("coreutils", "t")), "--workdir", str(workdir)],
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
        )
        assert done.returncode == 4, done.stderr
        assert len(done.stderr.splitlines()) == 1, done.stderr


@needs_root
def test_7_8_a_profile_another_user_changed_is_rebuilt_not_used(suite: Suite) -> None:
    suite.package(
        "coreutils",
        """
        tests:
          lists:
            run: ls / > /dev/null && echo listed
            expect: {stdout: listed}
          damages:
            run: rm -f profile/bin/ls; rm -f profile/bin/cat; true
        """,
    )
    done = run(suite, "coreutils::lists")
    assert done.returncode == 0, done.stdout + done.stderr
    wrapper_text = suite.wrapper("coreutils", "lists").read_text()
    profile = Path(re.search(r"nt_profile=(\S+)", wrapper_text).group(1).strip("'"))  # type: ignore[union-attr]
    assert profile.is_dir()

    # a test that damages the shared profile: later runs still find ls
    done = run(suite, "coreutils::damages")
    assert done.returncode == 0, done.stdout + done.stderr
    done = run(suite, "coreutils::lists")
    assert done.returncode == 0, done.stdout + done.stderr

    # another user takes the profile over and plants their own ls
    marker = suite.root / "planted-ls-ran"
    for folder, _, _ in os.walk(profile):
        os.chmod(folder, 0o755)
    (profile / "bin" / "ls").unlink()
    (profile / "bin" / "ls").write_text(f"#!/bin/sh\ntouch {marker}\necho listed\n")
    os.chmod(profile / "bin" / "ls", 0o755)
    subprocess.run(["chown", "-R", "-h", "nobody", str(profile)], check=True)
    done = run(suite, "coreutils::lists")
    assert done.returncode == 0, done.stdout + done.stderr
    assert not marker.exists(), "root ran another user's bin/ls"
    assert profile.stat().st_uid == 0 and (profile / "bin" / "ls").is_symlink()


def test_8_symlink_names_that_reach_into_the_profile_are_refused(suite: Suite) -> None:
    suite.package(
        "coreutils",
        """
        tests:
          inside:
            run: 'true'
            symlinks: {profile/x: [coreutils]}
          dotted:
            run: 'true'
            symlinks: {./profile: [coreutils]}
          slashed:
            run: 'true'
            symlinks: {profile/: [coreutils]}
          copied:
            run: 'true'
            sources: {profile/bin/ls: tests.yaml}
          fine:
            run: test -L core/bin/ls
            symlinks: {core: [coreutils]}
        """,
    )
    done = run(suite)
    assert done.returncode == 1, done.stdout + done.stderr
    cases = junit_cases(suite.out)
    for name in ("inside", "dotted", "slashed", "copied"):
        error = cases[f"coreutils::{name}"].find("error")
        assert error is not None and "inside the working directory" in (error.get("message") or ""), name
    assert cases["coreutils::fine"].find("error") is None and cases["coreutils::fine"].find("failure") is None


@needs_root
def test_8_a_profile_is_read_only_to_its_tests(suite: Suite) -> None:
    suite.package(
        "coreutils",
        "tests:\n  writes:\n    run: rm profile/bin/ls\n    expect: {exit: 1}\n"
        # a Python-driven test, whose driver the warm zygote forks
        "  classic:\n    script: writes.py\n",
        files={
            "writes.py": "import os\ntry:\n    os.unlink('profile/bin/ls')\nexcept OSError:\n    pass\n"
            "else:\n    raise AssertionError('the test removed profile/bin/ls')\n"
        },
    )
    done = run(suite)
    assert done.returncode == 0, done.stdout + done.stderr
    assert set(junit_cases(suite.out)) == {"coreutils::writes", "coreutils::classic"}


# --------------------------------------------------------------------------- 9-12 results


def test_9_only_package_folders_are_collected_and_the_rest_is_named(suite: Suite) -> None:
    suite.package("coreutils", "tests:\n  t:\n    run: 'true'\n")
    marker = suite.root / "imported"
    stray = f"open({str(marker)!r}, 'a').write(__file__ + '\\n')\ndef test_x():\n    pass\n"
    (suite.tests / "test_stray.py").write_text(stray)
    (suite.tests / "conftest.py").write_text(stray)
    misnamed = suite.tests / "misnamed"
    misnamed.mkdir()
    (misnamed / "tests.yml").write_text("tests:\n  t:\n    script: test_y.py\n")
    (misnamed / "test_y.py").write_text(stray)
    done = run(suite)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert not marker.exists(), f"nixtest imported {marker.read_text() if marker.exists() else ''}"
    assert set(junit_cases(suite.out)) == {"coreutils::t"}
    for name in ("test_stray.py", "misnamed/tests.yml", "misnamed/test_y.py"):
        assert f"{suite.tests / name}:" in output, f"{name} is not named as ignored:\n{output}"


def test_10_a_crashed_worker_is_in_the_reports_with_tests_elsewhere(suite: Suite, tmp_path: Path) -> None:
    kill_worker = r"""
    p=$$
    while [ "$p" -gt 1 ]; do
        while read -r key value; do [ "$key" = PPid: ] && p=$value; done < /proc/$p/status
        case "$(tr '\0' ' ' < /proc/$p/cmdline)" in *readline*) kill -9 "$p"; sleep 5; exit 0 ;; esac
    done
    exit 1
    """
    suite.package(
        "coreutils",
        """
        tests:
          crashes:
            run: sh kill-worker.sh
            profile: [coreutils, dash]
            sources: {kill-worker.sh: kill-worker.sh}
          fine:
            run: 'true'
        """,
        files={"kill-worker.sh": kill_worker},
    )
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    done = run(suite, "-n2", cwd=elsewhere)  # pytest-xdist's workers
    assert done.returncode == 1, done.stdout + done.stderr
    cases = junit_cases(suite.out)
    assert "coreutils::crashes" in cases, done.stdout + done.stderr
    assert cases["coreutils::crashes"].find("error") is not None


def test_11_a_symlink_loop_runs_each_package_once(suite: Suite) -> None:
    suite.package("coreutils", "tests:\n  t:\n    run: 'true'\n")
    (suite.tests / "loop").symlink_to(".")
    (suite.tests / "again").symlink_to("coreutils")
    done = run(suite)
    assert done.returncode == 0, done.stdout + done.stderr
    assert list(junit_cases(suite.out)) == ["coreutils::t"]
    assert "the same folder as" in done.stdout


def test_12_a_second_run_into_the_same_out_is_refused(suite: Suite) -> None:
    marker = killed_marker()
    suite.package("coreutils", f"tests:\n  slow:\n    run: sleep {marker}\n  quick:\n    run: 'true'\n")
    first = start(suite, "coreutils::slow")
    try:
        wait_for(lambda: pids_matching(f"sleep {marker}"), "the first run's test")
        second = run(suite, "coreutils::quick")
        assert second.returncode == 4, second.stdout + second.stderr
        lines = [line for line in (second.stdout + second.stderr).splitlines() if line.strip()]
        assert len(lines) == 1 and "another nixtest run is writing into" in lines[0], lines
    finally:
        os.kill(first.pid, signal.SIGTERM)
        first.communicate(timeout=60)
    assert list(junit_cases(suite.out)) == ["coreutils::slow"]


# --------------------------------------------------------------------------- 13-18 bad input


def test_13_a_yaml_alias_bomb_is_refused_in_one_short_line(suite: Suite) -> None:
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        levels.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    bomb = "bomb:\n" + "".join(f"  {line}\n" for line in levels)
    (suite.package("bomb", "tests: {}\n") / "tests.yaml").write_text(
        "x-anchors:\n" + "".join(f"  {line}\n" for line in levels) + "tests:\n  t:\n    run: 'true'\n"
        "    timeout: *a8\n"
    )
    (suite.package("coreutils", "tests:\n  t:\n    run: 'true'\n"))
    assert len(bomb) < 2048
    done = subprocess.run(
        nixtest_command("run", "--tests", str(suite.tests), "--out", str(suite.out)),
        cwd=suite.root,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        # 2 GB of address space: the expanded value would need many times more
        preexec_fn=lambda: __import__("resource").setrlimit(
            __import__("resource").RLIMIT_AS, (2 << 30, 2 << 30)
        ),
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-3000:]
    lines = [line for line in output.splitlines() if "bomb::" in line and "error" in line]
    assert lines and all(len(line) < 1000 for line in lines), lines[:1] or output[-2000:]
    assert "alias" in lines[0]
    assert junit_cases(suite.out)["coreutils::t"].find("error") is None


def test_15_names_with_a_trailing_newline_are_refused(suite: Suite) -> None:
    suite.package(
        "coreutils",
        """
        tests:
          "name\\n":
            run: 'true'
          env:
            run: 'true'
            environment: {"VAR\\n": x}
          secret:
            run: 'true'
            secrets: ["TOKEN\\n"]
          fine:
            run: 'true'
        """,
    )
    done = run(suite)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    cases = junit_cases(suite.out)
    assert cases["coreutils::fine"].find("error") is None
    for name in ("env", "secret"):
        assert cases[f"coreutils::{name}"].find("error") is not None, name
    bad = [n for n in cases if n.startswith("coreutils::name")]
    assert len(bad) == 1 and cases[bad[0]].find("error") is not None
    assert not suite.wrapper("coreutils", "name\n").exists()


def test_16_exit_codes_are_pytests_and_errors_are_one_line(suite: Suite) -> None:
    suite.package("coreutils", "tests:\n  t:\n    run: sleep 1\n")

    def nixtest(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            nixtest_command(*args), cwd=suite.root, capture_output=True, text=True, timeout=RUN_TIMEOUT
        )

    tests = ["--tests", str(suite.tests), "--out", str(suite.out)]
    for args in (
        ["--bogus"],
        ["list", "--bogus"],
        ["run", *tests, "--timeout", "abc"],
        ["run", *tests, "--timeout", "nan"],
        ["run", *tests, "--timeout", "-1"],
        ["run", *tests, "-j", "1000000000"],
    ):
        done = nixtest(*args)
        assert done.returncode == 4, (args, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr, args
    # 0 is no timeout, for nixtest as for the wrapper
    done = nixtest("run", *tests, "--timeout", "0")
    assert done.returncode == 0, done.stdout + done.stderr


def test_16_ctrl_c_outside_the_tests_exits_2(suite: Suite) -> None:
    state = Path(os.environ["NIXTEST_STATE"])
    out = suite.root / "out"
    # `rerun` reads the last run's options: a FIFO there blocks the read until Ctrl-C
    from nixtest.interactive import RUN_FILE, runs_dir

    folder = runs_dir(state, out)
    folder.mkdir(parents=True, exist_ok=True)
    fifo = folder / RUN_FILE
    if fifo.exists():
        fifo.unlink()
    os.mkfifo(fifo)
    try:
        proc = subprocess.Popen(
            nixtest_command("rerun", "--out", str(out)),
            cwd=suite.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        wait_for(lambda: any(proc.pid == p for p in pids_matching("nixtest.cli rerun")), "nixtest")
        time.sleep(1.0)  # at the read of the FIFO
        os.killpg(proc.pid, signal.SIGINT)
        output = proc.communicate(timeout=60)[0]
    finally:
        fifo.unlink()
    assert proc.returncode == 2, output
    assert "Aborted!" not in output and "Traceback" not in output, output


def test_16_reports_that_cannot_be_written_are_one_line_and_exit_3(suite: Suite) -> None:
    suite.package("coreutils", "tests:\n  a:\n    run: 'true'\n  b:\n    run: 'false'\n")
    assert run(suite, "coreutils::b").returncode == 1
    assert (suite.out / "nix-support" / "failed").exists()
    (suite.out / "log.html").unlink()
    (suite.out / "log.html").mkdir()
    (suite.out / "log.html" / "in-the-way").write_text("")
    done = run(suite, "coreutils::a")
    output = done.stdout + done.stderr
    assert done.returncode == 3, output
    assert "Traceback" not in output and "INTERNALERROR" not in output, output
    assert len([line for line in output.splitlines() if "could not write reports" in line]) == 1
    assert list(junit_cases(suite.out)) == ["coreutils::a"]
    assert not (suite.out / "nix-support" / "failed").exists(), "an earlier run's report is left"


@needs_root
def test_17_a_normal_user_collects_beside_unreadable_folders(suite: Suite, nobody_dir: Path) -> None:
    work = nobody_dir / "work"
    work.mkdir()
    shutil.copytree(suite.tests, work / "pt")
    (work / "pt" / "coreutils").mkdir(exist_ok=True)
    (work / "pt" / "coreutils" / "tests.yaml").write_text("tests:\n  t:\n    run: 'true'\n")
    locked = nobody_dir / "locked"
    locked.mkdir(mode=0o700)
    subprocess.run(["chown", "-R", "nobody", str(work)], check=True)
    (nobody_dir / "tmp").mkdir()
    shutil.chown(nobody_dir / "tmp", "nobody")
    done = subprocess.run(
        [RUNUSER, "-u", "nobody", "--", *nixtest_command("run", "--tests", "pt", "--out", "out")],
        cwd=work,
        env=as_nobody_env(nobody_dir),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_18_a_tests_yaml_that_is_no_file_is_an_error(suite: Suite) -> None:
    suite.package("coreutils", "tests:\n  t:\n    run: 'true'\n")
    for name, make in (
        ("folder", lambda p: p.mkdir()),
        ("fifo", lambda p: os.mkfifo(p)),
        ("loop", lambda p: p.symlink_to(p.name)),
    ):
        (suite.tests / name).mkdir()
        make(suite.tests / name / "tests.yaml")
    done = run(suite)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    cases = junit_cases(suite.out)
    for name, why in (("folder", "directory"), ("fifo", "FIFO"), ("loop", "symlink loop")):
        error = cases[f"{name}::tests.yaml"].find("error")
        assert error is not None and why in (error.get("message") or ""), (name, output)


def test_18_skel_sources_and_script_stay_inside_the_package_folder(suite: Suite) -> None:
    outside = suite.root / "outside"
    outside.mkdir()
    (outside / "secret").write_text("not for the test\n")
    suite.package(
        "coreutils",
        """
        tests:
          skel:
            run: 'true'
            skel: ../../outside
          sources:
            run: 'true'
            sources: {copy: ../../outside/secret}
          script:
            script: ../../outside/secret
          linked:
            run: 'true'
            sources: {copy: link}
        """,
        files={},
    )
    (suite.tests / "coreutils" / "link").symlink_to(outside / "secret")
    done = run(suite)
    assert done.returncode == 1, done.stdout + done.stderr
    for name in ("skel", "sources", "script", "linked"):
        error = junit_cases(suite.out)[f"coreutils::{name}"].find("error")
        assert error is not None and "inside the package's folder" in (error.get("message") or ""), name


def test_18_umask_000_leaves_nothing_world_writable(suite: Suite, tmp_path: Path) -> None:
    suite.package("coreutils", "tests:\n  t:\n    run: 'true'\n")
    state = tmp_path / "state"
    done = subprocess.run(
        [
            "sh",
            "-c",
            'umask 000 && exec "$@"',
            "sh",
            *nixtest_command(
                "run", "--tests", str(suite.tests), "--out", str(suite.out), "--state", str(state)
            ),
        ],
        cwd=suite.root,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    writable = [
        str(p)
        for base in (state, suite.out)
        for p in [base, *base.rglob("*")]
        if not p.is_symlink() and p.stat().st_mode & 0o002
    ]
    assert writable == []


def test_18_per_test_output_in_junit_is_bounded(suite: Suite) -> None:
    count = 40
    tests = "".join(
        f"  chatty{i}:\n    run: head -c 400000 /dev/zero | tr '\\\\0' x; seq 1 20000; exit 1\n"
        for i in range(count)
    )
    suite.package("coreutils", "tests:\n" + tests)
    done = run(suite)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    size = (suite.out / "junit.xml").stat().st_size
    assert size < count * 40 * 1024, f"junit.xml holds {size / count / 1024:.0f} KiB a test"
    assert len(junit_cases(suite.out)) == count


def test_14_expect_patterns_search_the_whole_output(suite: Suite) -> None:
    suite.package(
        "coreutils",
        r"""
        tests:
          long:
            run: echo START; head -c 20000000 /dev/zero | tr '\0' x; echo; echo END >&2
            expect: {stdout: '^START$', stderr: '^END$'}
        """,
    )
    done = run(suite)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    by_hand = subprocess.run(
        [str(suite.wrapper("coreutils", "long"))],
        env={"PATH": "/usr/bin:/bin"},
        cwd="/",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=RUN_TIMEOUT,
    )
    assert by_hand.returncode == 0, by_hand.stderr[-3000:]


@pytest.mark.tools("setsid")
def test_5_an_autopkgtest_daemon_ends_with_its_test(suite: Suite) -> None:
    marker = killed_marker()
    tree = suite.tests / "ntdaemon-1.0"
    files = {
        "debian/control": "Source: ntdaemon\nMaintainer: nixtest <n@example.org>\n\n"
        "Package: hello\nArchitecture: any\nDescription: d\n d\n",
        "debian/changelog": "ntdaemon (1.0-1) unstable; urgency=medium\n\n  * d\n\n"
        " -- nixtest <n@example.org>  Tue, 01 Dec 2026 00:00:00 +0000\n",
        "debian/tests/control": f"Test-Command: setsid sleep {marker} & echo started\n"
        "Depends: coreutils, util-linux\n",
    }
    for rel, text in files.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text(text)
    for path in [tree, *tree.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    done = run(suite)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert gone_within(f"sleep {marker}", 5), "the autopkgtest's daemon outlived it"
    out = junit_cases(suite.out)["ntdaemon::command1"].findtext("system-out") or ""
    assert "killed 1 leftover process" in out, out
