"""The scheduler's pool (nixtest.run.pool), driven by fake jobs: threading.Events stand for tests."""

from __future__ import annotations

import threading

import pytest

from nixtest.run.pool import Pool

#: seconds a test waits for something that must happen promptly (generous: a loaded machine)
PROMPT = 30.0


def gated(gate: threading.Event, value: str, seen: list[str] | None = None) -> object:
    def work() -> str:
        if seen is not None:
            seen.append(value)
        assert gate.wait(PROMPT), "the test never opened the gate"
        return value

    return work


def test_results_come_back_in_the_order_the_jobs_end() -> None:
    pool: Pool[str, str] = Pool(3)
    gates = {name: threading.Event() for name in "abc"}
    for name, gate in gates.items():
        pool.submit(name, gated(gate, name.upper()))  # type: ignore[arg-type]
    assert pool.running == 3 and pool.full
    order = []
    for name in "cab":
        gates[name].set()
        done = pool.next(timeout=PROMPT)
        assert done is not None and done.error is None
        order.append((done.key, done.result))
    assert order == [("c", "C"), ("a", "A"), ("b", "B")]
    assert pool.running == 0


def test_no_more_than_n_jobs_at_once() -> None:
    pool: Pool[int, str] = Pool(2)
    gate = threading.Event()
    pool.submit(1, gated(gate, "1"))  # type: ignore[arg-type]
    pool.submit(2, gated(gate, "2"))  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="already runs 2 jobs"):
        pool.submit(3, gated(gate, "3"))  # type: ignore[arg-type]
    gate.set()
    assert pool.next(timeout=PROMPT) is not None
    assert not pool.full
    pool.submit(3, gated(gate, "3"))  # type: ignore[arg-type]
    assert {pool.next(timeout=PROMPT).key for _ in range(2)} <= {1, 2, 3}  # type: ignore[union-attr]


def test_the_same_key_twice_is_refused() -> None:
    pool: Pool[str, str] = Pool(2)
    gate = threading.Event()
    pool.submit("a", gated(gate, "a"))  # type: ignore[arg-type]
    with pytest.raises(KeyError):
        pool.submit("a", gated(gate, "a"))  # type: ignore[arg-type]
    gate.set()
    pool.next(timeout=PROMPT)


def test_a_job_that_raises_gives_its_exception_and_the_others_go_on() -> None:
    pool: Pool[str, str] = Pool(2)
    gate = threading.Event()

    def broken() -> str:
        raise OSError("disk on fire")

    pool.submit("bad", broken)
    pool.submit("good", gated(gate, "fine"))  # type: ignore[arg-type]
    done = pool.next(timeout=PROMPT)
    assert done is not None and done.key == "bad"
    assert isinstance(done.error, OSError) and done.result is None
    gate.set()
    done = pool.next(timeout=PROMPT)
    assert done is not None and (done.key, done.result, done.error) == ("good", "fine", None)


def test_next_gives_up_after_its_timeout() -> None:
    pool: Pool[str, str] = Pool(1)
    gate = threading.Event()
    pool.submit("a", gated(gate, "a"))  # type: ignore[arg-type]
    assert pool.next(timeout=0.05) is None
    assert pool.running == 1
    gate.set()
    assert pool.next(timeout=PROMPT) is not None


def test_next_with_nothing_running_is_a_bug() -> None:
    with pytest.raises(RuntimeError, match="no job is running"):
        Pool[str, str](1).next()


def test_cancel_cancels_every_running_job_and_drops_their_results() -> None:
    pool: Pool[str, str] = Pool(3)
    gates = {name: threading.Event() for name in "abc"}
    cancelled: list[str] = []

    def cancel(name: str) -> object:
        def do() -> None:
            cancelled.append(name)
            gates[name].set()
            if name == "b":
                raise ProcessLookupError("it had ended")  # one failing cancel stops no other

        return do

    for name in "abc":
        pool.submit(name, gated(gates[name], name), cancel(name))  # type: ignore[arg-type]
    assert sorted(pool.cancel(wait=PROMPT)) == ["a", "b", "c"]
    assert sorted(cancelled) == ["a", "b", "c"]
    assert pool.running == 0
    # nothing of theirs is handed out later
    pool.submit("d", lambda: "d")
    done = pool.next(timeout=PROMPT)
    assert done is not None and done.key == "d"


def test_a_pool_runs_at_least_one_job() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Pool[str, str](0)


def test_jobs_reuse_at_most_n_worker_threads_and_close_ends_them() -> None:
    pool: Pool[int, threading.Thread] = Pool(2)
    workers = set()
    for n in range(10):
        pool.submit(n, threading.current_thread)
        if pool.full:
            workers.add(pool.next(timeout=PROMPT).result)  # type: ignore[union-attr]
    while pool.running:
        workers.add(pool.next(timeout=PROMPT).result)  # type: ignore[union-attr]
    assert 1 <= len(workers) <= 2
    pool.close()
    for thread in workers:
        assert thread is not None
        thread.join(PROMPT)
        assert not thread.is_alive()
