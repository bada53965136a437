"""OUT/nix-support/: what Hydra reads from a build output.

* hydra-build-products: `report testlog OUT log.html` and `report junit
  OUT/junit.xml`, and `file artifact PATH` for each file an autopkgtest left in
  OUT/artifacts/<source>/<test>/ ($AUTOPKGTEST_ARTIFACTS); OUT absolute,
  following the line format of Hydra's C++ parser (build-result.cc); a
  product whose file is missing is left out.
* hydra-metrics: `NAME VALUE [UNIT]` lines: tests, failures, errors, skipped,
  passed, duration (s), cached, flaky, the comparison with the baseline
  (newly-failing, newly-succeeding, still-failing, still-succeeding, new,
  removed; when there is one) and package.<name>.duration (s).
* failed: exists exactly when a test failed or errored; a stale one from an
  earlier run into the same OUT is removed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from nixtest.reports.text import atomic_write, will_exist
from nixtest.results import RunSummary

#: where autopkgtests leave their artifacts: ARTIFACTS/<source>/<test>/
ARTIFACTS = "artifacts"

#: (type, subtype, file in OUT, default path) of each product, when the file exists
PRODUCTS = [
    ("report", "testlog", "", "log.html"),
    ("report", "junit", "junit.xml", ""),
]

_METRIC_NAME_BAD = re.compile(r"[^a-zA-Z0-9._-]")
# characters that make Hydra's ERE need the quoted form of a path
_NEEDS_QUOTES = re.compile(r"[ \t\v\f<>]")


def product_path(path: str) -> str | None:
    """`path` in the form Hydra's product regex accepts, or None if none does.

    Unquoted paths may not contain whitespace, `<`, `>` or `"`; quoted ones
    may contain anything but `"`.  Line breaks cannot be written at all.
    """
    if '"' in path or "\n" in path or "\r" in path:
        return None
    return f'"{path}"' if _NEEDS_QUOTES.search(path) else path


def metric_name(name: str) -> str:
    """A metric name Hydra accepts: [a-zA-Z0-9._-]+, other characters become _."""
    return _METRIC_NAME_BAD.sub("_", name) or "_"


def build_products(out: Path) -> str:
    absout = os.path.abspath(out)
    lines = []
    for type_, subtype, name, default in PRODUCTS:
        path = os.path.join(absout, name) if name else absout
        if not will_exist(os.path.join(path, default) if default else path):
            continue
        written = product_path(path)
        if written is None:
            continue
        lines.append(" ".join(filter(None, [type_, subtype, written, default])))
    lines += [f"file artifact {path}" for path in _artifacts(os.path.join(absout, ARTIFACTS))]
    return "".join(line + "\n" for line in lines)


def _artifacts(root: str) -> list[str]:
    """The regular files below `root`, sorted, each in the form Hydra accepts (others left out)."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(folder, name)
            # Hydra canonicalises a product path and drops one that leaves the output
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            written = product_path(path)
            if written is not None:
                found.append(written)
    return found


def metrics(run: RunSummary) -> str:
    values: list[tuple[str, str, str]] = [
        ("tests", str(len(run.results)), ""),
        ("failures", str(run.count("failed")), ""),
        ("errors", str(run.count("error")), ""),
        ("skipped", str(run.count("skipped")), ""),
        ("passed", str(run.count("passed")), ""),
        ("duration", f"{run.duration:.3f}", "s"),
        ("cached", str(sum(1 for r in run.results if r.cached)), ""),
        ("flaky", str(sum(1 for r in run.results if r.flaky)), ""),
    ]
    if run.baseline is not None:
        # the comparison with the baseline, in Hydra's words
        for change in (
            "newly-failing",
            "newly-succeeding",
            "still-failing",
            "still-succeeding",
            "new",
            "removed",
        ):
            values.append((change, str(run.count_change(change)), ""))
    taken = {name for name, _, _ in values}
    for package, results in run.by_package().items():
        base = f"package.{metric_name(package)}"
        name, n = base, 1
        # Hydra keeps the last of equal names: two packages must not share one
        while f"{name}.duration" in taken:
            n += 1
            name = f"{base}_{n}"
        taken.add(f"{name}.duration")
        duration = sum(r.duration for r in results)
        values.append((f"{name}.duration", f"{duration:.3f}", "s"))
    return "".join(" ".join(filter(None, v)) + "\n" for v in values)


class NixSupportReporter:
    """Writes OUT/nix-support/{hydra-build-products,hydra-metrics,failed}."""

    name = "nix-support"

    def write(self, run: RunSummary, out: Path) -> list[Path]:
        support = out / "nix-support"
        written = [
            atomic_write(support / "hydra-build-products", build_products(out)),
            atomic_write(support / "hydra-metrics", metrics(run)),
        ]
        failed = support / "failed"
        if run.any_failed:
            failures = [r.nodeid for r in run.results if r.outcome in ("failed", "error")]
            # Hydra ignores the contents; a person may like to know what failed
            written.append(atomic_write(failed, "".join(f"{n}\n" for n in failures)))
        elif failed.exists() or failed.is_symlink():
            failed.unlink()
        return written
