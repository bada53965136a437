"""OUT/log.html: the log.xml tree for a browser, in one self-contained file.

No script and no network reference: folding is `<details>`/`<summary>`, the
style is inline, and a Content-Security-Policy forbids loading anything, so
even a bug in escaping could not make a test's output run code.  Failing tests
are open, passing ones folded; every text goes through `html.escape`.
"""

from __future__ import annotations

import html
import urllib.parse
from collections.abc import Iterator
from datetime import datetime
from itertools import groupby
from pathlib import Path

from nixtest.reports.common import (
    CHANGES,
    change_words,
    history_lines,
    is_bad,
    known_log,
    log_path,
    outcome_label,
    package_counts,
    relative_to_out,
    seconds,
    step_lines,
)
from nixtest.reports.logxml import bounded_lines
from nixtest.reports.strip import CSS as STRIP_CSS
from nixtest.reports.strip import strip_html
from nixtest.reports.text import atomic_stream, clean_text
from nixtest.results import RunSummary, Step, TestResult

CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; margin: 0 0 .4em; }
.summary span { margin-right: .8em; }
.passed { color: #176f2c; } .failed, .error { color: #b00020; } .skipped { color: #8a6d00; }
details { margin: .15em 0 .15em 1.2em; }
details.package { margin-left: 0; }
summary { cursor: pointer; }
summary .name { font-weight: 600; }
.badge { display: inline-block; min-width: 4.5em; font-size: .85em; font-weight: 600; }
.message { color: #b00020; white-space: pre-wrap; }
pre { margin: .3em 0 .3em 1.2em; padding: .4em .6em; background: #f6f6f6;
      white-space: pre-wrap; word-break: break-all; font-size: .9em; }
pre.rerun { background: #fff4e5; border-left: 3px solid #e09000; }
pre .stderr { color: #a33; } pre .note { color: #666; font-style: italic; }
.facts { margin: .2em 0 .2em 1.2em; font-family: monospace; font-size: .9em; }
.warning { color: #8a6d00; }
.flaky, .cached { font-size: .8em; border: 1px solid #999; border-radius: 3px; padding: 0 .3em; }
.changes { border-left: 3px solid #999; padding-left: .8em; }
.changes .newly-failing { color: #b00020; font-weight: 600; } .changes .newly-succeeding { color: #176f2c; }
"""

#: nothing may be fetched or run, whatever ends up in the page
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def esc(text: str) -> str:
    """Clean and escape any text for HTML content or a quoted attribute."""
    return html.escape(clean_text(text), quote=True)


def _output(lines: list[tuple[str, str]]) -> str:
    """A <pre> of output lines, stderr and notes marked by class."""
    if not lines:
        return ""
    parts = []
    for stream, group in groupby(lines, key=lambda pair: pair[0]):
        text = esc("\n".join(line for _, line in group) + "\n")
        css = {"stderr": "stderr", "": "note"}.get(stream)
        parts.append(f'<span class="{css}">{text}</span>' if css else text)
    return '<pre class="output">' + "".join(parts) + "</pre>\n"


def _facts(lines: list[str]) -> str:
    return "".join(f'<div class="facts">{esc(line)}</div>\n' for line in lines)


def _step(step: Step, result: TestResult, out: Path) -> str:
    bad = step.outcome in ("failed", "error")
    info: list[str] = [step.outcome]
    if step.exit_code is not None:
        info.append(f"exit code {step.exit_code}")
    info.append(f"{seconds(step.duration)} s")
    parts = [
        f'<details class="step {esc(step.outcome)}"{" open" if bad else ""}>',
        f'<summary>step: <span class="name">{esc(step.message)}</span>'
        f' <span class="{esc(step.outcome)}">({esc(", ".join(info))})</span></summary>\n',
        _facts(step_lines(step)),
        _output(bounded_lines(step.output, log_path(result, out), step.output_dropped)),
    ]
    if step.detail:
        parts.append(f'<pre class="detail">{esc(step.detail)}</pre>\n')
    parts.append("</details>\n")
    return "".join(parts)


def _log_link(result: TestResult, out: Path) -> str:
    path = known_log(result, out)
    if path is None:
        return ""
    relative = relative_to_out(path, out)
    if relative is None:
        return f'<div class="facts">full output: {esc(path)}</div>\n'
    # a relative link to a file next to this page: no network involved
    href = urllib.parse.quote(relative)
    return f'<div class="facts">full output: <a href="{esc(href)}">{esc(relative)}</a></div>\n'


def _test(result: TestResult, out: Path, anchor: str, strip: str = "") -> str:
    bad = is_bad(result)
    outcome = result.outcome
    parts = [
        f'<details class="test {esc(outcome)}" id="{anchor}"{" open" if bad else ""}>',
        f'<summary><span class="badge {esc(outcome)}">{esc(outcome_label(result))}</span> '
        f'<span class="name">{esc(result.test)}</span> ({seconds(result.duration)} s)',
        strip,
    ]
    if result.cached:
        parts.append(' <span class="cached">cached</span>')
    if result.flaky:
        parts.append(' <span class="flaky">flaky</span>')
    if result.change and result.change != "still-succeeding":
        parts.append(f' <span class="{esc(result.change)}">{esc(change_words(result.change))}</span>')
    if result.message and not bad:
        parts.append(f" — {esc(result.message)}")
    parts.append("</summary>\n")
    if result.message and bad:
        parts.append(f'<div class="message">{esc(result.message)}</div>\n')
    if bad and result.rerun_lines:
        parts.append(f'<pre class="rerun">{esc(chr(10).join(result.rerun_lines))}</pre>\n')
    parts.extend(f"<div>{esc(name)}: {esc(value)}</div>\n" for name, value in result.properties.items())
    parts.extend(f'<div class="warning">warning: {esc(w)}</div>\n' for w in result.warnings)
    parts.append(_facts(history_lines(result)))
    parts.extend(_step(step, result, out) for step in result.steps)
    parts.append(_output(bounded_lines(result.output, log_path(result, out), result.output_dropped)))
    parts.append(_log_link(result, out))
    parts.append("</details>\n")
    return "".join(parts)


def _summary(run: RunSummary) -> str:
    counts = [
        f'<span class="{outcome}">{run.count(outcome)} {outcome}</span>'
        for outcome in ("passed", "failed", "error", "skipped")
    ]
    started = datetime.fromtimestamp(run.start).strftime("%Y-%m-%d %H:%M:%S")
    text = (
        f'<p class="summary"><strong>{len(run.results)} tests</strong>: {"".join(counts)}'
        f" in {seconds(run.duration)} s — package set {esc(run.set_spec)}, started {started}</p>\n"
    )
    if run.interrupted:
        text += '<p class="warning">The run was interrupted: not every test ran.</p>\n'
    return text


def _strip(run: RunSummary, result: TestResult) -> str:
    """The test's last outcomes (from the history), as a strip of boxes."""
    return strip_html(run.strips.get(result.nodeid, []))


def _flaky(run: RunSummary, anchors: dict[int, str]) -> str:
    """The flaky tests of the run, with their strips: right after the failing ones."""
    tests = sorted((r for r in run.results if r.flaky), key=lambda r: r.nodeid)
    if not tests:
        return ""
    items = "".join(
        f'<li><a href="#{anchors[id(r)]}">{esc(r.nodeid)}</a>{_strip(run, r)}</li>\n' for r in tests
    )
    return f'<h2 class="flaky-tests">Flaky</h2>\n<ul>\n{items}</ul>\n'


def _changes(run: RunSummary, anchors: dict[int, str]) -> str:
    """The comparison with the baseline, at the top: newly failing first, with reproduce lines."""
    if run.baseline is None:
        return ""
    label = f"run {run.baseline}" if run.baseline.isdigit() else run.baseline
    counts = ", ".join(
        f'<span class="{c}">{run.count_change(c)} {change_words(c)}</span>' for c in (*CHANGES, "removed")
    )
    parts = [f'<div class="changes"><p>Compared with {esc(label)}: {counts}</p>\n']
    for change in ("newly-failing", "still-failing", "flaky", "newly-succeeding", "new"):
        if change == "flaky":
            parts.append(_flaky(run, anchors))
            continue
        tests = sorted((r for r in run.results if r.change == change), key=lambda r: r.nodeid)
        if not tests:
            continue
        parts.append(f'<h2 class="{change}">{esc(change_words(change).capitalize())}</h2>\n<ul>\n')
        for r in tests:
            line = f'<li><a href="#{anchors[id(r)]}">{esc(r.nodeid)}</a>{_strip(run, r)}'
            if r.is_bad:
                line += f" — {esc(r.message)}"
                if r.rerun_lines:
                    line += f'<pre class="rerun">{esc(r.rerun_lines[0])}</pre>'
            parts.append(line + "</li>\n")
        parts.append("</ul>\n")
    if run.removed:
        parts.append("<h2>Removed</h2>\n<ul>\n")
        parts.extend(f"<li>{esc(n)}</li>\n" for n in run.removed)
        parts.append("</ul>\n")
    parts.append("</div>\n")
    return "".join(parts)


def render(run: RunSummary, out: Path) -> str:
    """The whole log.html page."""
    return "".join(_pieces(run, out))


def _pieces(run: RunSummary, out: Path) -> Iterator[str]:
    """The page, a test at a time: a 10,000-test page is never held whole."""
    packages = run.by_package()
    anchors: dict[int, str] = {}
    for n, result in enumerate((r for rs in packages.values() for r in rs), 1):
        anchors[id(result)] = f"t{n}"
    bad = [r for rs in packages.values() for r in rs if is_bad(r)]
    title = f"nixtest: {run.count('passed')} passed, {len(bad)} failed"
    yield from [
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n',
        f"<title>{esc(title)}</title>\n<style>{CSS}{STRIP_CSS}</style>\n</head>\n<body>\n",
        "<h1>nixtest report</h1>\n",
        _summary(run),
        _changes(run, anchors),
    ]
    if bad:
        yield ('<h2 class="failed">Failed</h2>\n<ul>\n')
        for r in bad:
            yield (
                f'<li><a href="#{anchors[id(r)]}">{esc(r.nodeid)}</a>: '
                f"{esc(outcome_label(r))} — {esc(r.message)}</li>\n"
            )
        yield "</ul>\n"
    for package, results in packages.items():
        package_bad = any(is_bad(r) for r in results)
        duration = sum(r.duration for r in results)
        yield (
            f'<details class="package"{" open" if package_bad else ""}>'
            f'<summary>package <span class="name">{esc(package)}</span>: '
            f"{esc(package_counts(results))} ({seconds(duration)} s)</summary>\n"
        )
        yield from (_test(r, out, anchors[id(r)], _strip(run, r)) for r in results)
        yield "</details>\n"
    yield "</body>\n</html>\n"


class LogHTMLReporter:
    """Writes OUT/log.html."""

    name = "loghtml"

    def write(self, run: RunSummary, out: Path) -> list[Path]:
        with atomic_stream(out / "log.html") as f:
            f.writelines(_pieces(run, out))
        return [out / "log.html"]
