"""wrappers: the rendered script, run with sh against a fake profile, quoting every value."""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from nixtest.definitions import Expect, Symlink
from nixtest.definitions import TestDef as Def
from nixtest.wrappers import WrapperPlan, render, wrapper_path, write_wrapper

#: every character a shell could take for something else
NASTY = (
    "a $(touch {m}) `touch {m}` 'single' \"double\" back\\slash\nnew  line   ünïcødé ${{HOME}} $$ ;|&*? \t!"
)
#: variables a shell makes itself (not leaked from the caller)
SHELL_MADE = {"PWD", "SHLVL", "OLDPWD", "_"}


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Path]:
    """A package folder and a fake profile, both with names a shell would mangle."""
    package = tmp_path / "pkg 'folder' $(x)"
    package.mkdir()
    profile = tmp_path / "fake 'profile' $(touch marker) `x` dir"
    (profile / "bin").mkdir(parents=True)
    (profile / "lib").mkdir()
    return {"root": tmp_path, "package": package, "profile": profile, "marker": tmp_path / "MARKER"}


def make_test(world: dict[str, Path], **fields: object) -> Def:
    values: dict[str, object] = {
        "package": "hello",
        "name": "greet",
        "file": world["package"] / "tests.yaml",
        "kind": "run",
        "run": "true",
    }
    values.update(fields)
    return Def(**values)  # type: ignore[arg-type]


def make_wrapper(world: dict[str, Path], test: Def, links: dict[str, Path] | None = None) -> Path:
    plan = WrapperPlan(test=test, profile=world["profile"], python=sys.executable, links=links or {})
    return write_wrapper(plan, world["root"] / "out dir")


def run_wrapper(
    wrapper: Path, *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    base = {"PATH": "/usr/bin:/bin", "LEAK": "from the caller"}
    return subprocess.run(
        ["/bin/sh", str(wrapper), *args],
        env={**base, **(env or {})},
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def read_env_dump(path: Path) -> dict[str, str]:
    pairs = [item.split("=", 1) for item in path.read_bytes().decode().split("\0") if item]
    return {k: v for k, v in pairs}


def kept_workdir(stderr: str) -> Path:
    match = re.search(r"working directory kept: (.*)", stderr)
    assert match, stderr
    return Path(match.group(1))


# --------------------------------------------------------------------------- the environment


def test_environment_arrives_byte_for_byte_and_nothing_runs(world: dict[str, Path]) -> None:
    nasty = NASTY.format(m=world["marker"])
    dump = world["root"] / "dump 'it' here"
    test = make_test(
        world,
        run='/usr/bin/env -0 > "$DUMP"; printf \'%s\' "$NASTY" > "$DUMP.raw"',
        environment={"NASTY": nasty, "DUMP": str(dump), "EMPTY": "", "SPACES": "   "},
    )
    wrapper = make_wrapper(world, test)
    done = run_wrapper(wrapper)
    assert done.returncode == 0, done.stderr
    assert not world["marker"].exists(), "a value was executed"
    assert not (Path.cwd() / "marker").exists()
    assert Path(f"{dump}.raw").read_bytes() == nasty.encode()
    env = read_env_dump(dump)
    p = str(world["profile"])
    assert env["NASTY"] == nasty
    assert env["EMPTY"] == "" and env["SPACES"] == "   "
    assert env["PATH"] == f"{p}/bin"
    assert env["LD_LIBRARY_PATH"] == f"{p}/lib"
    assert env["PKG_CONFIG_PATH"] == f"{p}/lib/pkgconfig"
    assert env["NIX_LDFLAGS"] == f"-L {p}/lib"
    assert env["NIX_CFLAGS_COMPILE"] == f"-I {p}/include"
    home = Path(env["HOME"])
    assert env["TMPDIR"] == f"{home}/.tmp"
    assert "LEAK" not in env, "the caller's environment leaked in"
    expected = {"NASTY", "DUMP", "EMPTY", "SPACES", "HOME", "TMPDIR", "PATH", "LD_LIBRARY_PATH"}
    expected |= {"PKG_CONFIG_PATH", "NIX_LDFLAGS", "NIX_CFLAGS_COMPILE"}
    assert set(env) - SHELL_MADE == expected
    assert not home.exists(), "the working directory is removed at the end"


def test_the_run_line_itself_is_quoted(world: dict[str, Path]) -> None:
    out = world["root"] / "out.txt"
    line = f"printf '%s|' \"it's\" 'a \"b\"' '$(x)' '`y`' \\\\ > '{out}'"
    wrapper = make_wrapper(world, make_test(world, run=line))
    assert run_wrapper(wrapper).returncode == 0
    assert out.read_text() == 'it\'s|a "b"|$(x)|`y`|\\|'


def test_secrets_come_from_the_callers_environment_only(world: dict[str, Path]) -> None:
    secret = "s3cr3t $(touch {m}) 'q' \"d\" \\ \nline2".format(m=world["marker"])
    dump = world["root"] / "dump"
    test = make_test(world, run=f"/usr/bin/env -0 > '{dump}'", secrets=("API_TOKEN", "OTHER"))
    wrapper = make_wrapper(world, test)
    text = wrapper.read_text()
    assert "API_TOKEN" in text

    done = run_wrapper(wrapper, env={"API_TOKEN": secret})
    assert done.returncode == 0, done.stderr
    env = read_env_dump(dump)
    assert env["API_TOKEN"] == secret
    assert "OTHER" not in env
    assert "the secret OTHER is not set in your environment" in done.stderr
    assert "API_TOKEN is not set" not in done.stderr
    assert not world["marker"].exists()
    assert "s3cr3t" not in wrapper.read_text(), "a secret value was written into the wrapper"


def test_secret_set_but_empty_is_passed(world: dict[str, Path]) -> None:
    dump = world["root"] / "dump"
    wrapper = make_wrapper(world, make_test(world, run=f"/usr/bin/env -0 > '{dump}'", secrets=("TOKEN",)))
    done = run_wrapper(wrapper, env={"TOKEN": ""})
    assert "not set" not in done.stderr
    assert read_env_dump(dump)["TOKEN"] == ""


# --------------------------------------------------------------------------- the working directory


def test_working_directory_skel_sources_symlinks(world: dict[str, Path]) -> None:
    pkg = world["package"]
    (pkg / "skel dir" / "sub").mkdir(parents=True)
    (pkg / "skel dir" / "sub" / "data.txt").write_text("from skel\n")
    (pkg / "src 'tree'").mkdir()
    (pkg / "src 'tree'" / "code.c").write_text("int main;\n")
    os.chmod(pkg / "src 'tree'" / "code.c", 0o444)
    os.chmod(pkg / "src 'tree'", 0o555)
    (pkg / "single.cfg").write_text("x=1\n")
    os.chmod(pkg / "single.cfg", 0o444)
    other = world["root"] / "other profile"
    (other / "bin").mkdir(parents=True)
    test = make_test(
        world,
        run="echo written >> 'src $(dir)/code.c' && echo changed > conf/app.cfg && pwd -P > here",
        skel=pkg / "skel dir",
        sources={"src $(dir)": pkg / "src 'tree'", "conf/app.cfg": pkg / "single.cfg"},
        symlinks=(Symlink("core", packages=("coreutils",)), Symlink("etc link", path=Path("/etc"))),
    )
    try:
        wrapper = make_wrapper(world, test, links={"core": other, "etc link": Path("/etc")})
        done = run_wrapper(wrapper, "--keep", env={"TMPDIR": str(world["root"])})
        assert done.returncode == 0, done.stderr
        wd = kept_workdir(done.stderr)
        assert wd.parent == world["root"]
        assert (wd / "here").read_text().strip() == str(wd)
        assert (wd / "sub" / "data.txt").read_text() == "from skel\n"
        assert (wd / "src $(dir)" / "code.c").read_text() == "int main;\nwritten\n"
        assert (wd / "conf" / "app.cfg").read_text() == "changed\n"
        assert os.readlink(wd / "profile") == str(world["profile"])
        assert os.readlink(wd / "core") == str(other)
        assert os.readlink(wd / "etc link") == "/etc"
        assert (wd / ".tmp").is_dir()
        # the package's own files are untouched
        assert (pkg / "src 'tree'" / "code.c").read_text() == "int main;\n"
    finally:
        os.chmod(pkg / "src 'tree'", 0o755)


def test_workdir_option(world: dict[str, Path]) -> None:
    wrapper = make_wrapper(world, make_test(world, run="pwd -P > ../seen.txt"))
    target = world["root"] / "my work"
    done = run_wrapper(wrapper, "--workdir", str(target))
    assert done.returncode == 0, done.stderr
    assert (world["root"] / "seen.txt").read_text().strip() == str(target)
    target.mkdir(exist_ok=True)
    (target / "something").write_text("x")
    done = run_wrapper(wrapper, f"--workdir={target}")
    assert done.returncode == 4
    assert "is not empty" in done.stderr
    assert (target / "something").exists(), "a non-empty folder is never used nor removed"


def test_default_workdir_is_under_tmpdir(world: dict[str, Path]) -> None:
    wrapper = make_wrapper(world, make_test(world, run='pwd -P > "$HOME/../seen"'))
    tmp = world["root"] / "tmp here"
    tmp.mkdir()
    done = run_wrapper(wrapper, env={"TMPDIR": str(tmp)})
    assert done.returncode == 0, done.stderr
    seen = Path((tmp / "seen").read_text().strip())
    assert seen.parent == tmp
    assert seen.name.startswith("nixtest-hello-greet.")
    assert sorted(p.name for p in tmp.iterdir()) == ["seen"], "the working directory is removed"


# --------------------------------------------------------------------------- outcomes and options


def test_exit_code_and_expected_exit(world: dict[str, Path]) -> None:
    result = world["root"] / "result.jsonl"
    wrapper = make_wrapper(world, make_test(world, run="exit 3", expect=Expect(exit=3)))
    # By hand: the wrapper compares the exit code with `expect`.
    assert run_wrapper(wrapper).returncode == 0
    # nixtest's run (--result, in a folder it made): the wrapper becomes the command and says so,
    # and leaves the folder for nixtest to remove.
    workdir = world["root"] / "runner-made"
    (workdir / ".tmp").mkdir(parents=True)
    done = run_wrapper(wrapper, "--result", str(result), "--workdir", str(workdir))
    assert done.returncode == 3, done.stderr
    assert [json.loads(line) for line in result.read_text().splitlines()] == [{"type": "exec"}]
    assert (workdir / "profile").is_symlink()

    wrapper = make_wrapper(world, make_test(world, name="bad", run="echo out; exit 2"))
    done = run_wrapper(wrapper)
    assert done.returncode == 1
    assert done.stdout == "out\n"
    assert "nixtest: hello::bad failed: the command exited 2, expected 0" in done.stderr


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--bogus"], 4, "unknown option: --bogus"),
        (["--workdir"], 4, "--workdir needs a value"),
        (["--ipdb"], 4, "no Python frame to debug"),
        (["--help"], 0, "usage:"),
    ],
)
def test_options(world: dict[str, Path], args: list[str], code: int, message: str) -> None:
    marker = world["root"] / "ran"
    wrapper = make_wrapper(world, make_test(world, run=f"touch '{marker}'"))
    done = run_wrapper(wrapper, *args)
    assert done.returncode == code
    assert message in done.stdout + done.stderr
    assert not marker.exists()


def test_shell_option_opens_a_shell_in_the_environment(world: dict[str, Path]) -> None:
    wrapper = make_wrapper(world, make_test(world, environment={"GREETING": "hi 'there'"}))
    done = run_wrapper(wrapper, "--shell", stdin='echo "[$GREETING] [$LEAK] [$PWD]"; exit 7\n')
    assert done.returncode == 7, done.stderr
    match = re.search(r"\[hi 'there'\] \[\] \[(.*)\]", done.stdout)
    assert match, done.stdout
    assert Path(match.group(1)).name.startswith("nixtest-hello-greet.")


def test_a_failing_preparation_is_an_error(world: dict[str, Path]) -> None:
    wrapper = make_wrapper(world, make_test(world, skel=world["package"] / "gone"))
    done = run_wrapper(wrapper)
    assert done.returncode == 3
    assert "could not prepare the working directory: skel" in done.stderr


# --------------------------------------------------------------------------- driven tests


def test_driven_wrapper_runs_the_driver_with_the_spec(world: dict[str, Path]) -> None:
    script = world["package"] / "check.py"
    out = world["root"] / "seen.json"
    script.write_text(
        "import json, os, sys\n"
        "seen = {'isolated': sys.flags.isolated, 'ld': os.environ.get('LD_LIBRARY_PATH'),"
        " 'hidden': os.environ.get('NIXTEST_LD_LIBRARY_PATH')}\n"
        f"json.dump(seen, open({str(out)!r}, 'w'))\n"
    )
    test = make_test(world, kind="classic", run=None, script=script)
    plan = WrapperPlan(test=test, profile=world["profile"], python=sys.executable)
    assert plan.driven
    text = render(plan)
    spec_line = next(line for line in text.splitlines() if "-m nixtest.driver --spec" in line)
    spec = json.loads(shlex.split(spec_line.split("--spec", 1)[1])[0])
    assert spec["kind"] == "classic" and spec["script"] == str(script)
    assert spec["package"] == "hello" and spec["test"] == "greet"
    assert f"nt_python={shlex.quote(sys.executable)}" in text

    wrapper = write_wrapper(plan, world["root"] / "out")
    done = run_wrapper(wrapper)
    assert done.returncode == 0, done.stderr
    seen = json.loads(out.read_text())
    assert seen["isolated"] == 1
    assert seen["ld"] == f"{world['profile']}/lib", "the test gets the profile's libraries"
    assert seen["hidden"] is None


def test_plan_driven() -> None:
    base = {"package": "p", "name": "t", "file": Path("/x/tests.yaml")}
    plain = WrapperPlan(Def(kind="run", run="true", **base), Path("/p"), "py")  # type: ignore[arg-type]
    checked = WrapperPlan(
        Def(kind="run", run="true", expect=Expect(stdout=("x",)), **base),  # type: ignore[arg-type]
        Path("/p"),
        "py",
    )
    imports = WrapperPlan(Def(kind="imports", imports=("zlib",), **base), Path("/p"), "py")  # type: ignore[arg-type]
    assert not plain.driven
    assert checked.driven and imports.driven
    assert "nixtest.driver" not in render(plain)
    assert "nixtest.driver" in render(checked)


# --------------------------------------------------------------------------- writing


def test_write_wrapper_path_mode_and_content(world: dict[str, Path]) -> None:
    test = make_test(world)
    out = world["root"] / "out"
    plan = WrapperPlan(test=test, profile=world["profile"], python=sys.executable)
    path = write_wrapper(plan, out)
    assert path == wrapper_path(out, "hello", "greet") == out / "rerun" / "hello" / "greet"
    assert stat.S_IMODE(path.stat().st_mode) == 0o755
    assert path.read_text() == render(plan)
    assert path.read_text().startswith("#!/bin/sh\n")
    assert [p.name for p in path.parent.iterdir()] == ["greet"], "no temporary file left behind"
    # written again with other content: replaced
    other = WrapperPlan(test=make_test(world, run="false"), profile=world["profile"], python=sys.executable)
    write_wrapper(other, out)
    assert "/bin/sh -c false" in path.read_text()


def test_wrapper_is_valid_posix_sh(world: dict[str, Path]) -> None:
    test = make_test(world, environment={"NASTY": NASTY.format(m="x")}, secrets=("S",))
    wrapper = make_wrapper(world, test)
    for shell in ("/bin/sh", "/bin/bash"):
        done = subprocess.run([shell, "-n", str(wrapper)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr


def test_write_wrapper_leaves_an_identical_wrapper_and_replaces_any_other(world: dict[str, Path]) -> None:
    out = world["root"] / "out"
    plan = WrapperPlan(test=make_test(world), profile=world["profile"], python=sys.executable)
    path = write_wrapper(plan, out)
    before = path.stat()
    # the same text again: the same file (a warm run writes nothing)
    write_wrapper(plan, out)
    assert path.stat().st_ino == before.st_ino
    # the same text but not executable, a different length, a symlink: each replaced
    path.chmod(0o644)
    write_wrapper(plan, out)
    assert stat.S_IMODE(path.stat().st_mode) == 0o755 and path.stat().st_ino != before.st_ino
    path.write_text(render(plan) + "# changed\n")
    write_wrapper(plan, out)
    assert path.read_text() == render(plan)
    elsewhere = world["root"] / "elsewhere"
    elsewhere.write_text(render(plan))
    elsewhere.chmod(0o755)
    path.unlink()
    path.symlink_to(elsewhere)
    write_wrapper(plan, out)
    assert not path.is_symlink() and path.read_text() == render(plan)
    assert sorted(p.name for p in path.parent.iterdir()) == ["greet"], "no temporary file left behind"


def test_write_wrapper_is_executable_whatever_the_umask(world: dict[str, Path]) -> None:
    plan = WrapperPlan(test=make_test(world), profile=world["profile"], python=sys.executable)
    old = os.umask(0o077)
    try:
        path = write_wrapper(plan, world["root"] / "out")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o755
