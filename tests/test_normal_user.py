"""A normal user's nixtest, as `nobody`: the README's install into a venv in the
home folder, then the whole flow without root.

`runuser -u nobody` with `HOME` a folder nobody owns and a cleared environment:
the bundled tests run, a failure's wrapper re-runs, `--ipdb` stops in the
script, `nixtest rerun`, `debug` and `shell` work, and all state is in the
user's XDG cache.  The install is the README's command, offline: pip gets
`--no-index --no-deps --no-build-isolation`, the dependencies come from this
suite's own (world-readable) site-packages, the build tools from Debian's
python3-setuptools and python3-wheel.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pexpect
import pytest
from test_readme import readme_commands

from conftest import needs_dpkg, remove_tree, world_readable_dir

ROOT = Path(__file__).resolve().parent.parent

# root: to become nobody with runuser
pytestmark = [needs_dpkg, pytest.mark.root]

PATH = "/usr/local/bin:/usr/bin:/bin"

#: a classic script failing at its second step (line 4), as in docs/tutorial.md
GREETING_YAML = """\
tests:
  greeting:
    script: greeting.py
    profile: [hello, coreutils]
  version:
    run: hello --version
"""
GREETING_PY = """\
from plumbum.cmd import hello, test
wanted = "Hello, nobody!"
said = hello().strip()
test[said, "=", wanted] & succeeds("hello greets nobody")
"""


def nobody_can_read(path: str) -> bool:
    done = subprocess.run(["runuser", "-u", "nobody", "--", "test", "-r", path], cwd="/")
    return done.returncode == 0


@dataclass
class Home:
    """nobody's home folder, and a way to run a shell command there as nobody."""

    path: Path

    @property
    def venv(self) -> Path:
        return self.path / ".venvs" / "nixtest"

    def env(self) -> dict[str, str]:
        return {"HOME": str(self.path), "PATH": PATH, "LANG": "C.UTF-8", "TERM": "dumb"}

    def argv(self, command: str) -> list[str]:
        env = [f"{k}={v}" for k, v in self.env().items()]
        return ["runuser", "-u", "nobody", "--", "env", "-i", *env, "sh", "-c", command]

    def run(
        self, command: str, *, cwd: Path | None = None, stdin: str = ""
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(command),
            cwd=cwd or self.path,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=300,
        )

    def spawn(self, command: str, cwd: Path) -> pexpect.spawn:
        argv = self.argv(command)
        return pexpect.spawn(
            argv[0],
            argv[1:],
            cwd=str(cwd),
            encoding="utf-8",
            codec_errors="replace",
            timeout=60,
            dimensions=(50, 200),
        )


def offline(command: str, deps: str) -> str:
    """The README's normal-user command, with pip kept off the network (see the module's doc)."""
    venv, install, run = (part.strip() for part in command.split("&&"))
    assert venv.startswith("python3 -m venv ") and install.endswith("/bin/pip install .")
    target = venv.split()[-1]
    site = f"{target}/lib/python{sys.version_info[0]}.{sys.version_info[1]}/site-packages"
    return " && ".join(
        [
            venv.replace("-m venv ", "-m venv --system-site-packages "),
            f"echo {shlex.quote(deps)} > {site}/nixtest-deps.pth",
            install.replace(" install .", " install --quiet --no-index --no-deps --no-build-isolation ."),
            run,
        ]
    )


@pytest.fixture(scope="module")
def home() -> Iterator[Home]:
    deps = sysconfig.get_paths()["purelib"]
    base = os.path.realpath(sys.executable)
    problem = ""
    if not nobody_can_read(deps):
        problem = f"nobody cannot read this suite's site-packages {deps}"
    elif os.path.realpath(shutil.which("python3", path=PATH) or "") != base:
        problem = f"the python3 on {PATH} is not this suite's interpreter {base}"
    if problem:
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)
    path = world_readable_dir("nixtest-home-")
    os.chown(path, *_nobody())
    os.chmod(path, 0o700)
    yield Home(path)
    remove_tree(path)


def _nobody() -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid


@pytest.fixture(scope="module")
def checkout(home: Home) -> Path:
    """A copy of this checkout in nobody's home, as a user's own clone would be."""
    target = home.path / "nixtest"
    ignore = shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", "nixtest-out", "build", "_build")
    shutil.copytree(ROOT, target, ignore=ignore, symlinks=True)
    uid, gid = _nobody()
    for folder, dirs, files in os.walk(target):
        for name in [folder, *(os.path.join(folder, n) for n in dirs + files)]:
            os.lchown(name, uid, gid)
    return target


@pytest.fixture(scope="module")
def installed(home: Home, checkout: Path) -> subprocess.CompletedProcess[str]:
    """The README's normal-user command, run by nobody in the checkout: install, then `nixtest run`."""
    command = readme_commands()[2].replace("~/", f"{home.path}/")
    return home.run(offline(command, sysconfig.get_paths()["purelib"]), cwd=checkout)


def test_the_readme_install_and_the_bundled_tests_run_as_nobody(
    home: Home, installed: subprocess.CompletedProcess[str]
) -> None:
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    assert re.search(r"^=+ \d+ passed in ", installed.stdout, re.MULTILINE), installed.stdout[-2000:]
    # nixtest itself is the copy installed into nobody's venv, not the suite's
    script = home.venv / "bin" / "nixtest"
    assert script.is_file() and script.stat().st_uid == _nobody()[0]
    where = home.run(f"{home.venv}/bin/python -c 'import nixtest; print(nixtest.__file__)'")
    assert where.stdout.startswith(str(home.venv)), where
    # the state is in nobody's XDG cache
    cache = home.path / ".cache" / "nixtest"
    profiles = list((cache / "profiles").iterdir())
    assert profiles and all(p.stat().st_uid == _nobody()[0] for p in profiles)
    assert f"state {cache}" in installed.stdout


@dataclass
class Failing:
    """nobody's own package tests, one failing, and their first `nixtest run` from ~/work."""

    work: Path
    run: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def failing(home: Home, installed: subprocess.CompletedProcess[str]) -> Failing:
    # module-scoped and made here, so that each test holds up alone (also under -n)
    assert installed.returncode == 0, installed.stderr[-2000:]
    work = home.path / "work"
    tests = work / "package_tests" / "hello"
    setup = home.run(
        f"mkdir -p {tests} && printf %s {shlex.quote(GREETING_YAML)} > {tests}/tests.yaml"
        f" && printf %s {shlex.quote(GREETING_PY)} > {tests}/greeting.py"
    )
    assert setup.returncode == 0, setup.stderr
    return Failing(work, home.run(f"{home.venv}/bin/nixtest run", cwd=work))


def test_a_failure_reruns_as_nobody(home: Home, failing: Failing) -> None:
    done = failing.run
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr
    wrapper = failing.work / "nixtest-out" / "rerun" / "hello" / "greeting"
    lines = done.stdout.splitlines()
    assert f"to reproduce: {wrapper}" in lines and f"    to debug: {wrapper} --ipdb" in lines
    assert wrapper.stat().st_uid == _nobody()[0]
    # the wrapper, by nobody, from anywhere
    again = home.run(str(wrapper), cwd=Path("/"))
    assert again.returncode == 1, again.stdout + again.stderr
    assert "hello::greeting failed: failed at step 1 'hello greets nobody'" in again.stdout + again.stderr
    # nixtest rerun: exactly what failed
    rerun = home.run(f"{home.venv}/bin/nixtest rerun", cwd=failing.work)
    assert rerun.returncode == 1, rerun.stdout[-2000:] + rerun.stderr
    assert "running again 1 test that failed in the last run: hello::greeting" in rerun.stdout
    assert re.search(r"^=+ 1 failed(, 1 deselected)? in ", rerun.stdout, re.MULTILINE), rerun.stdout[-800:]


def _at_ipdb(child: pexpect.spawn) -> str:
    child.expect("ipdb> ")
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", str(child.before))  # without colours


def test_ipdb_as_nobody_stops_in_the_script(home: Home, failing: Failing) -> None:
    wrapper = failing.work / "nixtest-out" / "rerun" / "hello" / "greeting"
    for command in (f"{wrapper} --ipdb", f"{home.venv}/bin/nixtest debug hello::greeting"):
        child = home.spawn(command, failing.work)
        before = _at_ipdb(child)
        assert "greeting.py(4)<module>()" in before, before
        child.sendline("p said")
        assert "'Hello, world!'" in _at_ipdb(child)
        child.sendline("q")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 1, command


def test_shell_as_nobody_is_in_the_tests_environment(home: Home, failing: Failing) -> None:
    done = home.run(
        f"{home.venv}/bin/nixtest shell hello::greeting",
        cwd=failing.work,
        stdin='echo "user=$(id -un) home=$HOME"; command -v hello; exit 3\n',
    )
    assert done.returncode == 3, done.stdout + done.stderr
    assert "user=nobody" in done.stdout
    assert f"{home.path}/.cache/nixtest/profiles/" in done.stdout


def test_history_as_nobody_from_the_users_cache(home: Home, failing: Failing) -> None:
    # the bundled tests' run and the failing one, at least, are nobody's history
    runs = home.run(f"{home.venv}/bin/nixtest history")
    assert runs.returncode == 0, runs.stdout + runs.stderr
    assert len([line for line in runs.stdout.splitlines() if line.startswith("run ")]) >= 2, runs.stdout
    test = home.run(f"{home.venv}/bin/nixtest history hello::greeting")
    assert test.returncode == 0 and "hello::greeting: failing" in test.stdout, test.stdout + test.stderr
    page = home.path / "history.html"
    done = home.run(f"{home.venv}/bin/nixtest history --html {page}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert page.stat().st_uid == _nobody()[0]
    text = page.read_text(encoding="utf-8")
    assert "hello::greeting" in text and 'class="strip"' in text
    assert (home.path / ".cache" / "nixtest" / "history.sqlite").is_file()
