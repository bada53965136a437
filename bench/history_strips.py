"""What the history strips cost a run: log.html's strips and `nixtest history --html`.

Fills, in a temporary folder, a history database with N tests over 20 runs
(every tenth test failing in every other run, each result with a 450-byte
log), then times, for a run of the N tests:

* log.html's strips the first time: `attach_strips`, then every test's strip
  read (its 20 results) and made HTML (`strip_html`), as log.html does, and
  the logs of the earlier failures written to OUT/history/ (N/10 tests x 10
  failing runs);
* a second time: the same logs are there already, only the reads remain;
* `write_history_page`: `nixtest history --html FILE` over the 20 runs.

    /opt/nixtest/bin/python bench/history_strips.py --n 500

Prints the times (median of ``--repeat``).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from nixtest.history.store import HistoryStore
from nixtest.history.strips import attach_strips, write_history_page
from nixtest.reports.strip import strip_html
from nixtest.results import RunSummary, TestResult

RUNS = 20


def fill(store: HistoryStore, n: int) -> str:
    run_id = 0
    for r in range(RUNS):
        run_id = store.begin_run("host", "/tests", ["bench"])
        for i in range(n):
            bad = i % 10 == 0 and r % 2 == 0
            result = TestResult(
                package=f"p{i}",
                test="t",
                outcome="failed" if bad else "passed",
                message="failed at step 1" if bad else "",
                input_key=f"k{i}-{r}",
            )
            store.add(run_id, "host", result, b"a line of the test's output\n" * 16)
        store.finish_run(run_id, interrupted=False, baseline=None)
    return str(run_id)


def once(n: int) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory(prefix="nixtest-bench-strips-") as tmp:
        root = Path(tmp)
        store = HistoryStore(root / "history.sqlite")
        last = fill(store, n)
        run = RunSummary(
            results=[TestResult(package=f"p{i}", test="t", outcome="passed") for i in range(n)], run_id=last
        )
        out = root / "out"
        out.mkdir()
        times = []
        for _ in range(2):
            start = time.perf_counter()
            attach_strips(run, store, out)
            for result in run.results:  # as log.html reads them: each strip once, in order
                strip_html(run.strips[result.nodeid])
            times.append(time.perf_counter() - start)
        start = time.perf_counter()
        write_history_page(store, root / "page" / "history.html")
        times.append(time.perf_counter() - start)
        store.close()
        return times[0], times[1], times[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="tests in each run")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    results = [once(args.n) for _ in range(args.repeat)]
    first, again, page = (statistics.median(r[k] for r in results) for k in range(3))
    print(f"N={args.n}, {RUNS} runs, median of {args.repeat}:")
    print(f"  log.html's strips, first (writes the earlier failures' logs): {first:.3f} s")
    print(f"  log.html's strips, again (logs there already):                {again:.3f} s")
    print(f"  nixtest history --html (write_history_page):                  {page:.3f} s")


if __name__ == "__main__":
    main()
