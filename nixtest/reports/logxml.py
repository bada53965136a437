"""OUT/log.xml: the run as a Nix/Hydra log (NixOS test driver's XMLLogger format).

::

    <logfile>
      <nest><head>package P</head>
        <nest><head expanded="1">test T: failed</head>
          <nest><head error="1">step: MESSAGE</head>
            <line error="1" stream="stderr">output</line>
            <line error="1">(finished: step: MESSAGE: failed, in 0.12 seconds)</line>
          </nest>
          <line stream="stdout">output of the test outside any step</line>
          <line>to reproduce: OUT/rerun/P/T</line>
          <line>(finished: test T: failed, in 1.23 seconds)</line>
        </nest>
        <line>(finished: package P: ..., in 1.23 seconds)</line>
      </nest>
    </logfile>

The stream of an output line is the attribute `stream` ("stdout"/"stderr"),
not `type`: the NixOS stylesheet gives `type` a meaning (`type="serial"` is a
VM's serial console, rendered with a "machine#" prefix), and nothing renders
`stream`, so the three stylesheets show our lines as plain lines.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from nixtest.reports.common import (
    comparison_lines,
    history_lines,
    is_bad,
    known_log,
    log_path,
    outcome_label,
    package_counts,
    run_counts,
    step_lines,
)
from nixtest.reports.text import (
    OUTPUT_LIMIT,
    atomic_stream,
    clean_tail_chunks,
    clean_text,
    omission_note,
    split_lines,
)
from nixtest.results import RunSummary, Step, TestResult

Attrs = dict[str, str]
ERROR: Attrs = {"error": "1"}


def bounded_lines(chunks: list[tuple[str, str]], log: str, dropped_bytes: int = 0) -> list[tuple[str, str]]:
    """(stream, line) of cleaned output, its last OUTPUT_LIMIT characters.

    The first pair is ("", note) when something was left out.
    """
    kept, left_out = clean_tail_chunks(chunks, OUTPUT_LIMIT)
    lines: list[tuple[str, str]] = []
    if left_out or dropped_bytes:
        lines.append(("", omission_note(left_out, log, dropped_bytes)))
    for stream, text in kept:
        lines.extend((stream, line) for line in split_lines(text))
    return lines


class _LogWriter:
    """The XMLLogger's vocabulary (nest/head/line), written as `XMLGenerator` wrote it.

    The text is made here rather than by an `XMLGenerator` (a call and a write
    for every tag, attribute and text: most of the file's time, issue 8), and
    written a package at a time; the bytes are the same.
    """

    def __init__(self, stream: io.TextIOBase) -> None:
        self._stream = stream
        self._parts: list[str] = []
        #: the attributes as written, by their (few) values
        self._attrs: dict[tuple[tuple[str, str], ...], str] = {}

    def start(self) -> None:
        self._parts.append('<?xml version="1.0" encoding="utf-8"?>\n<logfile>')

    def end(self) -> None:
        self._parts.append("</logfile>")
        self.flush()

    def flush(self) -> None:
        """Writes what was made so far."""
        self._stream.write("".join(self._parts))
        self._parts.clear()

    def _attributes(self, attrs: Attrs) -> str:
        key = tuple(attrs.items())
        text = self._attrs.get(key)
        if text is None:
            # clean again: heads and facts come from names, messages and commands
            text = "".join(f" {name}={quoteattr(clean_text(value))}" for name, value in key)
            self._attrs[key] = text
        return text

    def _element(self, tag: str, text: str, attrs: Attrs) -> None:
        self._parts.append(f"<{tag}{self._attributes(attrs)}>{escape(clean_text(text))}</{tag}>\n")

    def line(self, text: str, attrs: Attrs | None = None) -> None:
        # a <line> is one line: facts with several lines become several <line>s
        for part in split_lines(text) or [""]:
            self._element("line", part, attrs or {})

    def _open_nest(self) -> None:
        self._parts.append("<nest>\n")

    def _close_nest(self) -> None:
        self._parts.append("</nest>\n")

    @contextmanager
    def nest(self, head: str, attrs: Attrs | None = None) -> Iterator[None]:
        self._open_nest()
        # a head is one line too; the rest of a multi-line head becomes lines
        first, *rest = split_lines(head) or [""]
        self._element("head", first, attrs or {})
        for part in rest:
            self._element("line", part, attrs or {})
        yield
        self._close_nest()

    def finished(self, what: str, duration: float, attrs: Attrs | None = None) -> None:
        """The line that closes a nest, as the XMLLogger writes it."""
        self.line(f"(finished: {what}, in {duration:.2f} seconds)", attrs)

    def output(self, lines: list[tuple[str, str]], attrs: Attrs | None = None) -> None:
        for stream, text in lines:
            line_attrs = dict(attrs or {})
            if stream:
                line_attrs["stream"] = stream
            self._element("line", text, line_attrs)


def _write_step(log: _LogWriter, step: Step, result: TestResult, out: Path) -> None:
    bad = step.outcome in ("failed", "error")
    attrs = ERROR if bad else {}
    head = f"step: {step.message}"
    with log.nest(head, attrs):
        for fact in step_lines(step):
            log.line(fact, attrs)
        log.output(bounded_lines(step.output, log_path(result, out), step.output_dropped), attrs)
        if step.detail:
            log.line(step.detail, attrs)
        log.finished(f"{head}: {step.outcome}", step.duration, attrs)


def _write_test(log: _LogWriter, result: TestResult, out: Path) -> None:
    bad = is_bad(result)
    head = f"test {result.test}: {outcome_label(result)}"
    with log.nest(head, {"expanded": "1"} if bad else {}):
        for name, value in result.properties.items():
            log.line(f"{name}: {value}")
        for warning in result.warnings:
            log.line(f"warning: {warning}", {"warning": "1"})
        for fact in history_lines(result):
            log.line(fact)
        if result.message:
            # the reason must be visible, and must open the nest in every stylesheet
            log.line(result.message, ERROR if bad else {})
        for step in result.steps:
            _write_step(log, step, result, out)
        # output outside any step belongs to the test itself
        log.output(bounded_lines(result.output, log_path(result, out), result.output_dropped))
        log_file = known_log(result, out)
        if bad and log_file:
            log.line(f"full output: {log_file}")
        if bad:
            for rerun in result.rerun_lines:
                log.line(rerun)
        log.finished(head, result.duration)


def render(run: RunSummary, out: Path) -> str:
    """The whole log.xml document."""
    buffer = io.StringIO()
    _write(run, out, buffer)
    return buffer.getvalue()


def _write(run: RunSummary, out: Path, stream: io.TextIOBase) -> None:
    """The document into `stream` as it is made: a 10,000-test log is never held whole."""
    log = _LogWriter(stream)
    log.start()
    for package, results in run.by_package().items():
        head = f"package {package}"
        with log.nest(head, {"expanded": "1"} if any(is_bad(r) for r in results) else {}):
            for result in results:
                _write_test(log, result, out)
            duration = sum(r.duration for r in results)
            log.finished(f"{head}: {package_counts(results)}", duration)
        log.flush()
    for line in comparison_lines(run):
        log.line(line, ERROR if line.startswith("newly failing") else {})
    if run.interrupted:
        log.line("the run was interrupted: not every test ran", {"warning": "1"})
    log.line(f"(finished: {run_counts(run)}, in {run.duration:.2f} seconds)")
    log.end()


class LogXMLReporter:
    """Writes OUT/log.xml."""

    name = "logxml"

    def write(self, run: RunSummary, out: Path) -> list[Path]:
        with atomic_stream(out / "log.xml") as f:
            _write(run, out, f)
        return [out / "log.xml"]
