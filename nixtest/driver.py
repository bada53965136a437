"""The test driver: runs one test inside its wrapper, in the test's environment.

A wrapper calls `python -I -m nixtest.driver --spec JSON`; nothing here needs
a nixtest session.  Each checked action is a step, appended as one JSON line to
the `--result` file (so a test killed half-way still tells what it did), and
the exit code says the outcome: 0 passed, 1 failed, 3 error, 5 skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Callable, TextIO

from nixtest.capture import Masker, Tail, mask_text, pump
from nixtest.child.expect import MATCH_LIMIT, Spool, failure_message, problems
from nixtest.results import Step

EXIT_PASSED, EXIT_FAILED, EXIT_ERROR, EXIT_USAGE, EXIT_SKIPPED = 0, 1, 3, 4, 5
#: output kept per step in the result file (the full output goes to the log)
STEP_TAIL = 64 * 1024


class StepFailed(Exception):
    """A `succeeds`/`fails` step whose command did not do what was expected."""

    def __init__(self, step: Step) -> None:
        super().__init__(step.detail or step.message)
        self.step = step


class TestTimeout(Exception):
    """The test ran longer than its timeout (raised by `Timer` where the test is)."""

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(self, seconds: float) -> None:
        super().__init__(f"timed out after {seconds:g} seconds")
        self.seconds = seconds


class Timer:
    """The test's timeout in a wrapper run by hand (nixtest's own runs are timed by nixtest).

    SIGALRM raises `TestTimeout` in the test's code, so a debugger opens where
    the test was; the timer is suspended while a debugger is open.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.remaining = 0.0

    def start(self) -> None:
        if self.seconds > 0:
            signal.signal(signal.SIGALRM, self._fire)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def suspend(self) -> None:
        if self.seconds > 0:
            self.remaining = signal.setitimer(signal.ITIMER_REAL, 0)[0]

    def resume(self) -> None:
        if self.seconds > 0 and self.remaining > 0:
            signal.setitimer(signal.ITIMER_REAL, self.remaining)
            self.remaining = 0.0

    def cancel(self) -> None:
        if self.seconds > 0:
            signal.setitimer(signal.ITIMER_REAL, 0)
            self.remaining = 0.0

    def _fire(self, signum: int, frame: Any) -> None:
        raise TestTimeout(self.seconds)


class Recorder:
    """Writes the steps and the end of a test to the result file, as JSON lines."""

    def __init__(self, path: str | None, secrets: list[str]) -> None:
        self.file: IO[str] | None = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115
        self.secrets = secrets
        self.steps: list[Step] = []

    def step(self, step: Step) -> Step:
        step.message = mask_text(step.message, self.secrets)
        step.command = mask_text(step.command, self.secrets)
        step.detail = mask_text(step.detail, self.secrets)
        step.output = [(s, mask_text(t, self.secrets)) for s, t in step.output]
        self.steps.append(step)
        self._write({"type": "step", **asdict(step)})
        return step

    def output(self, tail: Tail) -> None:
        """What the test printed outside its steps (prints, log lines, tracebacks)."""
        self._write({"type": "output", "chunks": tail.text_chunks(), "dropped": tail.dropped})

    def end(self, outcome: str, message: str) -> None:
        self._write({"type": "end", "outcome": outcome, "message": mask_text(message, self.secrets)})

    def _write(self, record: dict[str, Any]) -> None:
        if self.file is not None:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()


def run_process(
    argv: list[str] | None,
    popen: Callable[[], subprocess.Popen[bytes]] | None = None,
    keep: int = STEP_TAIL,
    secrets: list[str] | None = None,
    match_limit: int = 0,
) -> tuple[int, Tail, dict[str, Tail | Spool]]:
    """Runs a command, teeing its output to ours; returns (exit code, tail, per-stream text)."""
    if popen is None:
        assert argv is not None
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    else:
        proc = popen()
        if proc.stdin is not None:
            proc.stdin.close()
    tail = Tail(keep)
    # `expect` patterns search all of the output (masked, in a Spool); a classic
    # script's step returns the end of its stdout as printed (a Tail)
    searchable = match_limit >= MATCH_LIMIT
    per_stream: dict[str, Tail | Spool] = {
        s: Spool(match_limit) if searchable else Tail(match_limit) for s in ("stdout", "stderr")
    }
    # straight to the real streams: a step's output is the step's, not the script's
    real_out, real_err = sys.__stdout__, sys.__stderr__
    assert real_out is not None and real_err is not None
    sinks = {"stdout": real_out.buffer, "stderr": real_err.buffer}
    maskers = {s: Masker(secrets or []) for s in sinks}

    def on_data(stream: str, data: bytes) -> None:
        sinks[stream].write(data)
        sinks[stream].flush()
        masked = maskers[stream].feed(data)
        tail.add(stream, masked)
        if match_limit:
            per_stream[stream].add(stream, masked if searchable else data)

    # A redirected command (`(cmd > "file") & succeeds`) has no pipe for that stream.
    pipes = {"stdout": proc.stdout, "stderr": proc.stderr}
    try:
        pump({pipe.fileno(): stream for stream, pipe in pipes.items() if pipe is not None}, on_data)
    except BaseException:
        # a timeout or Ctrl-C: the step's command does not outlive it
        proc.kill()
        proc.wait()
        raise
    for stream, masker in maskers.items():
        rest = masker.flush()
        tail.add(stream, rest)
        if searchable:
            per_stream[stream].add(stream, rest)
    code = proc.wait()
    return code, tail, per_stream


def _step_from(
    message: str, command: str, code: int, tail: Tail, start: float, ok: bool, expected: str
) -> Step:
    return Step(
        message=message,
        command=command,
        exit_code=code,
        outcome="passed" if ok else "failed",
        expected=expected,
        output=tail.text_chunks(),
        output_dropped=tail.dropped,
        start=start,
        end=time.time(),
        detail="" if ok else f"{command!s} exited {code}, expected {expected}",
    )


# --------------------------------------------------------------------------- classic scripts


class Expectation:
    """`cmd & succeeds("msg")`: runs `cmd` as a step that must exit 0 (or non-zero)."""

    def __init__(self, driver: Driver, message: str, success: bool) -> None:
        self.driver = driver
        self.message = message
        self.success = success

    def __rand__(self, cmd: Any) -> str:
        start = time.time()
        expected = "0" if self.success else "non-zero"
        code, tail, per_stream = run_process(
            None, popen=cmd.popen, secrets=self.driver.secrets, match_limit=STEP_TAIL
        )
        ok = (code == 0) == self.success
        step = self.driver.recorder.step(_step_from(self.message, str(cmd), code, tail, start, ok, expected))
        if not ok:
            raise StepFailed(step)
        return per_stream["stdout"].text()


class Checker:
    """`succeeds` and `fails`: callable with a message, or used bare as `cmd & succeeds`."""

    def __init__(self, driver: Driver, success: bool) -> None:
        self.driver = driver
        self.success = success

    def __call__(self, msg: str = "") -> Expectation:
        return Expectation(self.driver, msg, self.success)

    def __rand__(self, cmd: Any) -> str:
        return Expectation(self.driver, "", self.success).__rand__(cmd)


def envvars(profile: str | os.PathLike[str]) -> dict[str, str]:
    """The variables a profile gives a test (see DESIGN.md, Profiles)."""
    from nixtest.profiles import profile_env

    return profile_env(Path(profile))


def absjoin(*parts: str) -> str:
    return os.path.abspath(os.path.join(*parts))


# --------------------------------------------------------------------------- the driver


def pytest_args(script: Path, ipdb: bool = False) -> list[str]:
    """`pytest.main`'s arguments for a module (the zygote's warm start-up is made with the same)."""
    args = [
        str(script),
        # no configuration of the project's: the working directory holds only the test's files
        "-c",
        os.devnull,
        "--rootdir",
        str(script.parent),
        "--confcutdir",
        str(script.parent),
        "--import-mode=importlib",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:nixtest",
        "-p",
        "no:xdist",
        "-rfEs",
    ]
    if ipdb:
        # no capture; stop at the first failure, where the plugin opens ipdb
        args += ["-s", "-x"]
    return args


class Driver:
    def __init__(self, spec: dict[str, Any], result: str | None, ipdb: bool, timeout: float = 0) -> None:
        self.spec = spec
        self.ipdb = ipdb
        self.timer = Timer(timeout)
        self.secrets = [os.environ[s] for s in spec.get("secrets", []) if os.environ.get(s)]
        self.recorder = Recorder(result, self.secrets)
        self.name = f"{spec['package']}::{spec['test']}"

    def run(self) -> int:
        kind = self.spec["kind"]
        outside = Tail(STEP_TAIL)
        if self.recorder.file is not None and not self.ipdb:
            sys.stdout = _Tee("stdout", sys.stdout, outside, self.secrets)
            sys.stderr = _Tee("stderr", sys.stderr, outside, self.secrets)
        try:
            self.timer.start()
            outcome, message = getattr(self, f"run_{kind}")()
        except KeyboardInterrupt:
            outcome, message = "failed", "interrupted"
        except TestTimeout as exc:
            outcome, message = "failed", str(exc)
        except Exception as exc:  # the one place where a driver error becomes an outcome
            outcome, message = "error", f"nixtest driver: {type(exc).__name__}: {exc}"
            traceback.print_exc()
        finally:
            self.timer.cancel()
        if outcome != "passed":
            print(f"nixtest: {self.name} {outcome}: {mask_text(message, self.secrets)}", file=sys.stderr)
        for stream in (sys.stdout, sys.stderr):
            if isinstance(stream, _Tee):
                stream.finish()
        self.recorder.output(outside)
        self.recorder.end(outcome, message)
        return {"passed": EXIT_PASSED, "failed": EXIT_FAILED, "skipped": EXIT_SKIPPED}.get(
            outcome, EXIT_ERROR
        )

    # classic nixtest scripts ------------------------------------------------

    def run_classic(self) -> tuple[str, str]:
        import logging

        from plumbum import local

        script = Path(self.spec["script"])
        log = logging.getLogger(f"nixtest.{self.spec['package']}.{self.spec['test']}")
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.DEBUG)
        log.propagate = False
        namespace: dict[str, Any] = {
            "__name__": "__main__",
            "__file__": str(script),
            "__builtins__": __builtins__,
            "local": local,
            "log": log,
            "succeeds": Checker(self, True),
            "fails": Checker(self, False),
            "envvars": envvars,
            "absjoin": absjoin,
        }
        code = compile(script.read_bytes(), str(script), "exec")
        sys.path.insert(0, str(script.parent))
        sys.argv = [str(script)]
        try:
            exec(code, namespace)
        except StepFailed as exc:
            self._post_mortem(exc, str(script))
            step = exc.step
            index = self.recorder.steps.index(step) + 1
            where = f" at step {index} {step.message!r}" if step.message else f" at step {index}"
            return "failed", f"failed{where}: {step.detail}"
        except SystemExit as exc:
            if exc.code in (None, 0):
                return "passed", ""
            return "failed", f"the script exited with {exc.code!r}"
        except TestTimeout as exc:
            self._post_mortem(exc, str(script))
            line = _script_line(exc.__traceback__, str(script))
            return "failed", f"{exc}" + (f" (at line {line} of {script.name})" if line else "")
        except Exception as exc:
            _print_from_script(exc, str(script))
            self._post_mortem(exc, str(script))
            line = _script_line(exc.__traceback__, str(script))
            at = f" (line {line})" if line else ""
            return "failed", f"{type(exc).__name__}{at}: {exc}"
        return "passed", ""

    def _post_mortem(self, exc: BaseException, script: str, resume: bool = False) -> None:
        """With --ipdb: the debugger, at the innermost frame of the test's own file.

        The timeout is suspended while it is open; quitting it goes on with the
        test's end (a failure).
        """
        if not self.ipdb:
            return
        self.timer.suspend()
        tb = _cut_at_script(exc.__traceback__, script)
        if isinstance(exc, StepFailed) and exc.step in self.recorder.steps:
            index = self.recorder.steps.index(exc.step) + 1
            what = f"step {index} {exc.step.message!r} failed: {exc}"
        else:
            what = f"{type(exc).__name__}: {exc}"
        print(f"nixtest: {self.name}: {what}", file=sys.stderr)
        print("nixtest: post-mortem debugger; 'q' ends the run (the test failed)", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            import ipdb
        except ImportError:
            print("nixtest: ipdb is not installed for this interpreter: using pdb", file=sys.stderr)
            import pdb as ipdb
        ipdb.post_mortem(tb)
        if resume:
            self.timer.resume()

    # pytest-style modules -----------------------------------------------------

    def run_pytest(self) -> tuple[str, str]:
        import pytest

        script = Path(self.spec["script"])
        workdir = Path.cwd()
        sys.dont_write_bytecode = True
        plugin = make_module_plugin(self, workdir)
        args = pytest_args(script, self.ipdb)
        with _warm_start():
            code = pytest.main(args, plugins=[plugin])
        steps = self.recorder.steps
        bad = [s for s in steps if s.outcome in ("failed", "error")]
        if bad:
            return "failed", f"failed at step {steps.index(bad[0]) + 1} {bad[0].message!r}: {bad[0].detail}"
        if not steps and int(code) in (0, 5):
            # nothing ran: not a pass, and not the test's failure either
            return "error", f"ran nothing: pytest found no test function in {script.name}"
        if not steps:
            return "failed", f"pytest found no test in {script.name} (exit code {int(code)})"
        if int(code) not in (0, 5):
            return "failed", f"pytest exited {int(code)}"
        if all(s.outcome == "skipped" for s in steps):
            return "skipped", steps[0].detail or "every test function was skipped"
        return "passed", ""

    # imports ------------------------------------------------------------------

    def run_imports(self) -> tuple[str, str]:
        python = _which("python3") or _which("python")
        if python is None:
            return "error", "no python3 on the test's PATH: add a Python package to its profile"
        failed: Step | None = None
        for module in self.spec["imports"]:
            start = time.time()
            argv = [python, "-c", f"import {module}"]
            code, tail, _ = run_process(argv, secrets=self.secrets)
            step = self.recorder.step(
                _step_from(f"import {module}", shlex.join(argv), code, tail, start, code == 0, "0")
            )
            if code != 0 and failed is None:
                failed = step
        if failed is not None:
            index = self.recorder.steps.index(failed) + 1
            return "failed", f"failed at step {index} {failed.message!r}: {failed.detail}"
        return "passed", ""

    # run + expect ---------------------------------------------------------------

    def run_run(self) -> tuple[str, str]:
        command = self.spec["run"]
        expect = self.spec.get("expect", {})
        start = time.time()
        code, tail, streams = run_process(
            ["/bin/sh", "-c", command], secrets=self.secrets, match_limit=MATCH_LIMIT
        )
        found = problems(code, {s: spool for s, spool in streams.items() if isinstance(spool, Spool)}, expect)
        for spool in streams.values():
            if isinstance(spool, Spool):
                spool.close()
        step = _step_from(command, command, code, tail, start, not found, str(expect.get("exit", 0)))
        step.detail = "; ".join(found)
        self.recorder.step(step)
        if found:
            return "failed", failure_message(command, found)
        return "passed", ""


class _Tee(io.TextIOBase):
    """A text stream that also keeps what is written to it, secrets masked."""

    def __init__(self, name: str, real: TextIO, tail: Tail, secrets: list[str]) -> None:
        self.name = name
        self.real = real
        self.tail = tail
        self.masker = Masker(secrets)

    def write(self, text: str) -> int:
        self.real.write(text)
        self.tail.add(self.name, self.masker.feed(text.encode("utf-8", "replace")))
        return len(text)

    def flush(self) -> None:
        # The masker keeps what may be the start of a secret until `finish`.
        self.real.flush()

    def finish(self) -> None:
        self.real.flush()
        self.tail.add(self.name, self.masker.flush())

    def fileno(self) -> int:
        return self.real.fileno()

    def isatty(self) -> bool:
        return self.real.isatty()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self.real.encoding

    @property
    def buffer(self) -> Any:
        return self.real.buffer


# --------------------------------------------------------------------------- warm start-up (the zygote)

#: what `warm_up` made in the zygote; a forked child's pytest module uses it once
_WARM: dict[str, Any] = {}
#: `prog` of the configuration that `pytest.main` makes (its usage and error messages say it)
PYTEST_PROG = "pytest.main()"


def warm_up() -> None:
    """In the zygote: what every pytest module's run does first, done once for all.

    `pytest.main` begins with a configuration object holding its default
    plugins (built before it reads the arguments, the ini file or the
    environment, so the same for every test), then imports the plugins
    installed for this interpreter.  The zygote builds the one and imports the
    other; each child it forks gets a copy of both and uses it at most once.
    A wrapper run by hand has none of it and builds everything, with the same
    outcome.  Should any of it fail, the children start pytest from nothing too.
    The driver's argument parser is made (and its patterns compiled) here too.
    """
    _parser().parse_args(["--spec", "{}", "--result", os.devnull, "--timeout", "0"])
    try:
        _warm_pytest()
    except Exception:
        _WARM.clear()


def _warm_pytest() -> None:
    import importlib.metadata

    import _pytest.assertion
    import _pytest.config

    # The plugins' modules, imported as pytest.main imports them: through its
    # assertion rewriter, marked as it marks them (else it would warn that they
    # were imported before it could rewrite them), writing no bytecode.
    scratch = _pytest.config.get_config(pytest_args(Path("/warm-up/test_module.py")), prog=PYTEST_PROG)
    manager = scratch.pluginmanager
    bytecode = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    try:
        hook = _pytest.assertion.install_importhook(scratch)
        # A plugin's package imported already (nixtest's own, installed as a
        # wheel) is warned about in each module's run, not in this one.
        hook._warn_already_imported = lambda name: None  # type: ignore[method-assign]
        scratch._mark_plugins_for_rewrite(hook, False)
        for dist in importlib.metadata.distributions():
            for entry in dist.entry_points:
                if entry.group == "pytest11" and not manager.is_blocked(entry.name):
                    entry.load()
    finally:
        scratch._ensure_unconfigure()  # takes the rewriter out of sys.meta_path
        sys.dont_write_bytecode = bytecode
    config = _pytest.config.get_config(pytest_args(Path("/warm-up/test_module.py")), prog=PYTEST_PROG)
    _WARM["pytest"] = config


@contextlib.contextmanager
def _warm_start() -> Iterator[None]:
    """`pytest.main` starts from the zygote's configuration (`warm_up`), when there is one.

    Only its first configuration: a `pytest.main` the test itself runs starts
    from nothing.  PYTEST_DEBUG traces the plugin manager from its creation:
    a test that sets it gets a new one.
    """
    config = _WARM.pop("pytest", None)
    if config is None or os.environ.get("PYTEST_DEBUG"):
        yield
        return
    import _pytest.config

    real = _pytest.config.get_config
    template = config.invocation_params.args

    def get_config(args: Any = None, plugins: Any = None, *, prog: str | None = None) -> Any:
        _pytest.config.get_config = real
        if prog != PYTEST_PROG or _plugin_options(args or ()) != _plugin_options(template):
            return real(args, plugins, prog=prog)
        config.invocation_params = _pytest.config.Config.InvocationParams(
            args=args or (), plugins=plugins, dir=Path.cwd()
        )
        return config

    _pytest.config.get_config = get_config
    try:
        yield
    finally:
        _pytest.config.get_config = real


def _plugin_options(args: Iterable[str]) -> list[str]:
    """The `-p` options among pytest's arguments: the ones its first configuration reads."""
    args = list(args)
    return [args[i + 1] for i, arg in enumerate(args[:-1]) if arg == "-p"] + [
        arg for arg in args if arg.startswith("-p") and arg != "-p"
    ]


def make_module_plugin(driver: Driver, workdir: Path) -> object:
    """Fixtures for pytest-style package tests, and a step per test function.

    Made on demand so that other kinds of test never import pytest.
    """
    import pytest

    class ModulePlugin:
        @pytest.fixture
        def package(self) -> str:
            """The name of the package under test."""
            return str(driver.spec["package"])

        @pytest.fixture
        def local(self) -> Any:
            """plumbum's `local`, bound to the test's environment and working directory."""
            from plumbum import local

            with local.cwd(workdir):
                yield local

        @pytest.fixture
        def workdir(self) -> Path:
            """The test's fresh working directory."""
            return workdir

        @pytest.fixture
        def profile(self) -> Path:
            """The test's profile directory."""
            return Path(driver.spec.get("profile") or workdir / "profile")

        def pytest_runtest_logreport(self, report: Any) -> None:
            if report.when == "call" or report.outcome != "passed":
                driver.recorder.step(_step_from_report(report))

        def pytest_exception_interact(self, node: Any, call: Any, report: Any) -> None:
            """With --ipdb: post-mortem at the failing test function (pytest's own --pdb is not used)."""
            if driver.ipdb and call.excinfo is not None:
                print(file=sys.stderr)  # off the line of pytest's progress letters
                driver._post_mortem(call.excinfo.value, str(driver.spec["script"]), resume=True)

    return ModulePlugin()


def _step_from_report(report: Any) -> Step:
    name = report.nodeid.split("::", 1)[-1]
    if report.when != "call":
        name += f" ({report.when})"
    outcome = report.outcome
    if report.when != "call" and outcome == "failed":
        outcome = "error"
    detail = ""
    if outcome == "skipped" and isinstance(report.longrepr, tuple):
        detail = str(report.longrepr[2])
    elif outcome != "passed":
        text = str(getattr(report.longrepr, "reprcrash", None) or report.longreprtext).strip()
        detail = text.splitlines()[-1] if text else outcome
    output = [(s, t) for s, t in (("stdout", report.capstdout), ("stderr", report.capstderr)) if t]
    if report.longreprtext and outcome in ("failed", "error"):
        output.append(("stderr", report.longreprtext[-STEP_TAIL:]))
    return Step(
        message=name,
        command=f"pytest {report.nodeid}",
        outcome=outcome,
        output=output,
        start=report.start,
        end=report.stop,
        detail=detail,
    )


def _which(name: str) -> str | None:
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        candidate = os.path.join(folder, name)
        if folder and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def _script_line(tb: TracebackType | None, script: str) -> int | None:
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == script:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _print_from_script(exc: BaseException, script: str) -> None:
    """The traceback from the script's first frame on: nixtest's own frames say nothing."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != script:
        tb = tb.tb_next
    traceback.print_exception(type(exc), exc, tb or exc.__traceback__)


def _cut_at_script(tb: TracebackType | None, script: str) -> TracebackType | None:
    """The traceback up to the script's innermost frame, so a debugger opens there."""
    last = None
    entry = tb
    while entry is not None:
        if entry.tb_frame.f_code.co_filename == script:
            last = entry
        entry = entry.tb_next
    if last is not None:
        last.tb_next = None
    return tb


@functools.cache
def _parser() -> argparse.ArgumentParser:
    """The driver's arguments (made once in the zygote: 0.6 ms a test in a forked child)."""
    parser = argparse.ArgumentParser(prog="nixtest.driver")
    parser.add_argument("--spec", required=True, help="the test, as JSON")
    parser.add_argument("--result", help="append steps to this file, as JSON lines")
    parser.add_argument("--ipdb", action="store_true")
    parser.add_argument("--timeout", type=float, default=0.0, help="seconds; 0 for none")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # The wrapper hands LD_LIBRARY_PATH over under another name, so that the
    # profile's libraries reach the test's commands but not this interpreter.
    hidden = os.environ.pop("NIXTEST_LD_LIBRARY_PATH", None)
    if hidden is not None:
        os.environ["LD_LIBRARY_PATH"] = hidden
    spec = json.loads(args.spec)
    return Driver(spec, args.result, args.ipdb, args.timeout).run()


if __name__ == "__main__":
    sys.exit(main())
