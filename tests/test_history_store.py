"""The input key (nixtest.run.inputs) and the history database (nixtest.history.store).

The key is computed from real package sets: the machine's dpkg database, a
dpkg database written here (to upgrade a package), and prefix sets.  The
store is the real SQLite file, written by several processes at once and by
a process that is killed.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path

import pytest

from conftest import needs_dpkg
from nixtest.definitions import TestDef as Definition
from nixtest.history.cache import HistoryCache
from nixtest.history.compare import Baseline, change_of, compare
from nixtest.history.recorder import BATCH_SECONDS, HistoryRecorder
from nixtest.history.store import HistoryStore
from nixtest.packagesets import DpkgSet, PrefixSet
from nixtest.results import RunSummary, TestResult
from nixtest.run.inputs import changes, inputs_of


def make_def(package: str, tmp_path: Path, **kwargs: object) -> Definition:
    folder = tmp_path / package
    folder.mkdir(exist_ok=True)
    fields: dict[str, object] = {"kind": "run", "run": "true", "profile": (package,)}
    fields.update(kwargs)
    return Definition(package=package, name="t", file=folder / "tests.yaml", **fields)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# the input key


def _db(zlib_version: str) -> str:
    rows = [
        ["dpkg", "dpkg", "amd64", "1.21", "install ok installed", "", "", "", "dpkg"],
        ["libc6:amd64", "libc6", "amd64", "2.36", "install ok installed", "", "", "", "glibc"],
        [
            "zlib1g:amd64",
            "zlib1g",
            "amd64",
            zlib_version,
            "install ok installed",
            "",
            "libc6 (>= 2.14)",
            "",
            "zlib",
        ],
        [
            "libpng16-16:amd64",
            "libpng16-16",
            "amd64",
            "1.6.39",
            "install ok installed",
            "libc6, zlib1g",
            "",
            "",
            "libpng",
        ],
        [
            "optipng",
            "optipng",
            "amd64",
            "0.7",
            "install ok installed",
            "libpng16-16 (>= 1.6)",
            "",
            "",
            "optipng",
        ],
        ["sed", "sed", "amd64", "4.9", "install ok installed", "", "libc6 (>= 2.34)", "", "sed"],
    ]
    return "\n".join("\t".join(r) for r in rows) + "\n"


class FakeDpkg(DpkgSet):
    """A dpkg database given as dpkg-query's output: here zlib1g can be upgraded."""

    def __init__(self, zlib_version: str) -> None:
        super().__init__("host")
        self.text = _db(zlib_version)

    def _query(self) -> str:
        return self.text


def test_a_dpkg_upgrade_changes_the_keys_of_the_closures_that_hold_it(tmp_path: Path) -> None:
    optipng, sed = make_def("optipng", tmp_path), make_def("sed", tmp_path)
    old, new = FakeDpkg("1:1.2.13"), FakeDpkg("1:1.3")
    before, after = inputs_of(optipng, old), inputs_of(optipng, new)
    # transitively: optipng -> libpng16-16 -> zlib1g (Depends), zlib1g -> libc6 (Pre-Depends)
    assert before.packages == {
        "libc6": "2.36",
        "libpng16-16": "1.6.39",
        "optipng": "0.7",
        "zlib1g": "1:1.2.13",
    }
    assert before.parts["packages"]["zlib1g"] == "1:1.2.13:amd64"  # name=version:arch
    assert before.key != after.key
    assert changes(before.parts, after.parts) == ["zlib1g 1:1.2.13 -> 1:1.3"]
    assert inputs_of(sed, old).key == inputs_of(sed, new).key


def test_the_key_is_the_digest_of_its_parts_and_each_closure_is_walked_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nixtest.run import inputs as inputs_module

    pset = FakeDpkg("1:1.2.13")
    walked: list[str] = []
    dependencies = pset.dependencies
    monkeypatch.setattr(pset, "dependencies", lambda name: walked.append(name) or dependencies(name))
    definition = make_def("optipng", tmp_path)
    first = inputs_of(definition, pset)
    # the key as the history has always recorded it: the digest of every part but "shown"
    plain = inputs_module._digest({k: v for k, v in first.parts.items() if k != "shown"})
    assert first.key == plain
    walks = len(walked)
    assert walks >= 4  # optipng, libpng16-16, zlib1g, libc6
    other = dataclasses.replace(definition, name="u", run="false")
    second = inputs_of(other, pset)
    assert len(walked) == walks, "the same roots: the closure is not walked again"
    assert second.parts["packages"] is first.parts["packages"]
    assert second.key == inputs_module._digest({k: v for k, v in second.parts.items() if k != "shown"})
    assert second.key != first.key


@needs_dpkg
@pytest.mark.tools("hello")
def test_the_real_dpkg_closure_of_hello() -> None:
    pset = DpkgSet()
    assert pset.has("hello"), "hello is on PATH but dpkg has no package hello"
    definition = Definition(
        package="hello",
        name="t",
        file=Path("/nonexistent/hello/tests.yaml"),
        kind="run",
        run="hello",
        profile=("hello",),
    )
    inputs = inputs_of(definition, pset)
    assert "libc6" in inputs.packages  # Depends: libc6
    assert inputs.parts["packages"]["hello"] == f"{pset.version('hello')}:{pset._get('hello').arch}"
    assert inputs_of(definition, DpkgSet()).key == inputs.key  # the same machine, the same key


def test_the_key_covers_timeout_environment_secrets_and_files_but_no_secret_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = tmp_path / "p"
    prefix.mkdir()
    (tmp_path / "set.yaml").write_text(f"pkg: {{prefix: {prefix}, version: '1'}}\n")
    pset = PrefixSet(tmp_path / "set.yaml")
    skel = tmp_path / "pkg" / "skel"
    skel.mkdir(parents=True)
    (skel / "a.txt").write_text("a")
    base = make_def("pkg", tmp_path, skel=skel, secrets=("TOKEN",), environment={"X": "1"})
    key = inputs_of(base, pset).key
    monkeypatch.setenv("TOKEN", "one")
    assert inputs_of(base, pset).key == key
    monkeypatch.setenv("TOKEN", "two")
    assert inputs_of(base, pset).key == key  # a secret counts by name only
    assert "one" not in repr(inputs_of(base, pset).parts)
    assert inputs_of(base, pset, timeout=5).key != key  # the run's --timeout for a test without one
    assert (
        inputs_of(make_def("pkg", tmp_path, skel=skel, secrets=("TOKEN",), environment={"X": "2"}), pset).key
        != key
    )
    assert (
        inputs_of(make_def("pkg", tmp_path, skel=skel, secrets=("OTHER",), environment={"X": "1"}), pset).key
        != key
    )
    (skel / "a.txt").write_text("b")
    changed = inputs_of(base, pset)
    assert changed.key != key
    assert changes(inputs_of(make_def("pkg", tmp_path, skel=skel), pset).parts, changed.parts)[:1] == [
        "definition changed"
    ]


# ---------------------------------------------------------------------------
# the store


def result(package: str, test: str, outcome: str, key: str = "k", **kwargs: object) -> TestResult:
    r = TestResult(package=package, test=test, outcome=outcome, input_key=key, **kwargs)  # type: ignore[arg-type]
    r.end = r.start + 0.5
    return r


def test_the_query_api(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.sqlite")
    one = store.begin_run("host", "/t", ["nixtest", "run"])
    store.add(one, "host", result("a", "x", "passed", "k1"), b"the log")
    store.add(one, "host", result("a", "y", "failed", "k2", message="boom"))
    store.finish_run(one, interrupted=False, baseline=None)
    two = store.begin_run("host", "/t", ["nixtest", "run"])
    store.add(two, "host", result("a", "x", "passed", "k1", cached=True))
    store.set_changes(two, {"a::x": "still-succeeding"})
    store.finish_run(two, interrupted=True, baseline=str(one))
    assert [r.id for r in store.runs()] == [two, one]
    assert store.last_run("host", "/t").id == two  # type: ignore[union-attr]
    assert store.last_run("host", "/t", before=two).id == one  # type: ignore[union-attr]
    assert store.last_run("host", "/other") is None
    assert store.run(two).interrupted and store.run(two).baseline == str(one)  # type: ignore[union-attr]
    assert store.run(one).counts == {"passed": 1, "failed": 1, "cached": 0, "flaky": 0}  # type: ignore[union-attr]
    assert [(r.run_id, r.cached, r.change) for r in store.test_results("a", "x")] == [
        (two, True, "still-succeeding"),
        (one, False, ""),
    ]
    first = store.test_results("a", "x")[-1]
    assert store.log(first.id) == b"the log"
    assert store.result(first.id).input_key == "k1"
    assert [r.test for r in store.results_with_key("k2")] == ["y"]
    assert {r.nodeid for r in store.run_results(one)} == {"a::x", "a::y"}


def _statements(store: HistoryStore) -> list[str]:
    """Every SQL statement the store's connection runs from now on."""
    seen: list[str] = []
    store._db.set_trace_callback(seen.append)
    return seen


def _committed(path: Path, run: int) -> set[str]:
    """The tests of `run` another connection sees: what is committed."""
    other = HistoryStore(path)
    try:
        return set(other.run_outcomes(run))
    finally:
        other.close()


def test_a_run_commits_its_results_a_batch_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    store = HistoryStore(path)
    now = [100.0]
    recorder = HistoryRecorder(store, "host", "/t", [], clock=lambda: now[0], timer=False)
    seen = _statements(store)
    recorder.add(result("a", "t0", "passed", "k0"))
    # the first result: the last commit is long ago, so it is committed at once
    assert _committed(path, recorder.run_id) == {"a::t0"}
    for i in range(1, 10):
        recorder.add(result("a", f"t{i}", "passed", f"k{i}"))
    assert _committed(path, recorder.run_id) == {"a::t0"}, "the others wait for the next commit"
    now[0] += BATCH_SECONDS
    recorder.add(result("a", "t10", "passed", "k10"))
    assert len(_committed(path, recorder.run_id)) == 11
    recorder.add(result("a", "t11", "failed", "k11"))
    recorder.close()
    assert len(_committed(path, recorder.run_id)) == 12
    assert sum(1 for sql in seen if sql.startswith("BEGIN IMMEDIATE")) == 3  # not 12


def test_a_waiting_result_is_committed_by_the_timer(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    recorder = HistoryRecorder(HistoryStore(path), "host", "/t", [])
    recorder.add(result("a", "first", "passed", "k1"))
    recorder.add(result("a", "second", "passed", "k2"))  # within BATCH_SECONDS of the first: waits
    deadline = time.monotonic() + 30  # no time asserted: only that it comes without another add
    while _committed(path, recorder.run_id) != {"a::first", "a::second"}:
        assert time.monotonic() < deadline, "the waiting result was never committed"
        time.sleep(0.05)
    recorder.close()


def test_a_result_of_a_key_waiting_in_the_batch_counts_for_flaky(tmp_path: Path) -> None:
    recorder = HistoryRecorder(HistoryStore(tmp_path / "h.sqlite"), "host", "/t", [], timer=False)
    recorder.add(result("a", "x", "passed", "other"))
    recorder.add(result("a", "y", "failed", "same"))
    second = result("b", "y", "passed", "same")
    recorder.add(second)
    recorder.close()
    assert second.flaky
    assert [r.flaky for r in recorder.store.run_results(recorder.run_id)] == [False, False, True]


def test_the_flaky_check_is_one_query_a_commit_on_the_key_index(tmp_path: Path) -> None:
    """A run's thread reads nothing when it records a result: each commit asks the index
    once for the keys of its whole batch, earlier runs' results and the batch's own counted."""
    store = HistoryStore(tmp_path / "h.sqlite")
    first = HistoryRecorder(store, "host", "/t", [], timer=False)
    for i in range(10):
        first.add(result("a", f"t{i}", "failed" if i == 3 else "passed", f"k{i}"))
    first.close()
    now = [100.0]
    second = HistoryRecorder(store, "host", "/t", [], clock=lambda: now[0], timer=False)
    seen = _statements(store)
    run = [result("a", f"t{i}", "passed", f"k{i}") for i in range(10)]
    run += [result("b", "x", "failed", "new"), result("b", "y", "passed", "new")]
    for r in run[:1]:
        second.add(r)  # the first result: committed at once
    reads = len(seen)
    for r in run[1:]:
        second.add(r)
    assert len(seen) == reads, "nothing read or written while the results wait"
    second.close()
    key_queries = [sql for sql in seen if "input_key IN" in sql]
    assert len(key_queries) == sum(1 for sql in seen if sql.startswith("BEGIN IMMEDIATE")) == 2
    assert [r.nodeid for r in run if r.flaky] == ["a::t3", "b::y"]
    assert {r.nodeid for r in store.run_results(second.run_id) if r.flaky} == {"a::t3", "b::y"}
    plan = store._db.execute("EXPLAIN QUERY PLAN " + key_queries[-1].split(" GROUP BY")[0]).fetchall()
    assert "COVERING INDEX results_key_outcome" in " ".join(str(row[-1]) for row in plan)


def test_the_comparison_and_flaky_check_read_no_whole_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The baseline is outcomes only: no record decoded, no closure or inputs column read."""
    from nixtest.history import store as store_module

    store = HistoryStore(tmp_path / "h.sqlite")
    closure = {f"lib{i}": f"1.{i}" for i in range(50)}
    first = HistoryRecorder(store, "host", "/t", [], timer=False)
    for i in range(30):
        first.add(result("a", f"t{i}", "passed", f"k{i}", packages=closure, inputs={"packages": closure}))
    first.compare(RunSummary(results=[]), None, lambda nodeid: True)
    first.finish(RunSummary(results=[]))
    decoded: list[int] = []
    real = store_module._result_record
    monkeypatch.setattr(store_module, "_result_record", lambda row: decoded.append(1) or real(row))
    seen = _statements(store)
    second = HistoryRecorder(store, "host", "/t", [], timer=False)
    run = RunSummary(
        results=[result("a", f"t{i}", "failed" if i == 3 else "passed", f"k{i}") for i in range(30)]
    )
    for r in run.results:
        second.add(r)
    second.compare(run, None, lambda nodeid: True)
    second.compare(run, str(first.run_id), lambda nodeid: True)
    second.finish(run)
    assert {r.change for r in run.results} == {"still-succeeding", "newly-failing"}
    assert run.results[3].change == "newly-failing" and run.results[3].flaky
    # each comparison writes a statement for each change word, not one for each of the 30 tests
    assert len([sql for sql in seen if sql.startswith("UPDATE results SET change")]) == 2 * 2
    assert decoded == [], "a whole result record was read"
    selects = [sql for sql in seen if sql.lstrip().upper().startswith("SELECT")]
    for sql in selects:
        read, _, source = sql.upper().partition(" FROM ")
        for column in ("PACKAGES", "INPUTS", "RESULT", "LOG"):
            assert column not in read, sql
        assert not (read.strip() == "SELECT *" and source.startswith("RESULTS")), sql
    assert any(" FROM RUNS WHERE" in sql.upper() for sql in selects)  # runs are read, results are not
    # and what is read of the results comes from an index: no record is looked up in the table
    for sql in selects:
        if " results " in sql:
            plan = " ".join(str(row[-1]) for row in store._db.execute("EXPLAIN QUERY PLAN " + sql))
            assert "COVERING INDEX" in plan and "SCAN results" not in plan, (sql, plan)
    monkeypatch.undo()
    assert {r.nodeid: r.change for r in store.run_results(second.run_id)} == {
        r.nodeid: r.change for r in run.results
    }


def test_the_cache_gives_back_clean_passes_only(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.sqlite")
    cache = HistoryCache(store, "host")
    definition = make_def("a", tmp_path)
    from nixtest.run.inputs import Inputs

    run = store.begin_run("host", "/t", [])
    store.add(run, "host", result("a", "t", "passed", "good"), b"log")
    store.add(run, "host", result("a", "t", "failed", "bad"))
    store.add(run, "host", result("a", "t", "passed", "retried", flaky=True, attempts=2))
    store.add(run, "host", result("a", "t", "passed", "mixed"))
    store.add(run, "host", result("a", "t", "failed", "mixed"))
    store.add(run, "host", result("a", "t", "failed", "timedout", timed_out=True))
    hit = cache.lookup(definition, Inputs("good"))
    assert hit.result is not None and hit.log == b"log" and hit.run_id == str(run)
    for key in ("bad", "retried", "mixed", "timedout", "never"):
        assert cache.lookup(definition, Inputs(key)).result is None, key
    assert cache.lookup(definition, Inputs("mixed")).reason == "flaky: passed and failed with these inputs"


def test_change_words() -> None:
    assert change_of(None, "failed") == "new"
    assert change_of("passed", "failed") == "newly-failing"
    assert change_of("error", "passed") == "newly-succeeding"
    assert change_of("failed", "error") == "still-failing"
    assert change_of("skipped", "passed") == "still-succeeding"
    found, removed = compare(
        [result("a", "x", "failed")],
        Baseline("1", {"a::x": "passed", "a::gone": "passed", "a::kept": "failed"}),
        exists=lambda n: n == "a::kept",
    )
    assert found == {"a::x": "newly-failing"} and removed == ["a::gone"]


def _writer(path: str, run_id: int, n: int) -> None:
    store = HistoryStore(path)
    for i in range(n):
        store.add(run_id, "host", result("p", f"t{i}", "passed", f"k{run_id}-{i}"), b"x" * 1000)


def test_processes_writing_at_once_lose_no_record(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    store = HistoryStore(path)
    runs = [store.begin_run("host", "/t", []) for _ in range(4)]
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(path), r, 50)) for r in runs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    for r in runs:
        assert len(store.run_results(r)) == 50


def _killed_writer(path: str, run_id: int) -> None:
    store = HistoryStore(path)
    i = 0
    while True:
        store.add(run_id, "host", result("p", f"t{i}", "passed", f"k{i}"), os.urandom(20000))
        i += 1


def test_a_killed_writer_leaves_a_consistent_database(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    store = HistoryStore(path)
    run = store.begin_run("host", "/t", [])
    proc = multiprocessing.get_context("spawn").Process(target=_killed_writer, args=(str(path), run))
    proc.start()
    deadline = time.monotonic() + 60
    while len(store.run_results(run)) < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.pid is not None
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    recorded = store.run_results(run)
    assert len(recorded) >= 20
    # every recorded result is whole, its log too
    assert all(len(store.log(r.id) or b"") == 20000 for r in recorded)
    later = store.begin_run("host", "/t", [])
    assert later > run


def _nix_set(folder: Path, greeting: str) -> Path:
    file = folder / "default.nix"
    file.write_text(
        """
        let
          mk = name: script: derivation {
            inherit name;
            system = builtins.currentSystem;
            builder = "/bin/sh";
            args = [ "-c" script ];
          };
        in rec {
          data = mk "data-1.0" "echo GREETING > $out";
          hello = mk "hello-2.12" "echo ${data} > $out";
          other = mk "other-1" "echo other > $out";
        }
        """.replace("GREETING", greeting)
    )
    return file


@pytest.mark.nix
def test_nix_store_paths_key_the_closure_without_building(tmp_path: Path) -> None:
    from nixtest.nix import NixSet

    folder = tmp_path / "set"
    folder.mkdir()
    hello, other = make_def("hello", tmp_path), make_def("other", tmp_path)
    before = NixSet(_nix_set(folder, "hi"), state_dir=tmp_path / "state")
    first = inputs_of(hello, before)
    (path,) = first.packages.values()
    assert path.startswith("/nix/store/") and path.endswith("-hello-2.12")
    assert not os.path.exists(path)  # evaluated, not built
    other_key = inputs_of(other, before).key
    # a change deep in hello's closure gives hello another store path, and so another key
    after = NixSet(_nix_set(folder, "hello"), state_dir=tmp_path / "state")
    second = inputs_of(hello, after)
    assert second.key != first.key
    assert changes(first.parts, second.parts) == [f"hello {path} -> {second.packages['hello']}"]
    assert inputs_of(other, after).key == other_key


def test_the_interpreter_is_an_input_of_python_code_only(tmp_path: Path) -> None:
    prefix = tmp_path / "p"
    prefix.mkdir()
    (tmp_path / "set.yaml").write_text(f"pkg: {{prefix: {prefix}, version: '1'}}\n")
    pset = PrefixSet(tmp_path / "set.yaml")
    script = tmp_path / "pkg" / "check.py"
    script.parent.mkdir()
    script.write_text("print('hi')\n")
    classic = make_def("pkg", tmp_path, kind="classic", run=None, script=script)
    run = make_def("pkg", tmp_path)
    other = "/bin/sh"  # any other real file stands for another interpreter
    assert inputs_of(classic, pset, python=other).key != inputs_of(classic, pset).key
    assert inputs_of(run, pset, python=other).key == inputs_of(run, pset).key
    assert changes(inputs_of(classic, pset).parts, inputs_of(classic, pset, python=other).parts) == [
        f"python {os.path.realpath(sys.executable)} -> {os.path.realpath(other)}"
    ]


def test_the_store_and_the_comparison_depend_on_the_model_only() -> None:
    """history/store.py and compare.py import nothing of nixtest but the model (STYLE.md's layers)."""
    import ast

    import nixtest.history

    allowed = {"nixtest.errors", "nixtest.results", "nixtest.history", "nixtest.history.store"}
    folder = Path(nixtest.history.__file__).parent
    for name in ("store.py", "compare.py", "__init__.py"):
        tree = ast.parse((folder / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("nixtest"):
                assert node.module in allowed, f"history/{name} imports {node.module}"
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("nixtest") for a in node.names), f"history/{name}"


def test_a_database_of_a_newer_nixtest_is_refused_in_one_line(tmp_path: Path) -> None:
    from nixtest.history.store import HistoryError

    path = tmp_path / "h.sqlite"
    HistoryStore(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
    db.commit()
    db.close()
    with pytest.raises(HistoryError) as info:
        HistoryStore(path)
    assert info.value.message == (
        f"{path} was written by a newer nixtest (schema 99, this one reads 1): use another --state folder"
    )


def test_strips_and_listings_read_no_closure(tmp_path: Path) -> None:
    """log.html's strips, `nixtest history` and its page show outcomes: no closure or inputs column read."""
    from nixtest.history.strips import attach_strips, write_history_page
    from nixtest.history.views import runs_lines, test_lines

    store = HistoryStore(tmp_path / "h.sqlite")
    closure = {f"lib{i}": f"1.{i}" for i in range(50)}
    runs = []
    for n in range(3):
        recorder = HistoryRecorder(store, "host", "/t", [], timer=False)
        results = [
            result("a", f"t{i}", "failed" if (i, n) == (1, 2) else "passed", f"k{i}", packages=closure)
            for i in range(5)
        ]
        for r in results:
            recorder.add(r)
        summary = RunSummary(results=results, run_id=str(recorder.run_id))
        recorder.compare(summary, None, lambda nodeid: True)
        recorder.finish(summary)
        runs.append(summary)
    seen = _statements(store)
    attach_strips(runs[-1], store, tmp_path / "out")
    assert [c.outcome for c in runs[-1].strips["a::t1"]] == ["passed", "passed", "failed"]
    assert len(runs_lines(store)) == 3 and "failed" in "\n".join(test_lines(store, "a", "t1"))
    write_history_page(store, tmp_path / "page.html")
    selects = [sql for sql in seen if sql.lstrip().upper().startswith("SELECT")]
    assert selects
    for sql in selects:
        read = sql.upper().partition(" FROM ")[0]
        assert "PACKAGES" not in read and "INPUTS" not in read, sql


def test_strips_are_read_when_a_report_asks_for_them(tmp_path: Path) -> None:
    """log.html reads a test's strip as it writes it: no strip of the run is read ahead and kept."""
    from nixtest.history.strips import attach_strips, prune_strips

    store = HistoryStore(tmp_path / "h.sqlite")
    for n in range(3):
        recorder = HistoryRecorder(store, "host", "/t", [], timer=False)
        results = [
            result("a", f"t{i}", "failed" if (i, n) == (1, 0) else "passed", f"k{i}") for i in range(4)
        ]
        for r in results:
            recorder.add(r)
        summary = RunSummary(results=results, run_id=str(recorder.run_id))
        recorder.finish(summary)
    out = tmp_path / "out"
    old_run = out / "history" / "run-999"
    old_run.mkdir(parents=True)
    seen = _statements(store)
    attach_strips(summary, store, out)
    assert not [sql for sql in seen if "FROM results" in sql], "no strip read before a report asks"
    assert [c.outcome for c in summary.strips["a::t1"]] == ["failed", "passed", "passed"]
    assert (out / "history" / "run-1" / "a" / "t1.log").is_file()  # an earlier failure's log
    reads = len(seen)
    assert summary.strips.get("a::t1") is summary.strips["a::t1"]  # read twice by log.html: once
    assert len(seen) == reads
    assert summary.strips.get("no::such", []) == []
    prune_strips(summary)
    assert old_run.is_dir(), "not every strip was read (no log.html): nothing is pruned"
    for nodeid in summary.strips:
        summary.strips[nodeid]
    prune_strips(summary)
    assert not old_run.exists() and (out / "history" / "run-1").is_dir()
    # a history that cannot be read costs the strips, with one warning, not the report
    warnings: list[str] = []
    attach_strips(summary, store, out, warnings.append)
    store.close()
    assert summary.strips.get("a::t0", []) == [] and summary.strips.get("a::t2", []) == []
    assert len(warnings) == 1 and "cannot read the strips" in warnings[0]


def test_the_cache_and_the_flaky_check_read_an_input_keys_outcomes_from_an_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A warm run asks the cache for every test: it reads the key's outcomes from a covering
    index, and one record (the hit's), not every record of the key (each run adds one)."""
    from nixtest.history import store as store_module
    from nixtest.run.inputs import Inputs

    store = HistoryStore(tmp_path / "h.sqlite")
    for n in range(5):
        run = store.begin_run("host", "/t", [])
        store.add(run, "host", result("a", "t", "passed", "same", cached=n == 4), b"log %d" % n)
        store.finish_run(run, interrupted=False, baseline=None)
    plan = store._db.execute(
        "EXPLAIN QUERY PLAN SELECT count(*), max(outcome = 'passed'), max(flaky), max(outcome != 'passed') "
        "FROM results WHERE input_key = ?",
        ("same",),
    ).fetchall()
    assert "COVERING INDEX results_key_outcome" in " ".join(str(row[-1]) for row in plan)
    decoded: list[int] = []
    real = store_module._result_record
    monkeypatch.setattr(store_module, "_result_record", lambda row, *a: decoded.append(1) or real(row, *a))
    answer = HistoryCache(store, "host").lookup(make_def("a", tmp_path), Inputs(key="same"))
    assert answer.result is not None and answer.run_id == "4"  # the latest pass that ran, not the cached one
    assert answer.log == b"log 3"
    assert decoded == []
    # a database made before the index gets it when opened
    store._db.execute("DROP INDEX results_key_outcome")
    store.close()
    again = HistoryStore(tmp_path / "h.sqlite")
    assert again._has_index("results_key_outcome")


def test_a_strip_is_read_from_the_strip_index_alone(tmp_path: Path) -> None:
    """A strip's records come from a covering index, not the table (where a record's time
    lies after its closure); a database made before it gets it, instead of results_test."""
    path = tmp_path / "h.sqlite"
    store = HistoryStore(path)
    for n in range(3):
        run = store.begin_run("host", "/t", [])
        bad = n == 1
        store.add(run, "host", result("a", "t", "failed" if bad else "passed", f"k{n}", message="<m>" * bad))
        store.finish_run(run, interrupted=False, baseline=None)
    seen = _statements(store)
    records = store.strip_records("a", "t", "host", limit=2)
    assert [(r.run_id, r.outcome, r.message) for r in records] == [(3, "passed", ""), (2, "failed", "<m>")]
    assert records[1].is_bad and not records[0].is_bad
    (sql,) = [s for s in seen if s.lstrip().upper().startswith("SELECT")]
    plan = store._db.execute("EXPLAIN QUERY PLAN " + sql).fetchall()
    assert "COVERING INDEX results_strip" in " ".join(str(row[-1]) for row in plan)
    # a database of an earlier nixtest: results_test and results_run instead
    store._db.execute("DROP INDEX results_strip")
    store._db.execute("DROP INDEX results_run_outcome")
    store._db.execute("CREATE INDEX results_test ON results (package, test, set_spec)")
    store._db.execute("CREATE INDEX results_run ON results (run_id)")
    store.close()
    again = HistoryStore(path)
    assert again._has_index("results_strip") and not again._has_index("results_test")
    assert again._has_index("results_run_outcome") and not again._has_index("results_run")
    assert again.strip_records("a", "t", "host") == store_records_of(path)


def store_records_of(path: Path) -> list[object]:
    """The strip records of a::t read with plain SQL from the table, for comparison."""
    import sqlite3

    from nixtest.history.store import StripRecord

    db = sqlite3.connect(path)
    try:
        rows = db.execute(
            "SELECT id, run_id, package, test, outcome, cached, flaky, duration, message, recorded "
            "FROM results NOT INDEXED WHERE package = 'a' AND test = 't' AND set_spec = 'host' "
            "ORDER BY id DESC"
        ).fetchall()
    finally:
        db.close()
    return [StripRecord._make(row) for row in rows]
