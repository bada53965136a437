"""`run:` tests in nixtest's own runs: the spawner forks their supervisor, which starts the command.

No interpreter starts for them (nixtest.child.spawner, a small warm server).  What the command sees,
what is killed and reported, and the result must be what the wrapper's path
gives (NIXTEST_COLD=1, or `Context(warm=False)`), and no secret may reach an argv.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_hardening import gone_within, junit_cases, killed_marker

from conftest import Suite, nixtest_command, pids_matching
from nixtest.definitions import load_package
from nixtest.results import TestResult
from nixtest.runner import Context, Prepared, execute, prepare

pytestmark = pytest.mark.dpkg

RUN_TIMEOUT = 180

#: what the command's shell is given, written to $DUMP (its parent's command line to $DUMP.parent)
LOOK = r"""
{
  echo "cwd=$(pwd)"
  echo "umask=$(umask)"
  echo "secret length=${#NT_SECRET}"
  set -- $(cat /proc/$$/stat | sed 's/^.*) //')
  if [ "$4" = "$2" ] && [ "$2" = "$PPID" ]; then echo "the parent leads the session" > "$DUMP.session"; fi
  if [ "$4" = "$$" ] && [ "$3" = "$$" ]; then echo "the command leads its session" > "$DUMP.session"; fi
  grep -E '^(SigBlk|SigIgn|NoNewPrivs)' /proc/self/status  # a command's (dash blocks all as it waits)
  cat /proc/$$/limits
  ls /proc/$$/fd
  [ -t 0 ] && echo "stdin is a terminal"; readlink /proc/$$/fd/0
  tr '\0' '\n' < /proc/$$/environ | grep -v '^NT_SECRET='
  if touch profile/nixtest-was-here 2>/dev/null; then echo "profile writable"; fi
} > "$DUMP"
tr '\0' ' ' < /proc/$PPID/cmdline > "$DUMP.parent"
"""


def nixtest_run(
    suite: Suite, *, cold: bool, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        nixtest_command("run", "--no-cache", "--tests", str(suite.tests), "--out", str(suite.out), "-j", "1"),
        cwd=suite.root,
        env={**(env or os.environ), "NIXTEST_COLD": "1" if cold else "0"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )


def test_a_run_test_is_the_spawned_supervisors_child_and_sees_the_wrappers_world(suite: Suite) -> None:
    dumps = suite.root / "dumps"
    dumps.mkdir()
    suite.package(
        "coreutils",
        f"""
        tests:
          look:
            run: {json.dumps(LOOK)}
            environment: {{DUMP: "{dumps}/look", SOME: thing, LANG: C.UTF-8}}
            secrets: [NT_SECRET]
            profile: [coreutils, dash, grep, sed]
        """,
    )
    seen: dict[str, str] = {}
    parents: dict[str, str] = {}
    sessions: dict[str, str] = {}
    for how in ("warm", "cold"):
        done = nixtest_run(suite, cold=how == "cold", env=dict(os.environ, NT_SECRET="s3cret-value"))
        assert done.returncode == 0, done.stdout + done.stderr
        text = (dumps / "look").read_text()
        home = re.search(r"^HOME=(.*)$", text, re.M)
        assert home, text
        seen[how] = text.replace(home.group(1), "<workdir>")
        parents[how] = (dumps / "look.parent").read_text()
        sessions[how] = (dumps / "look.session").read_text()
    # warm: the supervisor is a fork of the spawner (no interpreter of its own), cold: the reaper's
    assert "nixtest/child/spawner.py" in parents["warm"], parents
    assert "spawner" not in parents["cold"] and "reaper" in parents["cold"], parents
    assert seen["warm"] == seen["cold"], (seen["warm"], seen["cold"])
    look = seen["warm"]
    assert "cwd=<workdir>\n" in look and "umask=0022\n" in look and "secret length=12\n" in look
    assert "SOME=thing\n" in look and "LANG=C.UTF-8\n" in look and "TMPDIR=<workdir>/.tmp\n" in look
    # The command is the supervisor's child.  The wrapper's supervisor leads the
    # session; the warm one supervises test after test, and each command leads a
    # session of its own (the group a timeout kills), with the supervisor above it.
    assert sessions == {"cold": "the parent leads the session\n", "warm": "the command leads its session\n"}
    assert "/dev/null" in look and "stdin is a terminal" not in look
    if os.geteuid() == 0:
        assert "profile writable" not in look, "the profile is writable to a run: test run as root"


def test_a_detached_daemon_of_a_warm_run_test_is_killed_and_reported(suite: Suite) -> None:
    marker = killed_marker()
    suite.package(
        "util-linux",
        f"""
        tests:
          daemon:
            profile: [util-linux, coreutils, dash]
            run: setsid sleep {marker} & sleep 0.3; tr '\\0' ' ' < /proc/$PPID/cmdline; echo; echo started
            expect: {{stdout: started}}
        """,
    )
    done = nixtest_run(suite, cold=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert gone_within(f"sleep {marker}", 5), "a daemon of the test outlived it"
    out = junit_cases(suite.out)["util-linux::daemon"].findtext("system-out") or ""
    assert "killed 1 leftover process" in out and f"sleep {marker}" in out, out
    log = suite.log("util-linux", "daemon").read_text()
    assert "nixtest/child/spawner.py" in log, log  # this path, not the wrapper's
    # the supervisor's own word, as a wrapper's reaper says it
    assert "nixtest: util-linux::daemon: killed 1 process the test left running" in log, log


def test_no_secret_in_any_argv_of_a_warm_run_test(suite: Suite) -> None:
    value = "argv-" + secrets.token_hex(12)
    found = suite.root / "found"
    suite.package(
        "coreutils",
        f"""
        tests:
          plain:
            run: printf %s "$NT_TOKEN" > p; grep -lsaFf p /proc/[0-9]*/cmdline > {found}.plain; sleep 1
            secrets: [NT_TOKEN]
            profile: [coreutils, dash, grep]
          expecting:
            run: sleep 1; tr '\\0' ' ' < /proc/$PPID/cmdline; echo; echo "done ${{#NT_TOKEN}}"
            expect: {{stdout: done 29}}
            secrets: [NT_TOKEN]
        """,
    )
    seen: list[int] = []
    proc = subprocess.Popen(
        nixtest_command("run", "--no-cache", "--tests", str(suite.tests), "--out", str(suite.out), "-j", "2"),
        cwd=suite.root,
        env={**os.environ, "NT_TOKEN": value, "NIXTEST_COLD": "0"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    while proc.poll() is None:
        seen.extend(pids_matching(value))
        time.sleep(0.01)
    output = proc.communicate()[0].decode(errors="replace")
    assert proc.returncode == 0, output
    assert seen == [], f"the secret was in the argv of processes {sorted(set(seen))}"
    assert (Path(f"{found}.plain")).read_text() == "", "the test saw its secret in an argv"
    log = suite.log("coreutils", "expecting").read_text()
    assert "nixtest/child/spawner.py" in log and value not in log, log


# --------------------------------------------------------------------------- the same result

CASES = """
tests:
  passes: {run: "echo out; echo err >&2"}
  exit-3: {run: "echo three; exit 3", expect: {exit: 3}}
  wrong-exit: {run: "echo some; exit 2"}
  pattern: {run: "echo hi; echo there >&2", expect: {stdout: "^hi$", stderr: there}}
  no-match: {run: "echo nope", expect: {stdout: "^hi$"}}
  daemon: {run: "setsid sleep %(marker)s & sleep 0.3; echo started", profile: [util-linux, coreutils, dash]}
  no-command: {run: "no-such-command-nixtest"}
"""


@pytest.fixture
def cases(tmp_path: Path, nixtest_state: Path) -> Iterator[tuple[dict[str, Any], Path]]:
    folder = tmp_path / "pt" / "util-linux"
    folder.mkdir(parents=True)
    (folder / "tests.yaml").write_text(textwrap.dedent(CASES % {"marker": killed_marker()}))
    yield {d.name: d for d in load_package(folder)}, nixtest_state


def _comparable(r: TestResult) -> dict[str, Any]:
    data = r.to_dict()
    for key in ("start", "end", "duration", "log_path"):
        data.pop(key, None)
    for step in data["steps"]:
        step.pop("start", None)
        step.pop("end", None)
        step["output"] = [(stream, _no_pids(text)) for stream, text in step["output"]]
    data["warnings"] = [_no_pids(w) for w in data["warnings"]]
    return data


def _no_pids(text: str) -> str:
    """The pid of a killed leftover differs from run to run."""
    return re.sub(r"\b\d+ \(", "PID (", text)


def test_a_warm_run_tests_result_is_the_wrappers(cases: tuple[dict[str, Any], Path], tmp_path: Path) -> None:
    defs, state = cases
    results: dict[bool, dict[str, dict[str, Any]]] = {}
    for warm in (True, False):
        ctx = Context(out=tmp_path / f"out-{warm}", state=state, warm=warm)
        try:
            results[warm] = {}
            for name, defn in defs.items():
                p = prepare(defn, ctx)
                assert isinstance(p, Prepared), p
                if warm:
                    assert ctx.zygote_for(p) is not None, f"{name} does not start from the zygote"
                r = execute(p, ctx)
                results[warm][name] = _comparable(r)
                results[warm][name]["wrapper"] = r.wrapper.replace(str(ctx.out), "OUT")
                results[warm][name]["command"] = [c.replace(str(ctx.out), "OUT") for c in r.command]
        finally:
            ctx.close()
    for name in defs:
        assert results[True][name] == results[False][name], name
    warm = results[True]
    outcomes = {name: r["outcome"] for name, r in warm.items()}
    assert outcomes == {
        "passes": "passed",
        "exit-3": "passed",
        "wrong-exit": "failed",
        "pattern": "passed",
        "no-match": "failed",
        "daemon": "passed",
        "no-command": "failed",
    }
    output = [tuple(chunk) for chunk in warm["passes"]["steps"][0]["output"]]
    assert output == [("stdout", "out\n"), ("stderr", "err\n")], output
    assert any("killed 1 leftover process" in w for w in warm["daemon"]["warnings"])

    # the wrapper run by hand: the same exit status and output as the step
    out = tmp_path / "out-True"
    for name, code in (("passes", 0), ("exit-3", 0), ("wrong-exit", 1), ("pattern", 0), ("no-match", 1)):
        by_hand = subprocess.run(
            [str(out / "rerun" / "util-linux" / name)],
            env={"PATH": "/usr/bin:/bin"},
            cwd="/",
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
        )
        assert by_hand.returncode == code, (name, by_hand.stdout, by_hand.stderr)
        step_out = "".join(t for s, t in warm[name]["steps"][0]["output"] if s == "stdout")
        assert by_hand.stdout == step_out, name
