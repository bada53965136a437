"""driver: classic scripts (succeeds/fails steps), run+expect, imports, pytest modules; the result file."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from plumbum import local

from nixtest.driver import Checker, Driver, StepFailed, absjoin, envvars

BASE_PATH = "/usr/bin:/bin"


class Drive:
    """One run of `python -I -m nixtest.driver` in a folder of its own."""

    def __init__(self, code: int, records: list[dict[str, Any]], stdout: str, stderr: str) -> None:
        self.code = code
        self.records = records
        self.stdout = stdout
        self.stderr = stderr

    @property
    def steps(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["type"] == "step"]

    @property
    def end(self) -> dict[str, Any]:
        ends = [r for r in self.records if r["type"] == "end"]
        assert len(ends) == 1, self.records
        return ends[0]


@pytest.fixture
def drive(tmp_path: Path) -> Any:
    work = tmp_path / "work"
    work.mkdir()

    def run(kind: str, env: dict[str, str] | None = None, **spec: Any) -> Drive:
        full = {"package": "pkg", "test": "t", "kind": kind, "secrets": [], **spec}
        result = tmp_path / "result.jsonl"
        result.unlink(missing_ok=True)
        done = subprocess.run(
            [
                sys.executable,
                "-I",
                "-m",
                "nixtest.driver",
                "--spec",
                json.dumps(full),
                "--result",
                str(result),
            ],
            cwd=work,
            env={"PATH": BASE_PATH, "HOME": str(work), **(env or {})},
            capture_output=True,
            text=True,
            timeout=120,
        )
        records = [json.loads(line) for line in result.read_text().splitlines()] if result.exists() else []
        return Drive(done.returncode, records, done.stdout, done.stderr)

    run.work = work  # type: ignore[attr-defined]
    return run


def script(tmp_path: Path, text: str, name: str = "script.py") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


# --------------------------------------------------------------------------- classic scripts


def test_classic_steps_pass(drive: Any, tmp_path: Path) -> None:
    path = script(
        tmp_path,
        """
        out = local["echo"]["hello there"] & succeeds("echo says hello")
        assert out == "hello there\\n", repr(out)
        local["false"] & fails("false fails")
        local["true"] & succeeds
        local["false"] & fails
        """,
    )
    d = drive("classic", script=path)
    assert d.code == 0, d.stderr
    assert [(s["message"], s["outcome"], s["exit_code"]) for s in d.steps] == [
        ("echo says hello", "passed", 0),
        ("false fails", "passed", 1),
        ("", "passed", 0),
        ("", "passed", 1),
    ]
    first = d.steps[0]
    assert first["command"].endswith("echo 'hello there'")
    assert first["output"] == [["stdout", "hello there\n"]]
    assert first["expected"] == "0" and d.steps[1]["expected"] == "non-zero"
    assert first["start"] <= first["end"]
    assert (d.end["outcome"], d.end["message"]) == ("passed", "")
    assert "hello there" in d.stdout, "a step's output also goes to the driver's own output"


def test_classic_fails_at_the_second_step(drive: Any, tmp_path: Path) -> None:
    never = tmp_path / "never"
    path = script(
        tmp_path,
        f"""
        local["true"] & succeeds("first works")
        local["sh"]["-c", "echo broken >&2; exit 4"] & succeeds("second must work")
        local["touch"][{str(never)!r}] & succeeds("third")
        """,
    )
    d = drive("classic", script=path)
    assert d.code == 1
    assert [s["outcome"] for s in d.steps] == ["passed", "failed"]
    failed = d.steps[1]
    assert failed["message"] == "second must work"
    assert failed["exit_code"] == 4
    assert "exited 4, expected 0" in failed["detail"]
    assert ["stderr", "broken\n"] in failed["output"]
    assert d.end["outcome"] == "failed"
    assert d.end["message"].startswith("failed at step 2 'second must work': ")
    assert "nixtest: pkg::t failed: failed at step 2 'second must work'" in d.stderr
    assert not never.exists(), "the script stops at the failing step"


def test_fails_step_that_succeeds(drive: Any, tmp_path: Path) -> None:
    d = drive("classic", script=script(tmp_path, 'local["true"] & fails("true must fail")\n'))
    assert d.code == 1
    assert d.steps[0]["outcome"] == "failed"
    assert "exited 0, expected non-zero" in d.steps[0]["detail"]
    assert d.end["message"].startswith("failed at step 1 'true must fail'")


def test_bare_checker_without_parentheses_fails_too(drive: Any, tmp_path: Path) -> None:
    d = drive("classic", script=script(tmp_path, 'local["true"] & succeeds\nlocal["false"] & succeeds\n'))
    assert d.code == 1
    assert [s["outcome"] for s in d.steps] == ["passed", "failed"]
    assert d.end["message"].startswith("failed at step 2: ")


def test_classic_exception_names_the_script_line(drive: Any, tmp_path: Path) -> None:
    path = script(
        tmp_path,
        """
        x = 1

        raise ValueError("boom at three")
        """,
    )
    d = drive("classic", script=path)
    assert d.code == 1
    assert d.end["message"] == "ValueError (line 4): boom at three"
    assert f'File "{path}", line 4, in <module>' in d.stderr
    assert "ValueError: boom at three" in d.stderr
    assert "driver.py" not in d.stderr, "the traceback starts at the script's frame"


def test_classic_exception_in_a_function_names_the_innermost_script_line(drive: Any, tmp_path: Path) -> None:
    path = script(
        tmp_path,
        """
        def helper():
            return {}["missing"]
        helper()
        """,
    )
    d = drive("classic", script=path)
    assert d.code == 1
    assert d.end["message"] == "KeyError (line 3): 'missing'"


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        ("import sys\nsys.exit(0)\n", 0, ""),
        ("import sys\nsys.exit()\n", 0, ""),
        ("import sys\nsys.exit(2)\n", 1, "the script exited with 2"),
        ("raise SystemExit('no')\n", 1, "the script exited with 'no'"),
    ],
)
def test_classic_sys_exit(drive: Any, tmp_path: Path, body: str, code: int, message: str) -> None:
    d = drive("classic", script=script(tmp_path, body))
    assert d.code == code
    assert d.end["message"] == message


def test_classic_globals(drive: Any, tmp_path: Path) -> None:
    profile = tmp_path / "prof"
    path = script(
        tmp_path,
        f"""
        import os, sys
        log.info("a log line")
        env = envvars({str(profile)!r})
        assert env["PATH"] == {str(profile / "bin")!r}, env
        assert env["LD_LIBRARY_PATH"] == {str(profile / "lib")!r}, env
        assert env["NIX_CFLAGS_COMPILE"] == "-I " + {str(profile / "include")!r}, env
        assert absjoin("a", "..", "b") == os.path.join(os.getcwd(), "b")
        assert local.cwd == os.getcwd()
        assert __name__ == "__main__" and __file__ == {str(tmp_path / "script.py")!r}
        assert sys.argv == [__file__]
        import helper_module  # next to the script
        assert helper_module.VALUE == 42
        """,
    )
    (tmp_path / "helper_module.py").write_text("VALUE = 42\n")
    d = drive("classic", script=path)
    assert d.code == 0, d.stderr
    assert "INFO nixtest.pkg.t: a log line" in d.stderr


def test_plumbum_cmd_finds_commands_on_the_tests_path(drive: Any, tmp_path: Path) -> None:
    tools = tmp_path / "tools"
    tools.mkdir()
    tool = tools / "onlyhere"
    tool.write_text('#!/bin/sh\necho only here "$@"\n')
    tool.chmod(0o755)
    path = script(
        tmp_path,
        f"""
        from plumbum.cmd import onlyhere
        out = onlyhere["x"] & succeeds("the tool runs")
        assert out == "only here x\\n"
        assert str(onlyhere) == {str(tool)!r}
        """,
    )
    d = drive("classic", script=path, env={"PATH": f"{tools}:{BASE_PATH}"})
    assert d.code == 0, d.stderr
    d = drive("classic", script=script(tmp_path, "from plumbum.cmd import nowhere_nixtest\n", "other.py"))
    assert d.code == 1
    assert "ImportError (line 1): cannot import name 'nowhere_nixtest'" in d.end["message"]


def test_redirected_commands_are_steps(drive: Any, tmp_path: Path) -> None:
    path = script(
        tmp_path,
        """
        (local["echo"]["to a file"] > "out.txt") & succeeds("redirected stdout")
        (local["cat"] < "out.txt") & succeeds("stdin from a file")
        (local["echo"]["piped"] | local["cat"]) & succeeds("a pipeline")
        """,
    )
    d = drive("classic", script=path)
    assert d.code == 0, d.stderr
    assert [s["outcome"] for s in d.steps] == ["passed"] * 3
    assert d.steps[1]["output"] == [["stdout", "to a file\n"]]
    assert d.steps[2]["output"] == [["stdout", "piped\n"]]


def test_secrets_are_masked_in_the_result(drive: Any, tmp_path: Path) -> None:
    secret = "tok-12345-secret"
    path = script(
        tmp_path,
        """
        import os
        token = os.environ["API_TOKEN"]
        print("printed", token)
        local["echo"][token] & succeeds("echo " + token)
        local["false"] & succeeds("fails with " + token)
        """,
    )
    d = drive("classic", script=path, secrets=["API_TOKEN"], env={"API_TOKEN": secret})
    assert d.code == 1
    text = json.dumps(d.records)
    assert secret not in text
    assert d.steps[0]["message"] == "echo ***"
    assert d.steps[0]["output"] == [["stdout", "***\n"]]
    assert "fails with ***" in d.end["message"]
    assert f"printed {secret}" in d.stdout, "the test itself sees the value"


def test_ld_library_path_reaches_commands_not_the_driver(drive: Any, tmp_path: Path) -> None:
    path = script(
        tmp_path,
        """
        show = 'echo "[$LD_LIBRARY_PATH] [${NIXTEST_LD_LIBRARY_PATH-none}]"'
        out = local["sh"]["-c", show] & succeeds("env")
        assert out == "[/the/profile/lib] [none]\\n", out
        """,
    )
    d = drive("classic", script=path, env={"NIXTEST_LD_LIBRARY_PATH": "/the/profile/lib"})
    assert d.code == 0, d.stderr


# --------------------------------------------------------------------------- in-process checkers


def test_checkers_in_process(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    result = tmp_path / "r.jsonl"
    driver = Driver({"package": "p", "test": "t", "kind": "classic"}, str(result), False)
    succeeds, fails = Checker(driver, True), Checker(driver, False)
    assert (local["echo"]["x"] & succeeds("echo x")) == "x\n"
    local["false"] & fails("false")
    with pytest.raises(StepFailed) as info:
        local["false"] & succeeds
    assert info.value.step.outcome == "failed"
    assert info.value.step.exit_code == 1
    assert [s.outcome for s in driver.recorder.steps] == ["passed", "passed", "failed"]
    driver.recorder.file.close()  # type: ignore[union-attr]
    assert len(result.read_text().splitlines()) == 3
    assert "x\n" in capfd.readouterr().out


def test_envvars_and_absjoin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert envvars("/p") == {
        "PATH": "/p/bin",
        "LD_LIBRARY_PATH": "/p/lib",
        "PKG_CONFIG_PATH": "/p/lib/pkgconfig",
        "NIX_LDFLAGS": "-L /p/lib",
        "NIX_CFLAGS_COMPILE": "-I /p/include",
    }
    assert absjoin("a", "b", "..", "c") == str(tmp_path / "a" / "c")
    assert absjoin("/x", "y") == "/x/y"


# --------------------------------------------------------------------------- run + expect


def test_run_expect_stdout_multiline(drive: Any) -> None:
    d = drive(
        "run",
        run="printf 'one\\ntwo\\nthree\\n'; echo warn >&2",
        expect={"exit": 0, "stdout": ["^two$"], "stderr": ["^warn"]},
    )
    assert d.code == 0, d.stderr
    assert d.steps[0]["outcome"] == "passed"


def test_run_expect_mismatches(drive: Any) -> None:
    d = drive("run", run="echo hello; exit 2", expect={"exit": 0, "stdout": ["^bye$"], "stderr": ["x"]})
    assert d.code == 1
    step = d.steps[0]
    assert step["outcome"] == "failed" and step["exit_code"] == 2
    assert "exited 2, expected 0" in step["detail"]
    assert "stdout does not match '^bye$'" in step["detail"]
    assert "stderr does not match 'x'" in step["detail"]
    assert d.end["message"].startswith("'echo hello; exit 2' exited 2, expected 0")


def test_run_expected_non_zero_exit(drive: Any) -> None:
    assert drive("run", run="exit 3", expect={"exit": 3, "stdout": [], "stderr": []}).code == 0
    assert drive("run", run="exit 0", expect={"exit": 3, "stdout": [], "stderr": []}).code == 1


# --------------------------------------------------------------------------- imports


def test_imports(drive: Any, tmp_path: Path) -> None:
    bin_dir = tmp_path / "pybin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to("/usr/bin/python3")
    d = drive("imports", imports=["zlib", "json"], env={"PATH": str(bin_dir)})
    assert d.code == 0, d.stderr
    assert [s["message"] for s in d.steps] == ["import zlib", "import json"]

    d = drive("imports", imports=["zlib", "no_such_module_nixtest", "json"], env={"PATH": str(bin_dir)})
    assert d.code == 1
    assert [s["outcome"] for s in d.steps] == ["passed", "failed", "passed"]
    assert "no_such_module_nixtest" in d.end["message"]
    assert "ModuleNotFoundError" in "".join(t for _, t in d.steps[1]["output"])


def test_imports_without_python_is_an_error(drive: Any, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    d = drive("imports", imports=["zlib"], env={"PATH": str(empty)})
    assert d.code == 3
    assert d.end["outcome"] == "error"
    assert "no python3 on the test's PATH" in d.end["message"]


# --------------------------------------------------------------------------- pytest modules


def test_pytest_module_steps_and_fixtures(drive: Any, tmp_path: Path) -> None:
    profile = tmp_path / "the-profile"
    (profile / "bin").mkdir(parents=True)
    (drive.work / "profile").symlink_to(profile)
    path = script(
        tmp_path,
        f"""
        from pathlib import Path

        def test_fixtures(package, local, workdir, profile):
            assert package == "pkg"
            assert Path.cwd() == workdir
            assert profile == Path({str(profile)!r})
            assert str(local.cwd) == str(workdir)
            assert (local["echo"]["hi"])() == "hi\\n"

        def test_fails():
            assert 1 + 1 == 3, "arithmetic is broken"

        def test_after():
            pass
        """,
        name="test_things.py",
    )
    d = drive("pytest", script=path, profile=str(profile))
    assert d.code == 1, d.stderr
    assert d.steps[0]["outcome"] == "passed", d.steps[0]["detail"]
    assert [(s["message"], s["outcome"]) for s in d.steps] == [
        ("test_fixtures", "passed"),
        ("test_fails", "failed"),
        ("test_after", "passed"),
    ]
    assert d.end["message"].startswith("failed at step 2 'test_fails'")
    assert "arithmetic is broken" in d.end["message"]


def test_pytest_module_all_pass_and_skip(drive: Any, tmp_path: Path) -> None:
    path = script(
        tmp_path,
        """
        import pytest

        def test_ok():
            pass

        @pytest.mark.parametrize("n", [1, 2])
        def test_param(n):
            assert n in (1, 2)
        """,
        name="test_ok.py",
    )
    d = drive("pytest", script=path)
    assert d.code == 0, d.stdout + d.stderr
    assert [s["message"] for s in d.steps] == ["test_ok", "test_param[1]", "test_param[2]"]

    path = script(
        tmp_path, "import pytest\ndef test_s():\n    pytest.skip('not here')\n", name="test_skip.py"
    )
    d = drive("pytest", script=path)
    assert d.code == 5
    assert d.end["outcome"] == "skipped" and "not here" in d.end["message"]


def test_pytest_module_without_tests_is_an_error(drive: Any, tmp_path: Path) -> None:
    # a module that runs nothing proves nothing: neither a pass nor the test's failure
    d = drive("pytest", script=script(tmp_path, "X = 1\n", name="test_empty.py"))
    assert d.code == 3
    assert d.end["outcome"] == "error"
    assert "ran nothing: pytest found no test function in test_empty.py" in d.end["message"]


def test_unknown_kind_is_an_error(drive: Any) -> None:
    d = drive("bogus")
    assert d.code == 3
    assert d.end["outcome"] == "error"
    assert "nixtest driver: AttributeError" in d.end["message"]
