"""The pytest process's bookkeeping per test, timed piece by piece, without running any test.

    /opt/nixtest/bin/python bench/mainloop.py                 # one test per installed package
    /opt/nixtest/bin/python bench/mainloop.py --per-package 12 --repeat 3

For N `run: "true"` tests of the installed host packages it times, in this one
process, what `nixtest run` does for each test besides its profile and its
processes: reading the definitions (`load_package`, the core of collection),
the input key (`inputs_of`), writing the wrappers (into an empty folder, then
again over identical ones, as a warm run does), recording the results in the
history (`HistoryRecorder.add` for each, then the comparison and the end of the
run, twice: the second run has the first as its baseline), and writing the
reports.  Each figure is CPU time (`time.process_time`: every thread of the
process, so the history's commit thread counts too), the median of
`--repeat`, in ms a test.  The results are real `TestResult`s with the input
key's parts and closure of each test, as a run makes them.

Run it with another checkout first on `PYTHONPATH` to time that one's code side by side.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_overhead import installed_packages  # noqa: E402

import nixtest  # noqa: E402
from nixtest.definitions import Definition, load_package  # noqa: E402
from nixtest.history.recorder import HistoryRecorder  # noqa: E402
from nixtest.history.store import HistoryStore  # noqa: E402
from nixtest.packagesets import load_set  # noqa: E402
from nixtest.reports import write_reports  # noqa: E402
from nixtest.results import RunSummary, TestResult  # noqa: E402
from nixtest.run.inputs import Inputs, inputs_of  # noqa: E402
from nixtest.wrappers import WrapperPlan, write_wrapper  # noqa: E402


def cpu(work: Callable[[], object]) -> float:
    start = time.process_time()
    work()
    return time.process_time() - start


def one_round(
    root: Path, tests: Path, folders: list[Path], log: Path, note: Callable[[str, float], None]
) -> None:
    """Times each piece once, for every test of `folders`."""
    definitions: list[Definition] = []
    note("definitions (load_package)", cpu(lambda: [definitions.extend(load_package(f)) for f in folders]))
    pset = load_set("host")
    pset.names()  # the dpkg database read: once a run, not per test
    keys: list[Inputs] = []
    note("input key (inputs_of)", cpu(lambda: keys.extend(inputs_of(d, pset) for d in definitions)))
    plans = [WrapperPlan(test=d, profile=root / "profile", python=sys.executable) for d in definitions]
    out = root / "out"
    note("wrappers, new", cpu(lambda: [write_wrapper(p, out) for p in plans]))
    note("wrappers, unchanged", cpu(lambda: [write_wrapper(p, out) for p in plans]))
    results = []
    for d, inputs in zip(definitions, keys):
        now = time.time()
        wrapper = str(out / "rerun" / d.package / d.name)
        results.append(
            TestResult(
                package=d.package,
                test=d.name,
                kind="run",
                command=[wrapper],
                exit_code=0,
                start=now,
                end=now + 0.004,
                wrapper=wrapper,
                log_path=str(log),
                profile=str(root / "profile"),
                input_key=inputs.key,
                inputs=inputs.parts,
                packages=inputs.packages,
                reason="--no-cache",
            )
        )
    store = HistoryStore(root / "history.sqlite")

    def record() -> None:
        recorder = HistoryRecorder(store, "host", str(tests), ["bench"])
        for r in results:
            recorder.add(r)
        run = RunSummary(results=results, out_dir=str(out))
        recorder.compare(run, None, lambda nodeid: True)
        recorder.finish(run)

    note("history, first run", cpu(record))
    note("history, run with a baseline", cpu(record))
    run = RunSummary(results=results, out_dir=str(out), start=time.time(), end=time.time() + 1)
    note("reports (write_reports)", cpu(lambda: write_reports(run, out)))
    store.close()
    shutil.rmtree(out)
    os.unlink(root / "history.sqlite")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-package", type=int, default=1, help="tests per installed package (default 1)")
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds (default 3)")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="nixtest-mainloop-"))
    try:
        packages = installed_packages()
        tests = root / "tests"
        names = [f"t{i}" for i in range(args.per_package)]
        for package in packages:
            (tests / package).mkdir(parents=True)
            body = "".join(f'  {name}:\n    run: "true"\n' for name in names)
            (tests / package / "tests.yaml").write_text(f"tests:\n{body}", encoding="utf-8")
        folders = sorted(tests.iterdir())
        n = len(folders) * args.per_package
        log = root / "a.log"
        log.write_text("ok\n")
        figures: dict[str, list[float]] = {}

        def note(name: str, seconds: float) -> None:
            figures.setdefault(name, []).append(1000 * seconds / n)

        for _ in range(args.repeat):
            one_round(root, tests, folders, log, note)
        print(
            f"{n} tests ({len(folders)} packages x {args.per_package}), nixtest from "
            f"{os.path.dirname(os.path.dirname(nixtest.__file__))}; "
            f"CPU ms a test, median of {args.repeat}; load average {os.getloadavg()[0]:.2f}"
        )
        total = 0.0
        for name, values in figures.items():
            value = statistics.median(values)
            total += value
            print(f"  {name:32} {value:7.3f}")
        print(f"  {'all of it':32} {total:7.3f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
