"""Warm Python-driven tests: the zygote (nixtest.child.zygote) forks each test's driver.

What a test sees must be what its wrapper gives it (environment, working
directory, session, umask, limits, descriptors, signals, interpreter), and
nothing one test does may reach the next.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from test_e2e_core import junit_outcomes
from test_loop import run, start

from conftest import Suite, nixtest_command, pids_matching

pytestmark = pytest.mark.dpkg

#: a classic script that writes what its process looks like to the file named by $DUMP
DUMP = """\
import json, os, resource, signal, stat, sys
home = os.environ["HOME"]
def rel(value):
    return value.replace(home, "<workdir>")
fds = {}
for fd in sorted(os.listdir("/proc/self/fd")):
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        continue
    fds[fd] = "pipe" if target.startswith("pipe:") else rel(target)
fds.pop(str(max(int(f) for f in fds)), None)  # the listing's own descriptor
SIGNALS = ("SIGINT", "SIGTERM", "SIGPIPE", "SIGCHLD", "SIGHUP", "SIGALRM")
limits = {n: resource.getrlimit(getattr(resource, n)) for n in dir(resource) if n.startswith("RLIMIT_")}
umask = os.umask(0); os.umask(umask)
parent = open(f"/proc/{os.getppid()}/cmdline", "rb").read().split(b"\\0")
seen = {
    "environ": {k: rel(v) for k, v in os.environ.items()},
    "cwd": rel(os.getcwd()),
    "session leader": os.getsid(0) == os.getpid() == os.getpgid(0),
    "umask": umask,
    "limits": limits,
    "fds": fds,
    "signals": {s: str(signal.getsignal(getattr(signal, s))) for s in SIGNALS},
    "sys.path": sys.path,
    "flags": [sys.flags.isolated, sys.flags.utf8_mode, sys.flags.dont_write_bytecode],
    "encoding": [sys.stdout.encoding, sys.getfilesystemencoding()],
    "executable": sys.executable,
    "argv": sys.argv,
    "tty": os.isatty(0),
}
with open(os.environ["DUMP"], "w") as f:
    json.dump(seen, f, indent=1, sort_keys=True)
with open(os.environ["DUMP"] + ".parent", "wb") as f:
    f.write(b" ".join(parent))
"""


def test_the_zygote_child_is_what_the_wrapper_starts(suite: Suite) -> None:
    dumps = suite.root / "dumps"
    dumps.mkdir()
    suite.package(
        "python3",
        f"""
        tests:
          look: {{script: look.py, environment: {{DUMP: "{dumps}/look", SOME: "thing"}}, profile: [python3]}}
        """,
        {"look.py": DUMP},
    )
    seen = {}
    for how in ("warm", "cold"):
        env = {**os.environ, "NIXTEST_COLD": "1" if how == "cold" else "0"}
        done = subprocess.run(
            nixtest_command("run", "--tests", str(suite.tests), "--out", str(suite.out), "-j", "1"),
            cwd=suite.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        seen[how] = json.loads((dumps / "look").read_text())
        seen[how + " parent"] = (dumps / "look.parent").read_text()
    assert "nixtest.child.zygote" in seen["warm parent"], "the warm run did not use the zygote"
    assert "nixtest.child.zygote" not in seen["cold parent"]
    assert seen["warm"] == seen["cold"]
    # the test's supervisor (nixtest.child.reaper) leads the session, the driver runs below it
    assert not seen["warm"]["session leader"] and seen["warm"]["cwd"] == "<workdir>"
    assert seen["warm"]["environ"]["SOME"] == "thing"


LEAKS = {
    "plumbum local.env": ("local.env['NIXTEST_LEAK'] = '1'", "assert 'NIXTEST_LEAK' not in local.env"),
    "os.environ": ("os.environ['NIXTEST_LEAK'] = '1'", "assert 'NIXTEST_LEAK' not in os.environ"),
    "sys.path": ("sys.path.insert(0, '/nixtest-leak')", "assert '/nixtest-leak' not in sys.path"),
    "the test's own module": (
        "import leaky_helper; leaky_helper.COUNT += 1",
        "assert 'leaky_helper' not in sys.modules; import leaky_helper; assert leaky_helper.COUNT == 0",
    ),
    "logging handlers": (
        "import logging; logging.getLogger().addHandler(logging.StreamHandler()); logging.getLogger('x').setLevel(5)",  # noqa: E501
        "import logging; assert not logging.getLogger().handlers; assert logging.getLogger('x').level == 0",
    ),
    "cwd": ("os.chdir('/')", "assert os.getcwd() == os.environ['HOME']"),
    "module globals": ("import json; json.LEAK = 1", "import json; assert not hasattr(json, 'LEAK')"),
}


def test_nothing_one_test_does_reaches_the_next(suite: Suite) -> None:
    files: dict[str, str] = {"leaky_helper.py": "COUNT = 0\n"}
    tests = []
    for n, (what, (change, check)) in enumerate(LEAKS.items()):
        # the check runs first too: it must pass on a fresh interpreter
        for role, body in (("check-before", check), ("change", change), ("check", check)):
            name = f"{n}-{role}"
            files[f"{name}.py"] = f"# {what}\nimport os, sys\n{body}\n"
            tests.append(f"  {name}: {{script: {name}.py, profile: [python3]}}\n")
    suite.package("python3", "tests:\n" + "".join(tests), files)
    code, output, pid = run(suite, "-j", "1")
    assert code == 0, output
    outcomes = junit_outcomes(suite.out)
    assert len(outcomes) == 3 * len(LEAKS) and set(outcomes.values()) == {"passed"}, outcomes


def test_a_timeout_kills_the_zygote_childs_whole_group(suite: Suite) -> None:
    marker = f"nixtest-zygote-timeout-{os.getpid()}"
    script = f"from plumbum import local\nlocal['sh']('-c', 'sleep 60; : {marker}')\n"
    suite.package(
        "python3",
        "tests:\n  hangs: {script: hangs.py, timeout: 2, profile: [python3, dash, coreutils]}\n",
        {"hangs.py": script},
    )
    code, output, _ = run(suite, "-j", "1")
    assert code == 1, output
    assert "timed out after 2 seconds" in output
    assert pids_matching(marker) == []


def test_killing_nixtest_ends_the_zygote_and_its_tests(suite: Suite) -> None:
    marker = f"nixtest-zygote-orphan-{os.getpid()}"
    script = f"from plumbum import local\nlocal['sh']('-c', 'sleep 60; : {marker}')\n"
    tests = "tests:\n  hangs: {script: hangs.py, profile: [python3, dash, coreutils]}\n"
    suite.package("python3", tests, {"hangs.py": script})
    proc = start(suite, "-j", "1", output=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not pids_matching(marker):
            assert proc.poll() is None and time.monotonic() < deadline, "the test never started"
            time.sleep(0.05)
        # started by the nixtest process's worker that runs the test (nixtest.run.workers)
        zygotes = [p for p in pids_matching("nixtest.child.zygote") if _parent(_parent(p)) == proc.pid]
        assert len(zygotes) == 1
        proc.kill()  # SIGKILL: nixtest cannot clean up
        proc.wait()
        zygote = zygotes[0]
        deadline = time.monotonic() + 30
        while (pids_matching(marker) or _alive(zygote)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pids_matching(marker) == [], "a test outlived nixtest"
        assert not _alive(zygote), "the zygote outlived nixtest"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _alive(pid: int) -> bool:
    """Whether `pid` is a live process (not a zombie: its new parent reaps it when it will)."""
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def _parent(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("PPid:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0
