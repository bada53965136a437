"""runner: prepare (profiles, wrapper) and execute (run, read the steps, decide the outcome)."""

from __future__ import annotations

import os
import stat
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nixtest.definitions import Definition, display_path, load_package
from nixtest.results import Step
from nixtest.results import TestResult as Result
from nixtest.runner import Context, Prepared, _decide, _read_records, execute, format_failure, prepare
from nixtest.safefs import CLAIM_MARK


def result(code: int | None, steps: list[Step] | None = None, **fields: object) -> Result:
    r = Result(package="pkg", test="t", exit_code=code, steps=steps or [])
    for key, value in fields.items():
        setattr(r, key, value)
    return r


# --------------------------------------------------------------------------- the outcome


def test_exit_0_passes() -> None:
    r = result(0)
    _decide(r, {}, 600)
    assert (r.outcome, r.message) == ("passed", "")


def test_exit_1_fails_with_the_drivers_message() -> None:
    r = result(1, [Step("a"), Step("b", outcome="failed", detail="b exited 2")])
    _decide(r, {"type": "end", "message": "failed at step 2 'b': b exited 2"}, 600)
    assert (r.outcome, r.message) == ("failed", "failed at step 2 'b': b exited 2")


def test_exit_1_without_a_word_names_the_failed_step() -> None:
    r = result(1, [Step("a"), Step("b", outcome="failed", detail="b exited 2")])
    _decide(r, {}, 600)
    assert (r.outcome, r.message) == ("failed", "failed at step 2: b exited 2")
    r = result(1)
    _decide(r, {}, 600)
    assert (r.outcome, r.message) == ("failed", "failed")


def test_exit_5_is_skipped() -> None:
    r = result(5)
    _decide(r, {"message": "no network"}, 600)
    assert (r.outcome, r.message) == ("skipped", "no network")


@pytest.mark.parametrize("code", [3, 4])
def test_exit_3_and_4_are_errors(code: int) -> None:
    r = result(code)
    _decide(r, {"message": "nixtest driver: KeyError: 'x'"}, 600)
    assert (r.outcome, r.message) == ("error", "nixtest driver: KeyError: 'x'")
    r = result(code, output=[("stderr", "first\nnixtest: could not prepare: skel\n\n")])
    _decide(r, {}, 600)
    assert (r.outcome, r.message) == ("error", "nixtest: could not prepare: skel")
    r = result(code)
    _decide(r, {}, 600)
    assert r.message == f"the wrapper exited {code}"


@pytest.mark.parametrize("code", [2, 127, 143, -9])
def test_other_exit_codes_fail(code: int) -> None:
    r = result(code)
    _decide(r, {"message": "interrupted"}, 600)
    assert r.outcome == "failed"
    assert r.message == f"the wrapper exited {code}: interrupted"


def test_timeout_fails_whatever_the_exit_code() -> None:
    r = result(-15, [Step("one")], timed_out=True)
    _decide(r, {"message": "ignored"}, 2.5)
    assert r.outcome == "failed"
    assert r.message == "timed out after 2.5 seconds (during step 2); its processes were killed"


def test_read_records_skips_a_line_cut_short(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"type": "step", "message": "a"}\n{"type": "end", "outc')
    assert _read_records(path) == [{"type": "step", "message": "a"}]
    assert _read_records(tmp_path / "missing") == []


# --------------------------------------------------------------------------- the failure report


@pytest.mark.parametrize(
    ("kind", "flag"),
    [
        ("classic", "--ipdb"),
        ("pytest", "--ipdb"),
        ("run", "--shell"),
        ("imports", "--shell"),
        ("autopkgtest", "--shell"),
        ("", "--shell"),
    ],
)
def test_the_debug_line_offers_what_the_wrapper_takes(kind: str, flag: str) -> None:
    r = Result(package="p", test="t", outcome="failed", kind=kind, wrapper="/out/rerun/p/t")
    assert r.rerun_lines == ["to reproduce: /out/rerun/p/t", f"    to debug: /out/rerun/p/t {flag}"]


def test_format_failure() -> None:
    output = [("stdout", "".join(f"line {i}\n" for i in range(50)))]
    r = Result(
        package="hello",
        test="greet",
        outcome="failed",
        message="failed at step 2 'greets': exited 1, expected 0",
        steps=[
            Step("builds"),
            Step("greets", command="hello --bad", exit_code=1, outcome="failed", expected="0", output=output),
        ],
        log_path="/out/logs/hello/greet.log",
        wrapper="/out/rerun/hello/greet",
        warnings=["profile hello: collision: bin/x"],
    )
    text = format_failure(r)
    lines = text.splitlines()
    assert lines[0] == "hello::greet failed: failed at step 2 'greets': exited 1, expected 0"
    assert "  step 2 of 2: greets" in lines
    assert "  command: hello --bad" in lines
    assert "  exit code: 1 (expected 0)" in lines
    assert "  warning: profile hello: collision: bin/x" in lines
    assert "  output, last 30 of 50 lines:" in lines
    assert "    line 49" in lines and "    line 19" not in lines
    assert f"  full log: {display_path(Path('/out/logs/hello/greet.log'))}" in lines
    assert lines[-2:] == [
        "to reproduce: /out/rerun/hello/greet",
        "    to debug: /out/rerun/hello/greet --shell",
    ]


def test_format_failure_without_steps_shows_the_output() -> None:
    r = Result(package="p", test="t", outcome="error", message="boom", output=[("stderr", "why\n")])
    assert format_failure(r) == "p::t error: boom\n  output:\n    why"


# --------------------------------------------------------------------------- prepare and execute, for real


@pytest.fixture
def ctx(tmp_path: Path, nixtest_state: Path) -> Iterator[Context]:
    context = Context(out=tmp_path / "out", state=nixtest_state)
    yield context
    context.close()


def definitions(
    tmp_path: Path, text: str, package: str = "hello", files: dict[str, str] | None = None
) -> dict[str, Definition]:
    folder = tmp_path / "pt" / package
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tests.yaml").write_text(textwrap.dedent(text))
    for name, content in (files or {}).items():
        (folder / name).write_text(textwrap.dedent(content))
    return {d.name: d for d in load_package(folder)}


def prepared(defn: Definition, ctx: Context) -> Prepared:
    p = prepare(defn, ctx)
    assert isinstance(p, Prepared), p
    return p


def test_prepare_a_bad_definition_is_an_error_result(ctx: Context, tmp_path: Path) -> None:
    defs = definitions(tmp_path, "tests: {broken: {run: hello, bogus: 1}}")
    r = prepare(defs["broken"], ctx)
    assert isinstance(r, Result)
    assert r.outcome == "error"
    assert "test 'broken': key 'bogus': unknown key" in r.message
    assert r.nodeid == "hello::broken"


@pytest.mark.dpkg
def test_prepare_unknown_packages(ctx: Context, tmp_path: Path) -> None:
    defs = definitions(tmp_path, "tests: {a: {run: 'true'}}", package="no-such-package-nixtest")
    r = prepare(defs["a"], ctx)
    assert isinstance(r, Result) and r.outcome == "error"
    assert "test 'a'" in r.message
    assert "package 'no-such-package-nixtest' is not in the package set 'host'" in r.message

    defs = definitions(
        tmp_path,
        """
        tests:
          prof: {run: hello, profile: [hello, no-such-package-nixtest]}
          link: {run: hello, symlinks: {tools: [no-such-package-nixtest]}}
        """,
    )
    for name, key in (("prof", "profile"), ("link", "symlinks.tools")):
        r = prepare(defs[name], ctx)
        assert isinstance(r, Result) and r.outcome == "error"
        assert f"test '{name}': key '{key}': package 'no-such-package-nixtest' is not in" in r.message
    assert not (ctx.out / "rerun" / "hello" / "prof").exists()


@pytest.mark.dpkg
def test_prepare_writes_the_wrapper_and_profiles(ctx: Context, tmp_path: Path) -> None:
    defs = definitions(tmp_path, "tests: {greet: {run: hello, symlinks: {core: [coreutils]}}}")
    p = prepared(defs["greet"], ctx)
    assert p.wrapper == ctx.out / "rerun" / "hello" / "greet"
    assert stat.S_IMODE(p.wrapper.stat().st_mode) == 0o755
    assert p.plan.profile.parent == ctx.state / "profiles"
    assert (p.plan.profile / "bin" / "hello").exists()
    assert not (p.plan.profile / "bin" / "ls").exists(), "the profile holds only its packages"
    assert (p.plan.links["core"] / "bin" / "ls").exists()
    assert ctx.profile(("hello",)) is ctx.profile(("hello", "hello"))


@pytest.mark.dpkg
def test_execute_passing_and_failing(ctx: Context, tmp_path: Path) -> None:
    defs = definitions(
        tmp_path,
        """
        tests:
          greet: {run: hello, expect: {stdout: '^Hello, world!$'}}
          plain: {run: "hello; exit 3", expect: {exit: 3}}
          bad: {run: "hello; echo oops >&2; exit 2"}
        """,
    )
    r = execute(prepared(defs["greet"], ctx), ctx)
    assert (r.outcome, r.exit_code, r.message) == ("passed", 0, "")
    assert r.log_path == str(ctx.out / "logs" / "hello" / "greet.log")
    assert "Hello, world!" in Path(r.log_path).read_text()
    assert r.wrapper == str(ctx.out / "rerun" / "hello" / "greet")
    assert [s.outcome for s in r.steps] == ["passed"]

    r = execute(prepared(defs["plain"], ctx), ctx)
    assert r.outcome == "passed"
    assert [(s.exit_code, s.expected) for s in r.steps] == [(3, "3")]

    r = execute(prepared(defs["bad"], ctx), ctx)
    assert r.outcome == "failed"
    assert r.exit_code == 1
    assert r.message == "failed at step 1: exited 2, expected 0"
    step = r.failed_step
    assert step is not None and step.exit_code == 2
    assert "oops" in "".join(t for _, t in step.output)


@pytest.mark.dpkg
def test_execute_timeout_from_the_context_or_the_test(ctx: Context, tmp_path: Path) -> None:
    defs = definitions(
        tmp_path,
        """
        tests:
          default: {run: "sleep 30", profile: [coreutils]}
          own: {run: "sleep 1.5; echo done", profile: [coreutils], timeout: 20}
          own-short: {run: "sleep 30", profile: [coreutils], timeout: 1}
        """,
    )
    ctx.timeout = 1
    start = time.monotonic()
    r = execute(prepared(defs["default"], ctx), ctx)
    assert r.outcome == "failed" and r.timed_out
    assert r.message.startswith("timed out after 1 seconds")
    assert time.monotonic() - start < 10

    ctx.timeout = 0.5  # a test with its own timeout keeps it
    r = execute(prepared(defs["own"], ctx), ctx)
    assert r.outcome == "passed", r.message

    ctx.timeout = 60
    r = execute(prepared(defs["own-short"], ctx), ctx)
    assert r.timed_out and "timed out after 1 seconds" in r.message


@pytest.mark.dpkg
def test_execute_masks_secrets_and_cleans_up(
    ctx: Context, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("API_TOKEN", "very-secret-value-42")
    defs = definitions(tmp_path, 'tests: {s: {run: "echo token=$API_TOKEN; exit 1", secrets: [API_TOKEN]}}')
    r = execute(prepared(defs["s"], ctx), ctx)
    assert r.outcome == "failed"
    assert "very-secret-value-42" not in r.to_json()
    assert "token=***" in "".join(t for s in r.steps for _, t in s.output)
    assert "very-secret-value-42" not in Path(r.log_path).read_text()
    scratch = ctx.scratch
    assert stat.S_IMODE(scratch.stat().st_mode) == 0o700, "the working directories are private"
    # only the mark of the run's claim on it (see safefs.claim) is left
    assert os.listdir(scratch) == [CLAIM_MARK], "each test's scratch folder is removed"
    ctx.close()
    assert not scratch.exists()


@pytest.mark.dpkg
def test_execute_skip_and_error(ctx: Context, tmp_path: Path) -> None:
    (tmp_path / "pt" / "hello" / "skel").mkdir(parents=True)
    defs = definitions(
        tmp_path,
        """
        tests:
          skipped: {script: test_skip.py}
          broken: {run: "exit 0", skel: skel}
        """,
        files={"test_skip.py": "import pytest\ndef test_it():\n    pytest.skip('not today')\n"},
    )
    r = execute(prepared(defs["skipped"], ctx), ctx)
    assert (r.outcome, r.exit_code) == ("skipped", 5)
    assert "not today" in r.message

    broken = prepared(defs["broken"], ctx)
    (tmp_path / "pt" / "hello" / "skel").rmdir()  # gone between preparing and running
    r = execute(broken, ctx)
    assert (r.outcome, r.exit_code) == ("error", 3)
    assert r.message == "nixtest: hello::broken: could not prepare the working directory: skel"


@pytest.mark.dpkg
def test_a_test_that_removes_its_own_workdir_is_still_a_result(ctx: Context, tmp_path: Path) -> None:
    defs = definitions(tmp_path, 'tests: {gone: {run: "cd / && rm -rf \\"$HOME\\"", profile: [coreutils]}}')
    r = execute(prepared(defs["gone"], ctx), ctx)
    assert r.outcome == "passed", r.message
    assert os.listdir(ctx.scratch) == [CLAIM_MARK]
