"""A test's last outcomes as a strip of small boxes, as Hydra shows a job's history.

One box per recorded result, oldest first, this run's last.  Its colour and
letter say the outcome (a letter too, so that the strip reads without colour),
a ring marks a flaky result, a dashed border a cached one; its title says the
run, when, the outcome and the message; a box whose log is kept links to it.
Used by log.html (each test's strip) and by `nixtest history --html` (every
test's strip across runs).  No script: plain links and inline style, so the
pages keep their Content-Security-Policy.
"""

from __future__ import annotations

import functools
import html
import math
import urllib.parse
from collections.abc import Callable, Sequence
from datetime import datetime

from nixtest.results import HistoryCell as Cell

#: how many outcomes a strip shows, as Hydra's job page
STRIP_LENGTH = 20

#: outcome -> the letter in its box
LETTERS = {"passed": "✓", "failed": "✗", "error": "E", "skipped": "s", "xfailed": "x"}

CSS = """
.strip { display: inline-flex; gap: 2px; vertical-align: middle; margin: 0 .5em 0 .6em; }
.strip .cell { display: inline-block; width: 1.15em; height: 1.15em; line-height: 1.15em;
  text-align: center; font-size: .75em; font-weight: 700; color: #fff; border-radius: 2px;
  text-decoration: none; border: 1px solid transparent; padding: 0; }
.strip .cell.passed { background: #2e8b3d; } .strip .cell.failed { background: #c62828; }
.strip .cell.error { background: #6a1b9a; } .strip .cell.skipped { background: #9e9e9e; }
.strip .cell.xfailed { background: #b08900; }
.strip .cell.flaky { box-shadow: 0 0 0 2px #ff9800; }
.strip .cell.cached { border: 1px dashed #222; opacity: .75; }
.strip .cell.current { outline: 2px solid #222; outline-offset: 1px; }
.strip a.cell:hover { filter: brightness(1.25); }
"""


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


@functools.lru_cache(maxsize=4096)
def _minute(second: int) -> str:
    """The local time of a whole second, to the minute: the same for every time within it."""
    return datetime.fromtimestamp(second).strftime("%Y-%m-%d %H:%M")


def _same(text: str) -> str:
    return text


def _safe(text: str) -> str:
    """`text` escaped for an attribute; a run id, an outcome (digits, letters) as they are."""
    return text if text.isalnum() else _esc(text)


def cell_title(cell: Cell, escape: Callable[[str], str] = _same) -> str:
    """The box's title; with `escape`, escaped for an attribute.

    Only the run, the outcome and the message are escaped: the rest is digits, letters and
    punctuation that needs none, and `html.escape` of a text is that of its parts, joined.
    """
    # a strip's cells of one run were recorded within a few seconds: each second formatted once
    when = _minute(math.floor(cell.when))
    marks = [
        m for m, on in (("flaky", cell.flaky), ("cached", cell.cached), ("this run", cell.current)) if on
    ]
    title = f"run {escape(cell.run)}, {when}: {escape(cell.outcome)}"
    if marks:
        title += f" ({', '.join(marks)})"
    title += f", {cell.duration:.2f} s"
    if cell.message and cell.bad:
        title += f" — {escape(cell.message[:200])}"
    return title


def strip_html(cells: Sequence[Cell]) -> str:
    """The strip of the last STRIP_LENGTH cells (oldest first)."""
    shown = list(cells)[-STRIP_LENGTH:]
    if not shown:
        return ""
    parts = [f'<span class="strip" title="the last {len(shown)} results, oldest first">']
    for cell in shown:
        outcome = cell.outcome
        classes = "cell " + (outcome if outcome in LETTERS else "error")
        if cell.flaky:
            classes += " flaky"
        if cell.cached:
            classes += " cached"
        if cell.current:
            classes += " current"
        letter = LETTERS.get(outcome, "?")
        attrs = f'class="{classes}" title="{cell_title(cell, _safe)}" data-run="{_safe(cell.run)}"'
        if cell.log:
            href = urllib.parse.quote(cell.log)
            parts.append(f'<a {attrs} href="{_esc(href)}">{letter}</a>')
        else:
            parts.append(f"<span {attrs}>{letter}</span>")
    parts.append("</span>")
    return "".join(parts)
