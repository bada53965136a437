"""nixtest.run.workers: forked processes that run the scheduler's work, driven with plain functions."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nixtest.run.workers import WorkerDied, Workers


@pytest.fixture
def made() -> Iterator[list[Workers[object]]]:
    """Workers the test made, closed at its end."""
    made: list[Workers[object]] = []
    yield made
    for workers in made:
        workers.close(wait=5)


def workers_of(
    made: list[Workers[object]], count: int, work: Callable[[int, Callable[[int], None]], object]
) -> Workers[object]:
    workers = Workers(count, work)
    made.append(workers)
    return workers


def in_which_process(key: int, on_start: Callable[[int], None]) -> object:
    return (key, os.getpid(), os.getppid())


def test_the_work_runs_in_a_child_process_and_its_result_comes_back(made: list[Workers[object]]) -> None:
    workers = workers_of(made, 2, in_which_process)
    results = [workers.run(key) for key in range(5)]
    assert [r[0] for r in results] == list(range(5))  # type: ignore[index]
    pids = {r[1] for r in results}  # type: ignore[index]
    assert os.getpid() not in pids
    assert {r[2] for r in results} == {os.getpid()}  # type: ignore[index]


def test_two_threads_run_two_keys_at_once_in_two_workers(made: list[Workers[object]], tmp_path: Path) -> None:
    def meet(key: int, on_start: Callable[[int], None]) -> object:
        (tmp_path / str(key)).touch()
        other = tmp_path / str(1 - key)
        for _ in range(400):  # each waits for the other: one at a time would not get through
            if other.exists():
                return os.getpid()
            time.sleep(0.01)
        return None

    workers = workers_of(made, 2, meet)
    results: dict[int, object] = {}
    threads = [threading.Thread(target=lambda k=k: results.update({k: workers.run(k)})) for k in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert None not in results.values() and len(set(results.values())) == 2, results


def test_on_start_hears_each_start_before_the_result(made: list[Workers[object]]) -> None:
    def started_twice(key: int, on_start: Callable[[int], None]) -> object:
        on_start(key * 10)
        on_start(key * 10 + 1)
        return "done"

    workers = workers_of(made, 1, started_twice)
    heard: list[int] = []
    assert workers.run(3, heard.append) == "done"
    assert heard == [30, 31]


def test_what_the_work_raises_is_raised_in_the_parent(made: list[Workers[object]]) -> None:
    class Unpicklable(Exception):
        def __reduce__(self) -> object:
            raise TypeError("not this one")

    def broken(key: int, on_start: Callable[[int], None]) -> object:
        if key == 0:
            raise OSError(28, "No space left on device")
        raise Unpicklable("a local class")

    workers = workers_of(made, 1, broken)
    with pytest.raises(OSError, match="No space left on device"):
        workers.run(0)
    with pytest.raises(RuntimeError, match="Unpicklable: a local class"):
        workers.run(1)
    # the worker is still there for the next key
    with pytest.raises(OSError):
        workers.run(0)


def test_a_worker_that_dies_is_named_and_the_others_go_on(made: list[Workers[object]]) -> None:
    def dies_on_1(key: int, on_start: Callable[[int], None]) -> object:
        if key == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return os.getpid()

    workers = workers_of(made, 2, dies_on_1)
    with pytest.raises(
        WorkerDied, match=r"worker process \d+ ended while running the test \(killed by SIGKILL\)"
    ):
        workers.run(1)
    survivor = workers.run(0)
    assert workers.run(0) == survivor
    with pytest.raises(WorkerDied):
        workers.run(1)
    with pytest.raises(WorkerDied, match="no worker process is left"):
        workers.run(0)


def test_a_worker_ignores_the_signals_the_parent_decides_on_and_its_programs_do_not(
    made: list[Workers[object]],
) -> None:
    def status(key: int, on_start: Callable[[int], None]) -> object:
        if key == 0:
            return os.getpid()
        # what a program the worker starts has: no signal ignored, none blocked
        fields = dict(
            line.split(":\t", 1)
            for line in subprocess.run(
                ["cat", "/proc/self/status"], capture_output=True, text=True
            ).stdout.splitlines()
            if ":\t" in line
        )
        return int(fields["SigIgn"], 16), int(fields["SigBlk"], 16)

    workers = workers_of(made, 1, status)
    pid = workers.run(0)
    assert isinstance(pid, int)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        os.kill(pid, signum)
    time.sleep(0.2)
    assert workers.run(0) == pid  # still there, the same one
    ignored, blocked = workers.run(1)  # type: ignore[misc]
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        assert not ignored & (1 << (signum - 1)), hex(ignored)
    assert blocked == 0


def test_close_ends_the_workers_and_kills_one_that_will_not_end(made: list[Workers[object]]) -> None:
    def stuck(key: int, on_start: Callable[[int], None]) -> object:
        if key == 1:
            time.sleep(600)
        return os.getpid()

    workers = Workers(2, stuck)
    pids = {workers.run(0) for _ in range(4)}
    thread = threading.Thread(target=lambda: pytest.raises(WorkerDied, workers.run, 1), daemon=True)
    thread.start()
    time.sleep(0.3)
    started = time.monotonic()
    workers.close(wait=0.5)
    assert time.monotonic() - started < 5
    thread.join(5)
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # reaped, not a zombie


def test_can_fork_only_while_no_other_thread_runs() -> None:
    code = textwrap.dedent(
        """
        import threading
        from nixtest.run.workers import Workers
        print(Workers.can_fork())
        stop = threading.Event()
        thread = threading.Thread(target=stop.wait)
        thread.start()
        print(Workers.can_fork())
        stop.set()
        thread.join()
        print(Workers.can_fork())
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "False", "True"]


def test_workers_die_with_their_parent_and_never_run_its_exit_handlers(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import atexit, os, sys, time
        from nixtest.run.workers import Workers
        atexit.register(lambda: open({str(tmp_path / "exits")!r}, "a").write(f"{{os.getpid()}}\\n"))
        workers = Workers(2, lambda key, on_start: os.getpid())
        pids = {{workers.run(0), workers.run(0), workers.run(0)}}
        print(" ".join(map(str, sorted(pids))), flush=True)
        if sys.argv[1] == "kill":
            time.sleep(600)
        workers.close()
        """
    )
    # ended as usual: only the parent's handler ran, once
    done = subprocess.run([sys.executable, "-c", code, "close"], capture_output=True, text=True, check=True)
    lines = (tmp_path / "exits").read_text().split()
    assert len(lines) == 1 and lines[0] not in done.stdout.split()
    # the parent killed outright: its workers do not outlive it
    proc = subprocess.Popen([sys.executable, "-c", code, "kill"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert pids
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in alive if Path(f"/proc/{pid}").exists() and _state(pid) != "Z"]
        time.sleep(0.05)
    assert not alive


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "gone"
