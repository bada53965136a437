"""The report writers: everything nixtest puts in OUT besides wrappers and logs.

Each reporter reads only a `RunSummary` and writes its files atomically::

    OUT/junit.xml                         junit.JUnitReporter
    OUT/log.xml                           logxml.LogXMLReporter
    OUT/log.html                          loghtml.LogHTMLReporter
    OUT/nix-support/hydra-build-products  nixsupport.NixSupportReporter
    OUT/nix-support/hydra-metrics             (the same)
    OUT/nix-support/failed                    (the same)
    OUT/report.json                       reportjson.ReportJSONReporter

OUT/logs/<package>/<test>.log is written by the executor, not here.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from nixtest.errors import NixtestError
from nixtest.reports.text import deferred_replace
from nixtest.results import RunSummary


class Reporter(Protocol):
    """Writes one kind of report for a whole run."""

    #: short, unique; names the reporter in error messages
    name: str

    def write(self, run: RunSummary, out: Path) -> list[Path]:
        """Write the report into `out`; return the files written."""
        ...


class ReportError(NixtestError):
    """One or more reporters failed; the others still wrote their files."""

    def __init__(self, failures: dict[str, BaseException]) -> None:
        self.failures = failures
        parts = [f"{name} ({type(exc).__name__}: {exc})" for name, exc in failures.items()]
        super().__init__("could not write reports: " + "; ".join(parts))


# Imported here, after Reporter, so the writers may import from this package.
from nixtest.reports.junit import JUnitReporter  # noqa: E402
from nixtest.reports.loghtml import LogHTMLReporter  # noqa: E402
from nixtest.reports.logxml import LogXMLReporter  # noqa: E402
from nixtest.reports.nixsupport import NixSupportReporter  # noqa: E402
from nixtest.reports.reportjson import ReportJSONReporter  # noqa: E402

#: Every reporter, in the order they run.  nix-support comes last because
#: hydra-build-products names only report files that exist.
REPORTERS: list[Reporter] = [
    JUnitReporter(),
    LogXMLReporter(),
    LogHTMLReporter(),
    ReportJSONReporter(),
    NixSupportReporter(),
]


def write_reports(
    run: RunSummary, out: Path | str, reporters: Sequence[Reporter] | None = None
) -> list[Path]:
    """Run every reporter (default `REPORTERS`) and return the files written.

    A reporter that raises does not stop the others; at the end one
    `ReportError` names every reporter that failed (chained to the first error).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    failures: dict[str, BaseException] = {}
    # Every report is written in full first, then all are moved into place.  A
    # broken writer does not silence the others, and an earlier run's report that
    # this run could not replace is removed: the reports never mix two runs.
    with deferred_replace() as pending:
        for reporter in REPORTERS if reporters is None else reporters:
            try:
                written.extend(reporter.write(run, out))
            except Exception as exc:  # noqa: BLE001 - collected, re-raised below
                failures[reporter.name] = exc
        moves = list(pending)
    moved: set[str] = set()
    for tmp, final in moves:
        try:
            os.replace(tmp, final)
            moved.add(os.path.abspath(final))
        except OSError as exc:
            failures.setdefault(f"moving {final.name} into place", exc)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    if not failures:
        return written
    for name in EARLIER_REPORTS:
        if os.path.abspath(out / name) not in moved:
            with contextlib.suppress(OSError):
                os.unlink(out / name)
    raise ReportError(failures) from next(iter(failures.values()))


#: the reports a run writes; those this run could not write are removed
EARLIER_REPORTS = (
    "junit.xml",
    "log.xml",
    "log.html",
    "report.json",
    "nix-support/hydra-build-products",
    "nix-support/hydra-metrics",
    "nix-support/failed",
)


__all__ = [
    "REPORTERS",
    "JUnitReporter",
    "LogHTMLReporter",
    "LogXMLReporter",
    "NixSupportReporter",
    "ReportError",
    "ReportJSONReporter",
    "Reporter",
    "write_reports",
]
