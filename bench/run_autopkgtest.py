"""Real autopkgtest suites run by nixtest and by Debian's ``autopkgtest --- null``, side by side.

Fetches small suites of installed packages with ``nixtest sources`` (or takes
the trees already in ``--suites DIR``), then times, as root:

* ``nixtest run --tests DIR`` once cold (profiles built) and ``--repeat``
  times warm (the median is reported), and
* ``autopkgtest --no-built-binaries SRCDIR -- null`` for each source, one
  after the other, summed.

Both run the same tests; the outcomes of each are printed with the times, so
that a difference in speed is never a difference in work.  ``--markdown FILE``
appends the figures as a section to FILE (``docs/benchmark.md``), replacing an
earlier section of the same title.

    /opt/nixtest/bin/python bench/run_autopkgtest.py --markdown docs/benchmark.md

Debian's tool installs and purges a package for each test and may change the
machine: run this on a machine you can throw away, as root.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from autopkgtest_suites import autopkgtest_outcomes, nixtest_outcomes, run_autopkgtest  # noqa: E402

SOURCES = ["ed", "gzip", "hello", "less", "mawk"]
TITLE = "## autopkgtest suites: nixtest and `autopkgtest --- null`"


def nixtest(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nixtest.cli", *args], capture_output=True, text=True, env=env, check=False
    )


def timed_nixtest(suites: Path, out: Path, env: dict[str, str], *extra: str) -> float:
    start = time.perf_counter()
    # --no-cache: every run runs every test (a recorded pass would be taken from the history)
    done = nixtest("run", "--no-cache", "--tests", str(suites), "--out", str(out), *extra, env=env)
    elapsed = time.perf_counter() - start
    if done.returncode not in (0, 1):
        raise SystemExit(f"nixtest run exited {done.returncode}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return elapsed


#: source, tests, autopkgtest's seconds
Row = tuple[str, int, float]


def section(
    rows: list[Row], cold: float, warm: float, serial: float, theirs: float, outcomes: str, load: str
) -> str:
    tests = sum(r[1] for r in rows)
    lines = [
        TITLE,
        "",
        f"`bench/run_autopkgtest.py` on {platform.node() or 'this machine'} ({os.cpu_count()} CPUs, "
        f"{time.strftime('%Y-%m-%d', time.gmtime())}): the suites of {', '.join(r[0] for r in rows)}, "
        f"fetched by `nixtest sources`, {tests} tests, as root.  nixtest: one `nixtest run` of every "
        "suite (warm: the median of the repeats, its profiles built; cold: the first run, building them). "
        "autopkgtest: `autopkgtest --no-built-binaries SRCDIR -- null` per source, one after the other. "
        f"Load average before the run: {load} (the machine is shared).",
        "",
        "| source | tests | autopkgtest | s a test |",
        "| --- | ---: | ---: | ---: |",
    ]
    for source, count, seconds in rows:
        lines.append(f"| {source} | {count} | {seconds:.1f} s | {seconds / max(count, 1):.1f} s |")
    lines += [
        f"| **all** | {tests} | {theirs:.1f} s | {theirs / max(tests, 1):.1f} s |",
        "",
        "| | time | of autopkgtest's |",
        "| --- | ---: | ---: |",
        f"| `nixtest run`, warm | {warm:.2f} s | {100 * warm / theirs:.1f} % |",
        f"| `nixtest run -j 1`, warm | {serial:.2f} s | {100 * serial / theirs:.1f} % |",
        f"| `nixtest run`, cold | {cold:.2f} s | {100 * cold / theirs:.1f} % |",
        f"| `autopkgtest --- null` | {theirs:.1f} s | 100 % |",
        "",
        f"Outcomes (the same in both: {outcomes}).  Most of autopkgtest's time per test is its testbed "
        "set-up: it builds a dummy package depending on the test's Depends, installs it with dpkg and "
        "apt-get, and purges it afterwards; nixtest builds a profile once per distinct closure and "
        "copies the source tree.  Most of nixtest's warm time is the tests themselves (ed's test suite "
        "is most of it).  A cold run builds one profile per distinct closure: each is the "
        "essential packages' closure and the test's Depends, about 2,000 symlinks and 400 folders "
        "(folders one package fills are linked whole), and on this machine's file system a symlink "
        "costs up to 1 ms under load; the profiles are kept in the state folder, so only the first "
        "run after a package changes pays it.",
        "",
    ]
    return "\n".join(lines)


def write_section(path: Path, text: str) -> None:
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    if TITLE in old:
        head, _, rest = old.partition(TITLE)
        following = rest.find("\n## ")
        old = head.rstrip("\n") + ("\n" + rest[following:] if following >= 0 else "")
    path.write_text(old.rstrip("\n") + "\n\n" + text, encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suites", type=Path, help="unpacked source trees (default: fetch them)")
    parser.add_argument("--repeat", type=int, default=3, help="warm nixtest runs (median)")
    parser.add_argument("--markdown", type=Path, help="append the figures to this file")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run it as root: autopkgtest's null server installs packages")
    work = Path(tempfile.mkdtemp(prefix="nixtest-bench-apt-"))
    env = {**os.environ, "NIXTEST_STATE": str(work / "state")}
    suites = args.suites or work / "suites"
    if args.suites is None:
        done = nixtest("sources", *SOURCES, "--into", str(suites), env=env)
        print(done.stdout, end="")
        if done.returncode != 0:
            raise SystemExit(f"nixtest sources failed:\n{done.stderr}")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    cold = timed_nixtest(suites, work / "out", env)
    warm = statistics.median(timed_nixtest(suites, work / "out", env) for _ in range(args.repeat))
    serial = statistics.median(
        timed_nixtest(suites, work / "out", env, "-j", "1") for _ in range(args.repeat)
    )
    ours = nixtest_outcomes(work / "out" / "junit.xml")
    rows: list[Row] = []
    theirs: dict[str, tuple[str, str]] = {}
    for tree in sorted(p for p in suites.iterdir() if (p / "debian" / "tests" / "control").is_file()):
        source = tree.name.rsplit("-", 1)[0]
        output = work / "autopkgtest" / source
        output.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        run_autopkgtest(tree, output)
        elapsed = time.perf_counter() - start
        found = autopkgtest_outcomes(output / "summary", source)
        theirs.update(found)
        rows.append((source, len(found), elapsed))
        print(f"autopkgtest {source}: {len(found)} tests, {elapsed:.1f} s")
    total = sum(r[2] for r in rows)
    print(f"nixtest: cold {cold:.2f} s, warm {warm:.2f} s, -j 1 {serial:.2f} s; autopkgtest: {total:.1f} s")
    ours_by = {k: v[0] for k, v in ours.items()}
    theirs_by = {k: v[0] for k, v in theirs.items()}
    counts: dict[str, int] = {}
    for outcome in ours_by.values():
        counts[outcome] = counts.get(outcome, 0) + 1
    same = ours_by == theirs_by
    outcomes = ", ".join(f"{n} {o}" for o, n in sorted(counts.items()))
    if not same:
        outcomes += f"; DIFFERENT: nixtest {ours_by}, autopkgtest {theirs_by}"
    print(outcomes)
    if not same:
        # no figures from runs that did not do the same work; the logs say why
        print(f"not the same outcomes: see the logs in {work}/autopkgtest/", file=sys.stderr)
        return 1
    if args.markdown:
        write_section(args.markdown, section(rows, cold, warm, serial, total, outcomes, load))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
