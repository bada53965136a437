"""`nixtest history --html FILE`: the recorded runs and every test's strip, in one page.

The same view as the top of log.html, across runs: the latest run's changes
(newly failing first), the runs, then one row per test with its last
outcomes as a strip (see `strip.py`) linking to the logs kept beside the page.
Self-contained like log.html: inline style, no script, nothing fetched.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from nixtest.reports.strip import CSS as STRIP_CSS
from nixtest.reports.strip import Cell, strip_html

#: nothing may be fetched or run, whatever ends up in the page
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

CSS = (
    """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; margin: 0 0 .4em; } h2 { font-size: 1.15em; margin: 1.2em 0 .4em; }
table { border-collapse: collapse; }
td, th { padding: .15em .7em .15em 0; text-align: left; vertical-align: middle; }
th { font-weight: 600; border-bottom: 1px solid #ccc; }
.newly-failing { color: #b00020; font-weight: 600; } .newly-succeeding { color: #176f2c; }
.still-failing { color: #b00020; } .flaky-verdict { color: #b35c00; }
.mono { font-family: monospace; }
"""
    + STRIP_CSS
)

#: the order of the tests: what needs looking at first
ORDER = ("newly-failing", "still-failing", "flaky", "newly-succeeding", "new", "still-succeeding", "")

CHANGE_WORDS = {
    "newly-failing": "newly failing",
    "newly-succeeding": "newly succeeding",
    "still-failing": "still failing",
    "still-succeeding": "still succeeding",
    "new": "new",
}


@dataclass
class RunRow:
    run: str
    when: float
    set_spec: str
    tests_dir: str
    counts: dict[str, int] = field(default_factory=dict)
    newly_failing: list[str] = field(default_factory=list)


@dataclass
class HistoryRow:
    nodeid: str
    #: oldest first
    cells: list[Cell]
    #: its change in the latest run ("" when it was not in it)
    change: str = ""

    @property
    def flaky(self) -> bool:
        """A flaky result, or a pass and a failure among its recorded results."""
        outcomes = {"bad" if c.bad else c.outcome for c in self.cells}
        return any(c.flaky for c in self.cells) or {"bad", "passed"} <= outcomes

    @property
    def rank(self) -> int:
        if self.change in ("newly-failing", "still-failing"):
            return ORDER.index(self.change)
        if self.flaky:
            return ORDER.index("flaky")
        return ORDER.index(self.change) if self.change in ORDER else len(ORDER)


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _when(t: float) -> str:
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def _counts(counts: dict[str, int]) -> str:
    shown = [
        f"{n} {what}"
        for what, n in counts.items()
        if n and what in ("passed", "failed", "error", "skipped", "xfailed", "cached", "flaky")
    ]
    return ", ".join(shown) or "no tests"


def render_history(runs: Sequence[RunRow], tests: Sequence[HistoryRow], where: str) -> str:
    """The page: `runs` newest first, `tests` in any order (sorted here)."""
    ordered = sorted(tests, key=lambda t: (t.rank, t.nodeid))
    latest = runs[0] if runs else None
    parts = [
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n',
        f"<title>nixtest history: {len(runs)} runs</title>\n<style>{CSS}</style>\n</head>\n<body>\n",
        "<h1>nixtest history</h1>\n",
        f"<p>{len(runs)} runs, {len(tests)} tests, from {_esc(where)}.</p>\n",
    ]
    if latest is not None:
        parts.append(f'<h2 id="changes">Run {_esc(latest.run)}: its changes</h2>\n')
        changed = [t for t in ordered if t.change not in ("", "still-succeeding")] + [
            t for t in ordered if t.change == "still-succeeding" and t.flaky
        ]
        if not changed:
            parts.append("<p>Nothing changed: every test as in the run before.</p>\n")
        else:
            parts.append('<table class="changes">\n')
            for t in changed:
                what = CHANGE_WORDS.get(t.change, t.change)
                if t.flaky:
                    what += ", flaky" if what else "flaky"
                css = t.change if t.change else ""
                if t.flaky and t.change == "still-succeeding":
                    css = "flaky-verdict"
                parts.append(
                    f'<tr><td class="mono">{_esc(t.nodeid)}</td><td class="{_esc(css)}">{_esc(what)}</td>'
                    f"<td>{strip_html(t.cells)}</td></tr>\n"
                )
            parts.append("</table>\n")
    parts.append('<h2 id="runs">Runs</h2>\n<table class="runs">\n')
    parts.append(
        "<tr><th>run</th><th>when</th><th>set</th><th>tests</th><th>results</th><th>newly failing</th></tr>\n"
    )
    for r in runs:
        parts.append(
            f'<tr id="run-{_esc(r.run)}"><td>{_esc(r.run)}</td><td>{_when(r.when)}</td>'
            f'<td class="mono">{_esc(r.set_spec)}</td><td class="mono">{_esc(r.tests_dir)}</td>'
            f"<td>{_esc(_counts(r.counts))}</td>"
            f'<td class="newly-failing">{_esc(", ".join(r.newly_failing))}</td></tr>\n'
        )
    parts.append("</table>\n")
    parts.append('<h2 id="tests">Tests</h2>\n<table class="tests">\n')
    for t in ordered:
        verdict = "flaky" if t.flaky else ""
        parts.append(
            f'<tr><td class="mono">{_esc(t.nodeid)}</td><td>{strip_html(t.cells)}</td>'
            f'<td class="flaky-verdict">{verdict}</td></tr>\n'
        )
    parts.append("</table>\n</body>\n</html>\n")
    return "".join(parts)
