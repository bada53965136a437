"""What an unchanged rerun costs against the full run it repeats (the history's cache).

Generates, in a temporary folder, a ``prefix:`` package set of P packages
(a chain of dependencies, as a real set has) and N package tests that take
real time (``run: /bin/sleep S``), then times, each with its own state
folder so that nothing is shared between repeats:

* the full run: ``nixtest run`` with an empty history: every test runs;
* the unchanged rerun: ``nixtest run`` again: every test comes from the cache;
* an upgrade: one package's version bumped in the set's YAML file, then
  ``nixtest run``: its tests and those of the packages depending on it run.

    /opt/nixtest/bin/python bench/history_cache.py --n 40 --sleep 0.5

Prints the wall times (median of ``--repeat``) and the rerun/full ratio;
``--json FILE`` also writes them.  Exit code 0 when every run did what it
should (all tests passed; the rerun cached all of them; the upgrade reran
exactly the expected ones), else 1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class Figures:
    n: int
    packages: int
    sleep: float
    repeat: int
    full: list[float]
    rerun: list[float]
    upgrade: list[float]
    upgrade_ran: int
    python: str
    machine: str

    @property
    def ratio(self) -> float:
        return statistics.median(self.rerun) / statistics.median(self.full)


def write_world(root: Path, n: int, packages: int, sleep: float, bumped: int = 0) -> None:
    """pkg0 <- pkg1 <- ... (each depends on the one before); the tests spread over them."""
    prefixes = root / "prefixes"
    lines = []
    for p in range(packages):
        (prefixes / f"pkg{p}" / "bin").mkdir(parents=True, exist_ok=True)
        version = f"1.{bumped if p == packages // 2 else 0}"
        depends = f"[pkg{p - 1}]" if p else "[]"
        lines.append(f'pkg{p}: {{prefix: {prefixes / f"pkg{p}"}, version: "{version}", depends: {depends}}}')
    (root / "set.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for p in range(packages):
        folder = root / "pt" / f"pkg{p}"
        folder.mkdir(parents=True, exist_ok=True)
        tests = [f"  t{i}: {{run: /bin/sleep {sleep}}}" for i in range(n) if i % packages == p]
        (folder / "tests.yaml").write_text("tests:\n" + "\n".join(tests) + "\n", encoding="utf-8")


def nixtest(root: Path, state: Path) -> tuple[float, dict[str, object]]:
    argv = [
        sys.executable,
        "-m",
        "nixtest.cli",
        "run",
        "--tests",
        "pt",
        "--set",
        "prefix:set.yaml",
        "--out",
        "out",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("NIXTEST_")}
    env["NIXTEST_STATE"] = str(state)
    start = time.monotonic()
    done = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True)
    elapsed = time.monotonic() - start
    if done.returncode != 0:
        raise SystemExit(f"nixtest run failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    report: dict[str, object] = json.loads((root / "out" / "report.json").read_text())
    return elapsed, report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40, help="tests")
    parser.add_argument("--packages", type=int, default=8, help="packages in the set")
    parser.add_argument("--sleep", type=float, default=0.5, help="seconds each test takes")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    full: list[float] = []
    rerun: list[float] = []
    upgrade: list[float] = []
    ok = True
    upgrade_ran = 0
    # the bumped package is the middle one: it and every later one (its reverse dependencies) rerun
    expected = sum(1 for i in range(args.n) if i % args.packages >= args.packages // 2)
    for _ in range(args.repeat):
        root = Path(tempfile.mkdtemp(prefix="nixtest-bench-history-"))
        try:
            write_world(root, args.n, args.packages, args.sleep)
            state = root / "state"
            t, report = nixtest(root, state)
            full.append(t)
            counts = report["counts"]
            assert isinstance(counts, dict)
            ok &= counts["passed"] == args.n and counts["cached"] == 0
            t, report = nixtest(root, state)
            rerun.append(t)
            counts = report["counts"]
            assert isinstance(counts, dict)
            ok &= counts["cached"] == args.n
            write_world(root, args.n, args.packages, args.sleep, bumped=1)
            t, report = nixtest(root, state)
            upgrade.append(t)
            counts = report["counts"]
            assert isinstance(counts, dict)
            upgrade_ran = args.n - int(counts["cached"])
            ok &= upgrade_ran == expected
        finally:
            shutil.rmtree(root, ignore_errors=True)
    figures = Figures(
        n=args.n,
        packages=args.packages,
        sleep=args.sleep,
        repeat=args.repeat,
        full=full,
        rerun=rerun,
        upgrade=upgrade,
        upgrade_ran=upgrade_ran,
        python=platform.python_version(),
        machine=f"{platform.machine()}, {os.cpu_count()} CPUs",
    )
    med = statistics.median
    print(f"{args.n} tests of {args.sleep:g} s over {args.packages} packages, median of {args.repeat}:")
    print(f"  full run (empty history):       {med(full):7.2f} s")
    print(f"  unchanged rerun (all cached):   {med(rerun):7.2f} s")
    print(f"  one package upgraded ({upgrade_ran} ran):  {med(upgrade):7.2f} s")
    print(f"  rerun / full: {figures.ratio:.3f}")
    if args.json is not None:
        args.json.write_text(json.dumps({**asdict(figures), "ratio": figures.ratio}, indent=1) + "\n")
    if not ok:
        print("bench: a run did not do what it should (see the counts above)", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
