"""cli: `nixtest run` turns its selection and options into a pytest run; usage errors exit 4."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from nixtest import cli
from nixtest.errors import UsageError


@pytest.fixture
def tests_dir(tmp_path: Path) -> Path:
    for package in ("hello", "coreutils"):
        (tmp_path / "pt" / package).mkdir(parents=True)
        (tmp_path / "pt" / package / "tests.yaml").write_text("tests: {a: {run: 'true'}, b: {run: 'true'}}\n")
    (tmp_path / "pt" / "no-definitions").mkdir()
    return tmp_path / "pt"


# --------------------------------------------------------------------------- selection


def test_selection_paths(tests_dir: Path) -> None:
    assert cli.selection_paths(tests_dir, ()) == [str(tests_dir)]
    assert cli.selection_paths(tests_dir, ("hello", "coreutils::a", "hello::b", "coreutils")) == [
        str(tests_dir / "hello"),
        str(tests_dir / "coreutils"),
    ]


@pytest.mark.parametrize(
    ("selection", "message"),
    [
        (("no-such-package",), "no tests for package 'no-such-package': "),
        (("no-definitions",), "no tests for package 'no-definitions': "),
        (("hello::",), "not a package or PKG::TEST: 'hello::'"),
        (("::a",), "not a package or PKG::TEST: '::a'"),
        (("a/b",), "not a package or PKG::TEST: 'a/b'"),
        (("hello::no-such-test",), "no test 'no-such-test' in "),
    ],
)
def test_selection_errors(tests_dir: Path, selection: tuple[str, ...], message: str) -> None:
    with pytest.raises(UsageError) as info:
        cli.selection_paths(tests_dir, selection)
    assert info.value.message.startswith(message)


def test_no_tests_folder(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as info:
        cli.selection_paths(tmp_path / "missing", ())
    assert "is not a folder" in info.value.message


def test_selected_tests() -> None:
    assert cli.selected_tests(("hello::a", "coreutils", "coreutils::b", "hello::b")) == [
        "hello::a",
        "hello::b",
    ]
    assert cli.selected_tests(("hello",)) == []


def test_pytest_args(tmp_path: Path) -> None:
    args = cli.pytest_args(
        ["pt/hello"],
        set_spec="host",
        out=tmp_path / "out",
        state=tmp_path / "state",
        jobs="2",
        keyword="greet and not slow",
        timeout=7.5,
        verbose=2,
        only=["hello::greet"],
        extra=("--lf",),
    )
    assert args[0] == "pt/hello"
    pairs = {args[i]: args[i + 1] for i in range(len(args) - 1)}
    assert pairs["--nixtest-set"] == "host"
    assert pairs["--nixtest-out"] == str(tmp_path / "out")
    assert pairs["--nixtest-state"] == str(tmp_path / "state")
    assert pairs["--nixtest-timeout"] == "7.5"
    assert pairs["--nixtest-only"] == "hello::greet"
    assert pairs["-k"] == "greet and not slow"
    assert pairs["--nixtest-jobs"] == "2"
    assert "-n" not in args, "-j is nixtest's own scheduler, not pytest-xdist"
    assert pairs["-c"] == os.devnull, "the project's own pytest configuration is not read"
    assert "-vv" in args
    assert args[-1] == "--lf"


@pytest.mark.parametrize("jobs", ["1", "0", "auto", "4"])
def test_jobs_go_to_the_in_process_scheduler(jobs: str, tmp_path: Path) -> None:
    args = cli.pytest_args([], set_spec="host", out=tmp_path, state=None, jobs=jobs)
    assert args[args.index("--nixtest-jobs") + 1] == jobs
    assert "-n" not in args and "--numprocesses" not in args


def test_jobs_default_to_one_per_cpu(tmp_path: Path) -> None:
    args = cli.pytest_args([], set_spec="host", out=tmp_path, state=None)
    assert args[args.index("--nixtest-jobs") + 1] == "auto"


def test_bad_jobs(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="-j takes a number or 'auto', got 'many'"):
        cli.pytest_args([], set_spec="host", out=tmp_path, state=None, jobs="many")


# --------------------------------------------------------------------------- the command


class FakePytest:
    def __init__(self, code: int) -> None:
        self.code = code
        self.calls: list[list[str]] = []

    def __call__(self, args: list[str]) -> int:
        self.calls.append(args)
        return self.code


@pytest.fixture
def fake_pytest(monkeypatch: pytest.MonkeyPatch) -> FakePytest:
    fake = FakePytest(1)
    monkeypatch.setattr(cli, "run_pytest", fake)
    return fake


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli.main, list(args), env=env, catch_exceptions=False)


@pytest.mark.parametrize("code", [0, 1, 5])
def test_run_exit_code_is_pytests(tests_dir: Path, monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    fake = FakePytest(code)
    monkeypatch.setattr(cli, "run_pytest", fake)
    outcome = invoke("run", "--tests", str(tests_dir), "hello")
    assert outcome.exit_code == code
    assert fake.calls[0][0] == str(tests_dir / "hello")


def test_run_pkg_test_selects_one_test(tests_dir: Path, fake_pytest: FakePytest) -> None:
    invoke("run", "--tests", str(tests_dir), "hello::b", "--lf", "-x")
    args = fake_pytest.calls[0]
    assert args[0] == str(tests_dir / "hello")
    assert not any("::" in a and a.startswith(str(tests_dir)) for a in args), "pytest takes no DIR::NAME"
    assert args[args.index("--nixtest-only") + 1] == "hello::b"
    assert args[-2:] == ["--lf", "-x"], "unknown options go to pytest"


def test_run_reads_nixtest_environment_variables(
    tests_dir: Path, fake_pytest: FakePytest, tmp_path: Path
) -> None:
    env = {
        "NIXTEST_TESTS": str(tests_dir),
        "NIXTEST_OUT": str(tmp_path / "env-out"),
        "NIXTEST_JOBS": "3",
        "NIXTEST_TIMEOUT": "12",
        "NIXTEST_K": "greet",
        "NIXTEST_SET": "host",
    }
    outcome = invoke("run", env=env)
    assert outcome.exit_code == 1, outcome.output
    args = fake_pytest.calls[0]
    assert args[0] == str(tests_dir)
    assert args[args.index("--nixtest-out") + 1] == str(tmp_path / "env-out")
    assert args[args.index("--nixtest-jobs") + 1] == "3"
    assert args[args.index("--nixtest-timeout") + 1] == "12.0"
    assert args[args.index("-k") + 1] == "greet"
    # an option given on the command line wins over the variable
    invoke("run", "--out", str(tmp_path / "cli-out"), env=env)
    args = fake_pytest.calls[1]
    assert args[args.index("--nixtest-out") + 1] == str(tmp_path / "cli-out")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no-such-package"], "nixtest: no tests for package 'no-such-package'"),
        (["-j", "lots"], "nixtest: -j takes a number or 'auto', got 'lots'"),
        (["hello::"], "nixtest: not a package or PKG::TEST: 'hello::'"),
        (["hello::no-such-test"], "nixtest: no test 'no-such-test' in "),
    ],
)
def test_run_usage_errors_exit_4(
    tests_dir: Path, fake_pytest: FakePytest, args: list[str], message: str
) -> None:
    outcome = invoke("run", "--tests", str(tests_dir), *args)
    assert outcome.exit_code == 4
    assert message in outcome.output
    assert fake_pytest.calls == [], "nothing ran"


def test_run_without_a_tests_folder_exits_4(tmp_path: Path, fake_pytest: FakePytest) -> None:
    outcome = invoke("run", "--tests", str(tmp_path / "nowhere"))
    assert outcome.exit_code == 4
    assert "is not a folder" in outcome.output
