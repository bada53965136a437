"""nixtest's per-test overhead against a minimal shell doing the same work.

Generates, in a temporary folder, N trivial package tests (``run: "true"``),
one for each of N installed dpkg packages, runs ``nixtest run -j 2`` once to
build the profiles, then times warm ``nixtest run -j 2`` runs.  The baseline
does what every such test needs and nothing else, two at a time under
``xargs -P2``: a fresh directory (``mktemp -d``), a cleared environment set
from the package's profile (``env -i PATH=<profile>/bin HOME=<dir> ...``),
``/bin/sh -c true`` in it, and ``rm -rf`` of the directory.  Both are timed
as the median of ``--repeat`` runs.

    /opt/nixtest/bin/python bench/run_overhead.py --n 500

Prints both times, the cost per test and their ratio; ``--json FILE`` also
writes them as JSON.  Exit code 0 when every nixtest test passed, else 1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

#: a Debian package name (policy 5.6.1); nixtest takes it as a folder name as is
PACKAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
#: the name of each generated test (`true:` would be read by YAML as a boolean)
TEST_NAME = "noop"
JOBS = 2

#: one baseline test: $1 is the profile.  The same variables as a nixtest test gets.
BASELINE_TEST = r"""
d=$(mktemp -d) || exit 1
cd "$d" || exit 1
env -i PATH="$1/bin" HOME="$d" TMPDIR="$d" LD_LIBRARY_PATH="$1/lib" \
    PKG_CONFIG_PATH="$1/lib/pkgconfig" NIX_LDFLAGS="-L $1/lib" NIX_CFLAGS_COMPILE="-I $1/include" \
    /bin/sh -c true
rc=$?
cd / && rm -rf "$d"
exit $rc
"""


@dataclass
class Result:
    n: int
    jobs: int
    repeat: int
    nixtest_times: list[float]
    baseline_times: list[float]
    nixtest_median: float
    baseline_median: float
    nixtest_per_test_ms: float
    baseline_per_test_ms: float
    ratio: float
    warmup_seconds: float
    machine: dict[str, str]


def installed_packages() -> list[str]:
    """Installed dpkg packages whose names nixtest can use, sorted."""
    out = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package}\t${Status}\n"],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "LC_ALL": "C"},
    ).stdout
    names = set()
    for line in out.splitlines():
        name, _, status = line.partition("\t")
        if status.split()[1:] == ["ok", "installed"] and PACKAGE_NAME.match(name):
            names.add(name)
    return sorted(names)


def pick(names: list[str], n: int) -> list[str]:
    """`n` names spread evenly over the sorted list (all of them if there are fewer)."""
    if n >= len(names):
        return list(names)
    step = len(names) / n
    return [names[int(i * step)] for i in range(n)]


def generate(tests_dir: Path, packages: list[str]) -> None:
    for package in packages:
        folder = tests_dir / package
        folder.mkdir(parents=True)
        (folder / "tests.yaml").write_text(f'tests:\n  {TEST_NAME}:\n    run: "true"\n', encoding="utf-8")


def nixtest_command() -> list[str]:
    """The `nixtest` console script beside this interpreter, else `python -m nixtest.cli`."""
    script = Path(sys.executable).parent / "nixtest"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "nixtest.cli"]


def run_nixtest(workdir: Path, tests_dir: Path, out: Path, state: Path, log: Path) -> tuple[float, int]:
    """One `nixtest run -j 2`: (seconds, exit code); its output goes to `log`."""
    if out.exists():
        shutil.rmtree(out)
    argv = [*nixtest_command(), "run", "-j", str(JOBS), "--tests", str(tests_dir), "--out", str(out)]
    # --no-cache: every test runs (a recorded pass of the same inputs would not)
    argv += ["--state", str(state), "--no-cache"]
    with open(log, "wb") as f:
        start = time.perf_counter()
        code = subprocess.run(argv, cwd=workdir, stdout=f, stderr=subprocess.STDOUT, check=False).returncode
        return time.perf_counter() - start, code


def profiles_of(out: Path, packages: list[str]) -> list[str]:
    """Each test's profile, read from the wrapper nixtest wrote for it."""
    profiles = []
    for package in packages:
        wrapper = out / "rerun" / package / TEST_NAME
        match = re.search(r"^nt_profile=(.*)$", wrapper.read_text(encoding="utf-8"), re.MULTILINE)
        if match is None:
            raise SystemExit(f"run_overhead: no nt_profile= line in {wrapper}")
        profiles.append(shlex.split(match.group(1))[0])
    return profiles


def run_baseline(profile_list: Path, tmpdir: Path) -> float:
    argv = ["xargs", "-P", str(JOBS), "-n", "1", "-d", "\n", "-a", str(profile_list)]
    argv += ["/bin/sh", "-c", BASELINE_TEST, "baseline"]
    env = {"PATH": "/usr/bin:/bin", "TMPDIR": str(tmpdir)}
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"run_overhead: the baseline failed (xargs exited {proc.returncode})")
    return seconds


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500, help="number of package tests (default 500)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each (default 3)")
    parser.add_argument("--state", type=Path, help="nixtest state folder to use (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder and print its path")
    parser.add_argument("--json", type=Path, help="also write the figures to this file as JSON")
    args = parser.parse_args(argv)
    if args.n < 1 or args.repeat < 1:
        parser.error("--n and --repeat must be at least 1")

    names = installed_packages()
    packages = pick(names, args.n)
    if len(packages) < args.n:
        print(f"run_overhead: only {len(packages)} usable packages installed", file=sys.stderr)

    root = Path(tempfile.mkdtemp(prefix="nixtest-bench-"))
    try:
        tests_dir, out, log = root / "package_tests", root / "out", root / "nixtest.log"
        state = Path(os.path.abspath(args.state)) if args.state else root / "state"
        scratch = root / "tmp"
        scratch.mkdir()
        generate(tests_dir, packages)
        n = len(packages)

        print(f"warm-up: nixtest run -j {JOBS} on {n} package tests (builds the profiles)...", flush=True)
        warmup, code = run_nixtest(root, tests_dir, out, state, log)
        if code != 0:
            print(log.read_text(errors="replace")[-3000:], file=sys.stderr)
            print(f"run_overhead: the warm-up run exited {code}; log: {log}", file=sys.stderr)
            args.keep = True
            return 1
        profile_list = root / "profiles.txt"
        profile_list.write_text("\n".join(profiles_of(out, packages)) + "\n", encoding="utf-8")

        nixtest_times: list[float] = []
        baseline_times: list[float] = []
        for i in range(args.repeat):
            seconds, code = run_nixtest(root, tests_dir, out, state, log)
            if code != 0:
                print(f"run_overhead: nixtest run exited {code}; log: {log}", file=sys.stderr)
                args.keep = True
                return 1
            nixtest_times.append(seconds)
            baseline_times.append(run_baseline(profile_list, scratch))
            line = f"run {i + 1}: nixtest {nixtest_times[-1]:.2f} s, baseline {baseline_times[-1]:.2f} s"
            print(line, flush=True)

        nix_med = statistics.median(nixtest_times)
        base_med = statistics.median(baseline_times)
        result = Result(
            n=n,
            jobs=JOBS,
            repeat=args.repeat,
            nixtest_times=[round(t, 3) for t in nixtest_times],
            baseline_times=[round(t, 3) for t in baseline_times],
            nixtest_median=round(nix_med, 3),
            baseline_median=round(base_med, 3),
            nixtest_per_test_ms=round(1000 * nix_med / n, 2),
            baseline_per_test_ms=round(1000 * base_med / n, 2),
            ratio=round(nix_med / base_med, 2),
            warmup_seconds=round(warmup, 2),
            machine=machine(),
        )
        print()
        print(f"{n} tests, -j {JOBS} / xargs -P{JOBS}, median of {args.repeat} (warm-up {warmup:.1f} s)")
        print(f"  nixtest   {nix_med:8.2f} s  {result.nixtest_per_test_ms:7.2f} ms/test")
        print(f"  baseline  {base_med:8.2f} s  {result.baseline_per_test_ms:7.2f} ms/test")
        print(f"  ratio     {result.ratio:8.2f}")
        if args.json:
            args.json.write_text(json.dumps(asdict(result), indent=2) + "\n", encoding="utf-8")
        return 0
    finally:
        if args.keep:
            print(f"run_overhead: kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
