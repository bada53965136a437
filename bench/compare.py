"""nixtest side by side with what it is measured against, in one run.

    /opt/nixtest/bin/python bench/compare.py                # everything (a few minutes)
    /opt/nixtest/bin/python bench/compare.py --parts host,kinds --repeat 3

Parts (``--parts``, comma-separated; default all):

host
    one ``run: "true"`` test per installed host package, warm, ``-j 2``,
    against the shell floor (``xargs -P2``: fresh dir, ``env -i``,
    ``sh -c true``, ``rm -rf``; see run_overhead.py) and the pytest +
    subprocess peer (a parametrized test per package running ``sh -c true``
    in ``tmp_path`` with the profile's variables, serial and ``-n 2``); and
    nixtest itself over pytest-xdist's workers, ``-n 2 -j 1`` and ``-n 2 -j 2``.
cold
    the same run from an empty state folder (every profile built), against
    the shell floor: the profile build is the cold run minus the warm one.
kinds
    per test, warm, ``-j 1``, each kind of test against the bare process
    doing the same check: ``run:`` + ``expect`` (``sh -c 'echo hi' | grep``),
    ``imports:`` (``python3 -c 'import zlib'``), a classic script and a
    pytest module (``python3 -I -c`` running ``true`` with subprocess).  The
    cost per test is the difference between a run of ``--kind-n`` tests and a
    run of one, divided by the difference, so start-up is not counted.  The
    same is given in CPU time (user + system of every process of each side),
    which a loaded machine disturbs less.
scale
    12 tests per installed package (10,000 on a machine with 842), warm,
    ``-j 2``, against a run of about 700: cost per test and the nixtest
    process's peak RSS; then the big run again, whose history compares it
    with the big run before it (peak RSS with a baseline).

Every figure is the median of ``--repeat`` runs, the sides alternating, so
that a loaded machine weighs on both.  ``--json FILE`` writes them all.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_overhead import (  # noqa: E402
    BASELINE_TEST,
    installed_packages,
    machine,
    nixtest_command,
    profiles_of,
)

JOBS = 2
PARTS = ("host", "cold", "kinds", "scale")

#: the pytest + subprocess peer: what a user writes by hand instead of nixtest
PEER = """\
import os
import subprocess

import pytest

PROFILES = [line for line in open(os.environ["PEER_PROFILES"]).read().splitlines() if line]


@pytest.mark.parametrize("profile", PROFILES)
def test_package(profile, tmp_path):
    env = {
        "PATH": f"{profile}/bin", "HOME": str(tmp_path), "TMPDIR": str(tmp_path),
        "LD_LIBRARY_PATH": f"{profile}/lib", "PKG_CONFIG_PATH": f"{profile}/lib/pkgconfig",
        "NIX_LDFLAGS": f"-L {profile}/lib", "NIX_CFLAGS_COMPILE": f"-I {profile}/include",
    }
    subprocess.run(["/bin/sh", "-c", "true"], cwd=tmp_path, env=env, check=True)
"""

#: each kind of test: (tests.yaml entry, extra files, the bare command doing the same check)
KINDS: dict[str, tuple[str, dict[str, str], str]] = {
    "run+expect": ("{run: 'echo hi', expect: {stdout: '^hi$'}}", {}, "sh -c 'echo hi' | grep -q '^hi$'"),
    "imports": ("{imports: [zlib], profile: [python3]}", {}, "/usr/bin/python3 -c 'import zlib'"),
    "classic script": (
        "{script: classic.py, profile: [python3, coreutils]}",
        {"classic.py": "from plumbum.cmd import true\ntrue & succeeds('true')\n"},
        "/usr/bin/python3 -I -c 'import subprocess; subprocess.run([\"true\"], check=True)'",
    ),
    "pytest module": (
        "{script: test_module.py, profile: [python3, coreutils]}",
        {"test_module.py": "import subprocess\n\n\ndef test_true():\n    subprocess.run(['true'])\n"},
        "/usr/bin/python3 -I -c 'import subprocess; subprocess.run([\"true\"], check=True)'",
    ),
}


#: CPU seconds (user + system) of each `timed` command and all it waited for, in order
CPU_SPENT: list[float] = []


def timed(argv: list[str], cwd: Path, env: dict[str, str] | None = None, log: Path | None = None) -> float:
    """Seconds `argv` took; exits the benchmark if it failed.  Its CPU time goes to CPU_SPENT."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(log or os.devnull, "wb") as out:
        start = time.perf_counter()
        code = subprocess.run(
            argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, check=False
        ).returncode
        seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU_SPENT.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    if code != 0:
        tail = log.read_text(errors="replace")[-3000:] if log else ""
        raise SystemExit(f"compare: {' '.join(argv[:6])}... exited {code}\n{tail}")
    return seconds


def peak_rss(argv: list[str], cwd: Path, log: Path) -> tuple[float, int]:
    """(seconds, the largest resident set among the processes of `argv`, KiB), from a helper of its own."""
    helper = (
        "import resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        f"code = subprocess.run({argv!r}, stdout=open({str(log)!r}, 'wb'),"
        " stderr=subprocess.STDOUT).returncode\n"
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code)\n"
    )
    done = subprocess.run([sys.executable, "-c", helper], cwd=cwd, capture_output=True, text=True, check=True)
    seconds, rss, code = done.stdout.split()
    if code != "0":
        raise SystemExit(
            f"compare: {' '.join(argv[:6])}... exited {code}\n{log.read_text(errors='replace')[-3000:]}"
        )
    return float(seconds), int(rss)


def median_of(repeat: int, *sides: Callable[[], float]) -> list[float]:
    """Each side run `repeat` times, alternating; the median of each."""
    times: list[list[float]] = [[] for _ in sides]
    for _ in range(repeat):
        for i, side in enumerate(sides):
            times[i].append(side())
    return [statistics.median(t) for t in times]


class Bench:
    def __init__(self, root: Path, repeat: int) -> None:
        self.root = root
        self.repeat = repeat
        self.state = root / "state"
        self.packages = installed_packages()
        self.n = len(self.packages)
        self.results: dict[str, object] = {"machine": machine(), "load_before": os.getloadavg()}
        self.host_tests = root / "host_tests"
        for package in self.packages:
            (self.host_tests / package).mkdir(parents=True)
            (self.host_tests / package / "tests.yaml").write_text('tests:\n  noop:\n    run: "true"\n')
        self.profiles = root / "profiles.txt"

    def nixtest(self, tests: Path, out: Path, *extra: str, state: Path | None = None) -> list[str]:
        argv = [*nixtest_command(), "run", "--tests", str(tests), "--out", str(out)]
        # --no-cache: every test runs (a recorded pass of the same inputs would not)
        return argv + ["--state", str(state or self.state), "--no-cache", *extra]

    def floor(self) -> float:
        argv = ["xargs", "-P", str(JOBS), "-n", "1", "-d", "\n", "-a", str(self.profiles)]
        argv += ["/bin/sh", "-c", BASELINE_TEST, "floor"]
        scratch = self.root / "floor-tmp"
        scratch.mkdir(exist_ok=True)
        return timed(argv, self.root, env={"PATH": "/usr/bin:/bin", "TMPDIR": str(scratch)})

    def warm_up(self) -> float:
        if self.profiles.exists():
            return 0.0
        out = self.root / "warm-up-out"
        seconds = timed(
            self.nixtest(self.host_tests, out, "-j", str(JOBS)), self.root, log=self.root / "warm-up.log"
        )
        self.profiles.write_text("\n".join(profiles_of(out, self.packages)) + "\n")
        return seconds

    # -- parts ------------------------------------------------------------------

    def host(self) -> None:
        self.warm_up()
        peer = self.root / "peer"
        peer.mkdir(exist_ok=True)
        (peer / "test_peer.py").write_text(PEER)
        env = {**os.environ, "PEER_PROFILES": str(self.profiles)}
        pytest = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:nixtest",
            "test_peer.py",
        ]
        out = self.root / "out"
        nix, floor, peer1, peer2, xdist1, xdist2 = median_of(
            self.repeat,
            lambda: timed(self.nixtest(self.host_tests, out, "-j", str(JOBS)), self.root),
            self.floor,
            lambda: timed(pytest, peer, env=env),
            lambda: timed([*pytest, "-n", str(JOBS)], peer, env=env),
            # pytest-xdist's workers, one test at a time in each, then JOBS in each
            lambda: timed(self.nixtest(self.host_tests, out, "-n", str(JOBS), "-j", "1"), self.root),
            lambda: timed(self.nixtest(self.host_tests, out, "-n", str(JOBS), "-j", str(JOBS)), self.root),
        )
        best_peer = min(peer1, peer2)
        self.results["host"] = {
            "tests": self.n,
            "nixtest_s": nix,
            "floor_s": floor,
            "peer_serial_s": peer1,
            "peer_n2_s": peer2,
            "vs_floor": nix / floor,
            "vs_peer": nix / best_peer,
            "nixtest_n2_j1_s": xdist1,
            "nixtest_n2_j2_s": xdist2,
        }
        print(f"\nhost: {self.n} run: 'true' tests, warm, -j {JOBS} (median of {self.repeat})")
        print(f"  nixtest                      {nix:7.2f} s  {1000 * nix / self.n:6.2f} ms/test")
        print(f"  shell floor (xargs -P{JOBS})      {floor:7.2f} s  {1000 * floor / self.n:6.2f} ms/test")
        print(f"  pytest + subprocess          {peer1:7.2f} s  (serial)")
        print(f"  pytest + subprocess -n {JOBS}     {peer2:7.2f} s")
        print(f"  nixtest -n {JOBS} -j 1             {xdist1:7.2f} s  (pytest-xdist, one at a time a worker)")
        print(f"  nixtest -n {JOBS} -j {JOBS}             {xdist2:7.2f} s  ({JOBS} at a time in each worker)")
        print(
            f"  nixtest / floor {nix / floor:5.2f} (target <= 1.5)"
            f"   nixtest / best peer {nix / best_peer:5.2f} (<= 1.0)"
        )

    def cold(self) -> None:
        self.warm_up()
        colds: list[float] = []
        warms: list[float] = []
        floors: list[float] = []
        for i in range(self.repeat):
            state = self.root / f"cold-state-{i}"
            colds.append(
                timed(
                    self.nixtest(self.host_tests, self.root / "cold-out", "-j", str(JOBS), state=state),
                    self.root,
                )
            )
            warms.append(
                timed(
                    self.nixtest(self.host_tests, self.root / "cold-out", "-j", str(JOBS), state=state),
                    self.root,
                )
            )
            floors.append(self.floor())
        # Removed only now: on this ext4 (no journal) a new inode skips every one
        # freed in the last 30 s or so, one buffer lookup each, so removing the
        # 76,000 entries of a cold state made the next cold run's build several
        # times slower.
        for i in range(self.repeat):
            shutil.rmtree(self.root / f"cold-state-{i}", ignore_errors=True)
        cold, warm, floor = (statistics.median(x) for x in (colds, warms, floors))
        build = cold - warm
        self.results["cold"] = {
            "tests": self.n,
            "cold_s": cold,
            "warm_s": warm,
            "build_s": build,
            "floor_s": floor,
        }
        print(f"\ncold: {self.n} tests from an empty state folder, -j {JOBS} (median of {self.repeat})")
        print(f"  cold run {cold:6.2f} s, warm run {warm:6.2f} s: profiles {build:6.2f} s")
        print(f"  shell floor {floor:6.2f} s;  profiles / floor {build / floor:5.2f} (target <= 2.0)")

    def kinds(self, count: int) -> None:
        self.warm_up()
        print(
            f"\nkinds: cost per test, warm, -j 1 ((T({count}) - T(1)) / {count - 1}; median of {self.repeat})"
        )
        rows = {}
        for kind, (entry, files, bare) in KINDS.items():
            per = {}
            for n in (1, count):
                tests = self.root / f"kind-{kind.replace(' ', '-')}-{n}"
                package = "python3"
                folder = tests / package
                folder.mkdir(parents=True, exist_ok=True)
                (folder / "tests.yaml").write_text(
                    "tests:\n" + "".join(f"  t{i}: {entry}\n" for i in range(n))
                )
                for name, text in files.items():
                    (folder / name).write_text(text)
                per[n] = tests
            timed(self.nixtest(per[1], self.root / "kind-out", "-j", "1"), self.root)  # its profile
            loop = f"i=0; while [ $i -lt {count} ]; do {bare} || exit 1; i=$((i+1)); done"
            many_argv = self.nixtest(per[count], self.root / "kind-out", "-j", "1")
            one_argv = self.nixtest(per[1], self.root / "kind-out", "-j", "1")
            bare_argv = ["/bin/sh", "-c", loop]
            first = len(CPU_SPENT)
            nix_many, nix_one, bare_many = median_of(
                self.repeat,
                lambda: timed(many_argv, self.root),  # noqa: B023 - called before the loop goes on
                lambda: timed(one_argv, self.root),  # noqa: B023
                # the host's own tools, as the tests' profiles have them (not a pyenv shim)
                lambda: timed(bare_argv, self.root, env={"PATH": "/usr/bin:/bin"}),  # noqa: B023
            )
            nix = (nix_many - nix_one) / (count - 1)
            plain = bare_many / count
            # CPU time, which a loaded machine disturbs less than the time on the clock
            # (all processes of each side, the pytest process's too; sides alternate)
            cpu = [statistics.median(CPU_SPENT[first + side :: 3]) for side in range(3)]
            nix_cpu = (cpu[0] - cpu[1]) / (count - 1)
            plain_cpu = cpu[2] / count
            rows[kind] = {
                "nixtest_ms": 1000 * nix,
                "bare_ms": 1000 * plain,
                "ratio": nix / plain,
                "nixtest_cpu_ms": 1000 * nix_cpu,
                "bare_cpu_ms": 1000 * plain_cpu,
                "cpu_ratio": nix_cpu / plain_cpu,
            }
            target = 3.0 if kind == "pytest module" else 1.5
            print(
                f"  {kind:15} nixtest {1000 * nix:7.1f} ms   bare {1000 * plain:6.1f} ms"
                f"   ratio {nix / plain:5.2f} (<= {target})"
                f"   CPU {1000 * nix_cpu:6.1f} / {1000 * plain_cpu:5.1f} ms = {nix_cpu / plain_cpu:5.2f}"
            )
        self.results["kinds"] = rows

    def scale(self, per_package: int, small: int) -> None:
        self.warm_up()
        big = self.root / "scale-big"
        for package in self.packages:
            (big / package).mkdir(parents=True, exist_ok=True)
            entries = "".join(f'  t{i}:\n    run: "true"\n' for i in range(per_package))
            (big / package / "tests.yaml").write_text("tests:\n" + entries)
        n_big = per_package * self.n
        small_packages = self.packages[: max(1, small // per_package)]
        little = self.root / "scale-small"
        for package in small_packages:
            shutil.copytree(big / package, little / package)
        n_small = per_package * len(small_packages)
        out = self.root / "scale-out"
        log = self.root / "scale.log"
        runs = {}
        # "rerun": the big run again, compared with the big run before it (the default
        # baseline): the history reads the last run's outcomes for every test
        order = (("small", little, n_small), ("big", big, n_big), ("rerun", big, n_big))
        for name, tests, n in order:
            times, rss = [], []
            for _ in range(self.repeat if name == "small" else 1):
                seconds, peak = peak_rss(self.nixtest(tests, out, "-j", str(JOBS)), self.root, log)
                times.append(seconds)
                rss.append(peak)
            runs[name] = {"tests": n, "seconds": statistics.median(times), "peak_rss_mib": max(rss) / 1024}
            runs[name]["ms_per_test"] = 1000 * runs[name]["seconds"] / n
        ratio = runs["big"]["ms_per_test"] / runs["small"]["ms_per_test"]
        self.results["scale"] = {**runs, "per_test_ratio": ratio}
        print(f"\nscale: run: 'true' tests, warm, -j {JOBS}")
        for name in ("small", "big", "rerun"):
            r = runs[name]
            print(
                f"  {r['tests']:6} tests  {r['seconds']:7.2f} s  {r['ms_per_test']:6.2f} ms/test"
                f"  peak RSS {r['peak_rss_mib']:6.1f} MiB"
                + ("  (again, against the run before)" if name == "rerun" else "")
            )
        print(f"  per-test cost {n_big} / {n_small}: {ratio:5.2f} (target <= 1.2); peak RSS target < 200 MiB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each side (default 3)")
    parser.add_argument(
        "--kind-n", type=int, default=40, help="tests per kind in the kinds part (default 40)"
    )
    parser.add_argument(
        "--scale-per-package", type=int, default=12, help="tests per package at scale (default 12)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to FILE")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown or args.repeat < 1 or args.kind_n < 2:
        parser.error(f"unknown parts {sorted(unknown)}" if unknown else "--repeat >= 1 and --kind-n >= 2")
    root = Path(tempfile.mkdtemp(prefix="nixtest-compare-"))
    os.chmod(root, 0o755)
    start = time.perf_counter()
    try:
        bench = Bench(root, args.repeat)
        print(
            f"{bench.n} installed host packages; load average {os.getloadavg()[0]:.2f};"
            f" nproc {os.cpu_count()}"
        )
        print(f"warm-up (builds every profile): {bench.warm_up():.1f} s", flush=True)
        for part in parts:
            if part == "host":
                bench.host()
            elif part == "cold":
                bench.cold()
            elif part == "kinds":
                bench.kinds(args.kind_n)
            elif part == "scale":
                bench.scale(args.scale_per_package, 700)
            sys.stdout.flush()
        bench.results["load_after"] = os.getloadavg()
        bench.results["seconds"] = time.perf_counter() - start
        print(
            f"\nload average after: {os.getloadavg()[0]:.2f};"
            f" the benchmark took {time.perf_counter() - start:.0f} s"
        )
        if args.json:
            args.json.write_text(json.dumps(bench.results, indent=2, default=float) + "\n")
        return 0
    finally:
        if args.keep:
            print(f"compare: kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
