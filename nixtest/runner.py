"""From a definition to a result: profile, wrapper, run, outcome.

`prepare` and `execute` are the one place where exceptions become outcomes:
a `NixtestError` while preparing is an *error* (the test could not be set up),
anything the test itself did wrong is a *failure*.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nixtest.capture import mask_clean
from nixtest.child.expect import MATCH_LIMIT, failure_message
from nixtest.child.expect import problems as expect_problems
from nixtest.definitions import BadTest, Definition, Expect, TestDef, display_path
from nixtest.errors import DefinitionError, NixtestError, UnknownPackage
from nixtest.exec.zygote import STARTUP_VARIABLES, Zygote
from nixtest.execution import ProcessRun, run_supervised
from nixtest.packagesets import PackageSet, load_set
from nixtest.profiles import Profile, build_profile, default_state_dir
from nixtest.results import Step, TestResult
from nixtest.run.cache import CacheAnswer, ResultCache
from nixtest.run.inputs import Inputs, inputs_of, timeout_of
from nixtest.safefs import claim, make_folders, open_fresh, remove_tree, sweep_unclaimed
from nixtest.wrappers import (
    EXIT_ERROR,
    EXIT_FAILED,
    EXIT_PASSED,
    EXIT_SKIPPED,
    EXIT_USAGE,
    EXIT_XFAILED,
    WrapperPlan,
    write_wrapper,
)

#: the private folder of one run, in $TMPDIR
SCRATCH_PREFIX = "nixtest-run-"


@dataclass
class Context:
    """What every test of a run shares: the set, the folders, the interpreter."""

    set_spec: str = "host"
    out: Path = Path("nixtest-out")
    state: Path = field(default_factory=default_state_dir)
    #: overrides the default timeout of tests that do not set their own
    timeout: float | None = None
    python: str = sys.executable
    #: where recorded passes come from (the history); None runs every test
    cache: ResultCache | None = None
    #: why tests run when there is no cache to ask (e.g. "--no-cache")
    no_cache_reason: str = ""
    #: --retries: how many more times a failing test runs
    retries: int = 0
    _pset: PackageSet | None = None
    _profiles: dict[tuple[str, ...], Profile] = field(default_factory=dict)
    _scratch: Path | None = None
    _scratch_lock: int | None = None
    counter: Iterator[int] = field(default_factory=itertools.count)
    #: whether Python-driven tests start from a warm zygote (nixtest.child.zygote)
    warm: bool = True
    _zygote: Zygote | None = None
    #: per thread (the scheduler's run one test at a time each): the supervisor of its
    #: `run:` tests, one after the other (nixtest.child.spawner.supervise_serially)
    _spawners: dict[int, Zygote] = field(default_factory=dict)
    _zygote_lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.out = Path(os.path.abspath(self.out))
        self.state = Path(os.path.abspath(self.state))

    @property
    def pset(self) -> PackageSet:
        if self._pset is None:
            self._pset = load_set(self.set_spec)
        return self._pset

    def profile(self, packages: tuple[str, ...]) -> Profile:
        key = tuple(sorted(set(packages)))
        if key not in self._profiles:
            self._profiles[key] = build_profile(self.pset, key, self.state)
        return self._profiles[key]

    @property
    def scratch(self) -> Path:
        """A private folder for working directories and result files, removed at the end."""
        if self._scratch is None:
            base = tempfile.gettempdir()
            # what runs killed outright (SIGKILL) left behind
            sweep_unclaimed(base, SCRATCH_PREFIX)
            # 0700: the working directories in it are nobody else's business
            self._scratch = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=base))
            self._scratch_lock = claim(self._scratch)
        return self._scratch

    def zygote_for(self, prepared: Prepared) -> Zygote | None:
        """The zygote to fork this test's supervisor from; None for the wrapper's own way.

        `run:` tests use the spawner of the calling thread: a small process
        that is the supervisor of each of the thread's tests in turn and starts
        their command with exactly the wrapper's environment (no process but
        the command per test).
        Python-driven tests use the zygote when their
        environment sets nothing that an interpreter reads when it starts (a
        locale, TZ; the zygote started under none) and their interpreter is
        this one.  Autopkgtests never (their wrapper does more than start them).
        """
        test = prepared.test
        if not self.warm:
            return None
        if test.kind == "run":
            thread = threading.get_ident()
            with self._zygote_lock:
                spawner = self._spawners.get(thread)
            if spawner is None or not spawner.alive or spawner.proc.poll() is not None:
                if spawner is not None:
                    spawner.close()
                # started from this thread: it dies with it (its death signal is the thread's)
                spawner = Zygote(sys.executable, light=True)
                with self._zygote_lock:
                    self._spawners[thread] = spawner
            return spawner
        if not prepared.plan.driven or test.kind not in ("classic", "pytest", "imports"):
            return None
        if STARTUP_VARIABLES & (set(test.environment) | set(test.secrets)):
            return None
        if os.path.realpath(prepared.plan.python) != os.path.realpath(sys.executable):
            return None  # the zygote is this interpreter
        with self._zygote_lock:
            if self._zygote is None or not self._zygote.alive:
                self._zygote = Zygote(sys.executable)
            return self._zygote

    def close_servers(self) -> None:
        """Ends the spawners and the zygote this process started."""
        with self._zygote_lock:
            servers = [*self._spawners.values(), self._zygote]
            self._spawners.clear()
            self._zygote = None
        for server in servers:
            if server is not None:
                server.close()

    def after_fork(self) -> None:
        """In a forked worker process (nixtest.run.workers): nothing of the parent's to share.

        The servers it started are the parent's (none are started before the
        fork); the cache opens the history again.
        """
        self._spawners = {}
        self._zygote = None
        self._zygote_lock = threading.Lock()
        forked = getattr(self.cache, "after_fork", None)
        if forked is not None:
            self.cache = forked()

    def close(self) -> None:
        self.close_servers()
        if self._scratch is not None:
            _remove_tree(self._scratch)
            self._scratch = None
        if self._scratch_lock is not None:
            os.close(self._scratch_lock)
            self._scratch_lock = None


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM, SIGHUP) while a test ran: carries the stopped test's result."""

    def __init__(self, result: TestResult) -> None:
        super().__init__(result.message)
        self.result = result


@dataclass
class Prepared:
    test: TestDef
    plan: WrapperPlan
    wrapper: Path
    warnings: list[str]
    #: facts for the reports (an autopkgtest's Depends, Restrictions...)
    properties: dict[str, str] = field(default_factory=dict)
    #: the input key and its parts (None if they could not be known)
    inputs: Inputs | None = None


def error_result(defn: Definition, message: str, wrapper: str = "") -> TestResult:
    now = time.time()
    return TestResult(
        package=defn.package,
        test=defn.name,
        outcome="error",
        message=message,
        kind=getattr(defn, "kind", ""),
        start=now,
        end=now,
        wrapper=wrapper,
    )


def prepare(defn: Definition, ctx: Context) -> Prepared | TestResult:
    """Builds the test's profiles and writes its wrapper; an error result if it cannot."""
    if isinstance(defn, BadTest):
        return error_result(defn, defn.error.message)
    try:
        return _prepare(defn, ctx)
    except NixtestError as exc:
        return error_result(defn, exc.message)
    except OSError as exc:
        return error_result(defn, f"{display_path(defn.file)}: test {defn.name!r}: {exc}")


def _prepare(test: TestDef, ctx: Context) -> Prepared | TestResult:
    if test.autopkgtest is not None:
        from nixtest.run.autopkgtest import prepare_autopkgtest

        return prepare_autopkgtest(test, ctx)
    shown = display_path(test.file)
    if not ctx.pset.has(test.package):
        raise DefinitionError(
            shown, test.name, None, f"package {test.package!r} is not in the package set {ctx.set_spec!r}"
        )
    warnings: list[str] = []

    def profile_of(packages: tuple[str, ...], key: str) -> Profile:
        try:
            profile = ctx.profile(packages)
        except UnknownPackage as exc:
            raise DefinitionError(
                shown, test.name, key, f"package {exc.name!r} is not in the package set {ctx.set_spec!r}"
            ) from None
        warnings.extend(f"profile {'+'.join(packages)}: collision: {c}" for c in profile.collisions)
        return profile

    profile = profile_of(test.profile, "profile")
    links: dict[str, Path] = {}
    for link in test.symlinks:
        if link.path is not None:
            links[link.name] = link.path
        else:
            links[link.name] = profile_of(link.packages, f"symlinks.{link.name}").path
    plan = WrapperPlan(test=test, profile=profile.path, python=ctx.python, links=links)
    wrapper = write_wrapper(plan, ctx.out)
    inputs = inputs_of(test, ctx.pset, ctx.timeout, ctx.python)
    return Prepared(test=test, plan=plan, wrapper=wrapper, warnings=warnings, inputs=inputs)


def execute(prepared: Prepared, ctx: Context, on_start: Callable[[int], None] | None = None) -> TestResult:
    """The test's result: a recorded pass from the cache, or its runs (with --retries).

    Safe on any thread (the scheduler runs several at once); `on_start` gets
    the process group of each run as soon as it runs.
    """
    test = prepared.test
    reason = ctx.no_cache_reason
    if ctx.cache is not None and prepared.inputs is not None:
        answer = ctx.cache.lookup(test, prepared.inputs)
        if answer.result is not None:
            return _from_cache(answer, prepared, ctx)
        reason = answer.reason
    result = _attempt(prepared, ctx, on_start)
    earlier: list[str] = []
    while result.is_bad and len(earlier) < ctx.retries:
        line = f"attempt {len(earlier) + 1}: {result.outcome}: {result.message}"
        if result.log_path and os.path.exists(result.log_path):
            # each attempt's log is kept: the last one has the test's own name
            kept = result.log_path[: -len(".log")] + f".attempt-{len(earlier) + 1}.log"
            os.replace(result.log_path, kept)
            line += f" (log: {kept})"
        earlier.append(line)
        result = _attempt(prepared, ctx, on_start)
    result.attempts = len(earlier) + 1
    result.earlier_attempts = earlier
    result.flaky = bool(earlier) and result.outcome == "passed"
    result.reason = reason
    _add_inputs(result, prepared)
    return result


def _add_inputs(result: TestResult, prepared: Prepared) -> None:
    if prepared.inputs is not None:
        result.input_key = prepared.inputs.key
        result.inputs = prepared.inputs.parts
        result.packages = prepared.inputs.packages


def _from_cache(answer: CacheAnswer, prepared: Prepared, ctx: Context) -> TestResult:
    """The recorded pass, reported as this run's: its steps and log, today's wrapper."""
    assert answer.result is not None
    test = prepared.test
    result = answer.result
    log_path = ctx.out / "logs" / test.package / f"{test.name}.log"
    if answer.log is not None:
        make_folders(log_path.parent)
        # created afresh, never through a symlink planted where the log goes
        with os.fdopen(open_fresh(log_path), "wb") as log:
            log.write(answer.log)
    now = time.time()
    result.start, result.end = now, now
    result.cached, result.cached_from, result.reason = True, answer.run_id, answer.reason
    result.wrapper = str(prepared.wrapper)
    result.command = [str(prepared.wrapper)]
    result.log_path = str(log_path) if log_path.exists() else ""
    result.warnings = list(prepared.warnings)
    result.profile = str(prepared.plan.profile)
    result.attempts, result.earlier_attempts, result.flaky, result.change = 1, [], False, ""
    _add_inputs(result, prepared)
    return result


def _attempt(prepared: Prepared, ctx: Context, on_start: Callable[[int], None] | None) -> TestResult:
    """Runs a prepared test's wrapper once and reads what it did."""
    test = prepared.test
    timeout = timeout_of(test, ctx.timeout)
    # --timeout 0 means no timeout, for nixtest as for the wrapper
    timeout = timeout if timeout > 0 else math.inf
    # The working directory is made here, in our private scratch folder, and
    # removed here: also when the test is killed before it could clean up.
    # The wrapper prepares everything in it.
    base = ctx.scratch / f"{test.package}.{test.name}.{next(ctx.counter)}"
    workdir = base.with_name(base.name + ".work")
    result_file = base.with_name(base.name + ".jsonl")
    os.mkdir(workdir)
    os.mkdir(workdir / ".tmp")
    if profile_link(prepared):
        # what the wrapper's `ln -s -- "$nt_profile" "$nt_wd/profile"` makes, without its process
        os.symlink(prepared.plan.profile, workdir / "profile")
    log_path = ctx.out / "logs" / test.package / f"{test.name}.log"
    if prepared.plan.artifacts is not None:
        # a fresh $AUTOPKGTEST_ARTIFACTS: nothing of an earlier run is listed as this run's
        if os.path.lexists(prepared.plan.artifacts):
            _remove_tree(prepared.plan.artifacts)
        prepared.plan.artifacts.mkdir(parents=True)
    secrets = [os.environ[s] for s in test.secrets if os.environ.get(s)]
    argv = [str(prepared.wrapper), "--result", str(result_file), "--workdir", str(workdir)]

    def env() -> dict[str, str]:
        # the wrapper's: ours, its TMPDIR in the working directory (only a wrapper needs it;
        # copying os.environ is about 0.1 ms a test)
        return dict(os.environ, TMPDIR=str(workdir / ".tmp"))

    result = TestResult(
        package=test.package,
        test=test.name,
        kind=test.kind,
        command=[str(prepared.wrapper)],
        wrapper=str(prepared.wrapper),
        log_path=str(log_path),
        warnings=list(prepared.warnings),
        profile=str(prepared.plan.profile),
        properties=dict(prepared.properties),
    )
    match_limit = MATCH_LIMIT if test.expect.has_patterns else 0
    # whether the command ran in place of the wrapper, as its `exec` record says on the wrapper's
    # path (passed here in memory on the warm path: no record written and read back)
    execed = False
    try:
        zygote = ctx.zygote_for(prepared)
        if zygote is None:
            run = run_supervised(
                argv,
                log_path=log_path,
                timeout=timeout,
                secrets=secrets,
                env=env(),
                on_start=on_start,
                match_limit=match_limit,
            )
        else:
            run, execed = _run_warm(
                prepared, zygote, argv, workdir, result_file, log_path, timeout, env, on_start, match_limit
            )
    except NixtestError as exc:
        result.outcome, result.message, result.end = "error", exc.message, time.time()
        return result
    except KeyboardInterrupt as exc:
        why = str(exc) or "Ctrl-C"
        result.outcome, result.end = "error", time.time()
        result.message = f"interrupted ({why}): the test was stopped and its processes killed"
        raise Interrupted(result) from None
    finally:
        records = _read_records(result_file)
        _remove_tree(workdir)
        if os.path.lexists(result_file):
            os.unlink(result_file)
    result.start, result.end = run.start, run.end
    result.exit_code = run.exit_code
    result.timed_out = run.timed_out
    result.output = run.output.text_chunks()
    result.output_dropped = run.output.dropped
    end: dict[str, Any] = {}
    for record in records:
        if record.get("type") == "step":
            record.pop("type")
            result.steps.append(Step.from_dict(record))
        elif record.get("type") == "end":
            end = record
        elif record.get("type") == "output":
            # the driver's own account: only what was printed outside the steps
            result.output = [(str(s), str(t)) for s, t in record.get("chunks", [])]
            result.output_dropped = int(record.get("dropped", 0))
        elif record.get("type") == "killed":
            # the supervisor ended processes the test left behind (nixtest.child.reaper)
            killed = [str(p) for p in record.get("processes", [])]
            shown = ", ".join(killed[:10]) + (f" and {len(killed) - 10} more" if len(killed) > 10 else "")
            result.warnings.append(f"killed {len(killed)} leftover process(es) when the test ended: {shown}")
        elif record.get("type") == "exec":
            execed = True
    if execed and test.run is not None:
        end = _check_command(result, run, test.run, test.expect) or end
    if test.run is not None and result.steps:
        result.output, result.output_dropped = [], 0  # all of it is the one step's
    _decide(result, end, timeout)
    if test.autopkgtest is not None:
        from nixtest.run.autopkgtest import after_autopkgtest

        after_autopkgtest(result, prepared, ctx)
    if secrets:
        _mask_result(result, secrets)
    return result


def _check_command(result: TestResult, run: ProcessRun, line: str, want: Expect) -> dict[str, Any] | None:
    """A `run:` test whose wrapper became its command: the command's exit code and output,
    checked here as the driver checks them in a wrapper run by hand.  Adds the one step; the
    driver's last word (`end`) when the patterns failed."""
    code = int(run.exit_code or 0)
    # the whole output, however long (the spools search what they hold on disk too)
    found = expect_problems(
        code, dict(run.streams), {"exit": want.exit, "stdout": want.stdout, "stderr": want.stderr}
    )
    for spool in run.streams.values():
        spool.close()
    if not run.timed_out:
        result.exit_code = EXIT_FAILED if found else EXIT_PASSED
    result.steps.append(
        Step(
            message=line,
            command=line,
            exit_code=code,
            outcome="failed" if found else "passed",
            expected=str(want.exit),
            output=run.output.text_chunks(),
            output_dropped=run.output.dropped,
            start=run.start,
            end=run.end,
            detail="; ".join(found),
        )
    )
    if found and want.has_patterns:
        return {"message": failure_message(line, found)}
    return None


def profile_link(prepared: Prepared) -> bool:
    """Whether the runner makes the working directory's `profile` link (the wrapper skips it then).

    Only where nothing is copied into the folder first (a skel could hold a
    `profile` of its own), and not for autopkgtests (their tree is theirs).
    """
    test = prepared.test
    return test.kind != "autopkgtest" and test.skel is None and not test.sources


def _run_warm(
    prepared: Prepared,
    zygote: Zygote,
    argv: list[str],
    workdir: Path,
    result_file: Path,
    log_path: Path,
    timeout: float,
    env: Callable[[], dict[str, str]],
    on_start: Callable[[int], None] | None,
    match_limit: int,
) -> tuple[ProcessRun, bool]:
    """A test whose supervisor the zygote forks, warm, instead of the wrapper starting one.

    The wrapper still prepares the working directory when there is more to it
    than the profile link (`--prepare`).  The zygote's child becomes the
    supervisor (nixtest.child.reaper) in the working directory, and starts
    below it what the wrapper's supervisor would: a `run:` test's command with
    the wrapper's environment, or the driver with the wrapper's arguments.
    Also says whether a `run:` test's command ran (not when `--prepare` failed).
    """
    plan = prepared.plan
    test = prepared.test
    secrets = {name: os.environ[name] for name in test.secrets if name in os.environ}
    masked = [value for value in secrets.values() if value]
    append, left = False, timeout
    if test.skel is not None or test.sources or plan.links:
        started = time.monotonic()
        prepare = [*argv, "--prepare"]
        prep = run_supervised(
            prepare, log_path=log_path, timeout=timeout, secrets=masked, env=env(), on_start=on_start
        )
        if prep.timed_out or prep.exit_code != 0:
            return prep, False
        append = True
        # what is left of the test's time (the messages say the rest)
        left = max(0.0, timeout - (time.monotonic() - started))
    request: dict[str, Any] = {
        "cwd": str(workdir),
        "name": f"{test.package}::{test.name}",
        "result": str(result_file),
        "read_only": [str(p) for p in plan.read_only()],
    }
    if test.run is not None:
        # the runner checks its exit code and `expect` patterns (_attempt), as the
        # wrapper's `exec` record asks on its path
        request.update(exec=plan.command(), env=plan.command_environment(str(workdir), secrets))
    else:
        request.update(
            args=plan.driver_arguments(str(result_file)),
            env=plan.driver_environment(str(workdir), secrets),
        )
    # named after the wrapper it stands for (the reports' command)
    run = run_supervised(
        argv,
        log_path=log_path,
        timeout=left,
        secrets=masked,
        on_start=on_start,
        spawn=lambda: zygote.spawn(request),
        append=append,
        match_limit=match_limit,
    )
    return run, test.run is not None


def _mask_result(result: TestResult, secrets: list[str]) -> None:
    """Masks every text of a result as the reports will show it (escapes removed).

    The output was masked as it came; a secret the test split with terminal
    escapes, or that the driver quoted, is whole only now.
    """

    def chunks(items: list[tuple[str, str]]) -> list[tuple[str, str]]:
        return [(stream, mask_clean(text, secrets)) for stream, text in items]

    result.message = mask_clean(result.message, secrets)
    result.output = chunks(result.output)
    result.warnings = [mask_clean(w, secrets) for w in result.warnings]
    for step in result.steps:
        step.message = mask_clean(step.message, secrets)
        step.command = mask_clean(step.command, secrets)
        step.detail = mask_clean(step.detail, secrets)
        step.output = chunks(step.output)


def _decide(result: TestResult, end: dict[str, Any], timeout: float) -> None:
    """The outcome, from the wrapper's exit code and the driver's last word."""
    code = result.exit_code
    said = str(end.get("message", ""))
    if result.timed_out:
        result.outcome = "failed"
        running = len(result.steps) + 1
        result.message = (
            f"timed out after {timeout:g} seconds (during step {running}); its processes were killed"
        )
    elif code == EXIT_PASSED:
        result.outcome = "passed"
    elif code == EXIT_SKIPPED:
        result.outcome, result.message = "skipped", said or "skipped"
    elif code == EXIT_XFAILED:
        result.outcome, result.message = "xfailed", said or "failed, and marked flaky"
    elif code == EXIT_FAILED:
        step = result.failed_step
        result.outcome = "failed"
        result.message = said or (
            f"failed at step {result.steps.index(step) + 1}: {step.detail}" if step else "failed"
        )
    elif code in (EXIT_ERROR, EXIT_USAGE):
        result.outcome = "error"
        result.message = said or _last_line(result.output_text()) or f"the wrapper exited {code}"
    else:
        result.outcome = "failed"
        result.message = f"the wrapper exited {code}" + (f": {said}" if said else "")


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def _read_records(path: Path) -> list[dict[str, Any]]:
    records = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    records.append(json.loads(line))
                except ValueError:
                    continue  # a line cut short by a kill
    except OSError:
        pass
    return records


def _remove_tree(path: Path) -> None:
    """Removes a test's folder, also where the test made folders read-only or removed it.

    Only the folder's own tree is touched (see `safefs.remove_tree`).
    """
    remove_tree(path)


def format_failure(result: TestResult, tail_lines: int = 30) -> str:
    """The terminal's failure report: what failed, where, and how to reproduce it."""
    lines = [f"{result.nodeid} {result.outcome}: {result.message}"]
    step = result.failed_step
    if step is not None:
        index = result.steps.index(step) + 1
        lines.append(f"  step {index} of {len(result.steps)}: {step.message}")
        if step.command and step.command != step.message:
            lines.append(f"  command: {step.command}")
        if step.exit_code is not None:
            expected = f" (expected {step.expected})" if step.expected else ""
            lines.append(f"  exit code: {step.exit_code}{expected}")
        output = "".join(t for _, t in step.output)
    else:
        output = result.output_text()
    for warning in result.warnings:
        lines.append(f"  warning: {warning}")
    out_lines = output.splitlines()
    if out_lines:
        shown = out_lines[-tail_lines:]
        cut = f", last {len(shown)} of {len(out_lines)} lines" if len(out_lines) > len(shown) else ""
        lines.append(f"  output{cut}:")
        lines += [f"    {line}" for line in shown]
    if result.log_path:
        lines.append(f"  full log: {display_path(Path(result.log_path))}")
    lines += result.rerun_lines
    return "\n".join(lines)
