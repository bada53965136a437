"""OUT/junit.xml: one testsuite per package, one testcase per test.

Written directly, as the junit-xml library made it before (and as
tests/junit_reference.py still does), byte for byte: valid against Jenkins'
xunit-plugin junit-10.xsd (and the dtkit junit-4 schema): no `disabled`
attributes, times with 3 decimals, `<skipped>` without attributes (the reason
is its text), and counts taken from the testcases.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from xml.sax.saxutils import escape as _escape

from nixtest.reports.common import (
    history_lines,
    known_log,
    log_path,
    outcome_label,
    step_lines,
    step_summary,
    suite_properties,
)
from nixtest.reports.text import atomic_stream, clean_tail_chunks, clean_text, omission_note
from nixtest.results import Chunks, RunSummary, Step, TestResult

#: a failure/error/skipped `message` attribute is one short line
MESSAGE_LIMIT = 1024
#: Output a test case keeps, in each of its failure text, system-out and system-err.
#: junit.xml is read whole by CI servers (GitLab refuses large ones): a run of
#: hundreds of chatty failures must stay a few megabytes.  log.html, log.xml and
#: OUT/logs keep more.
JUNIT_OUTPUT_LIMIT = 8 * 1024
#: steps a test case lists one by one; the rest are counted
JUNIT_STEPS = 50


def _xml_text(s: str) -> str:
    """Clean text for an element: no escapes, no illegal characters, LF only.

    A literal CR would be read back as LF by any XML parser anyway.
    """
    return clean_text(s).replace("\r\n", "\n").replace("\r", "\n")


def _message(result: TestResult) -> str:
    text = " ".join(_xml_text(result.message).split())
    if not text:
        text = "timed out" if result.timed_out else result.outcome
    if len(text) > MESSAGE_LIMIT:
        text = text[: MESSAGE_LIMIT - 3] + "..."
    return text


def _note(left_out: int, dropped: int, result: TestResult, out: Path) -> str:
    if not (left_out or dropped):
        return ""
    return omission_note(left_out, log_path(result, out), dropped) + "\n"


def _output_tail(chunks: Chunks, dropped: int, result: TestResult, out: Path) -> str:
    """Cleaned output, both streams, its tail after a note if something was cut."""
    kept, left_out = clean_tail_chunks(chunks, JUNIT_OUTPUT_LIMIT)
    text = _note(left_out, dropped, result, out) + "".join(t for _, t in kept)
    return text if text.endswith("\n") or not text else text + "\n"


def _bounded_output(result: TestResult, out: Path) -> tuple[str, str]:
    """The test's output tail split into (stdout text, stderr text)."""
    chunks, left_out = clean_tail_chunks(result.output, JUNIT_OUTPUT_LIMIT)
    stdout = "".join(t for s, t in chunks if s != "stderr")
    stderr = "".join(t for s, t in chunks if s == "stderr")
    note = _note(left_out, result.output_dropped, result, out)
    return note + stdout, (note + stderr if stderr else "")


def _step_report(step: Step, result: TestResult, out: Path) -> str:
    """The failing step for a failure's text: facts, detail, output tail."""
    lines = [f"step failed: {step.message}", *step_lines(step)]
    if step.detail:
        lines.append(step.detail.rstrip("\n"))
    text = "\n".join(lines) + "\n"
    if step.output or step.output_dropped:
        text += "--- output of the step ---\n"
        text += _output_tail(step.output, step.output_dropped, result, out)
    return text


def _result_text(result: TestResult, out: Path) -> str:
    """The text of a <failure> or <error>: what went wrong, then how to rerun."""
    text = result.message.rstrip("\n") + "\n"
    step = result.failed_step
    if step is not None:
        text += _step_report(step, result, out)
    elif result.output or result.output_dropped:
        text += "--- output ---\n"
        text += _output_tail(result.output, result.output_dropped, result, out)
    if result.rerun_lines:
        text += "\n" + "\n".join(result.rerun_lines) + "\n"
    return text


def _system_out(result: TestResult, out: Path, stdout: str) -> str:
    """Facts, steps, rerun lines, then the stdout tail."""
    lines = [f"outcome: {outcome_label(result)}"]
    if result.message:
        lines.append(f"message: {result.message}")
    if result.kind:
        lines.append(f"kind: {result.kind}")
    if result.command:
        lines.append("command: " + " ".join(result.command))
    if result.exit_code is not None:
        lines.append(f"exit code: {result.exit_code}")
    if result.profile:
        lines.append(f"profile: {result.profile}")
    lines.extend(f"{name}: {value}" for name, value in result.properties.items())
    lines.extend(history_lines(result))
    lines.extend(f"warning: {w}" for w in result.warnings)
    if result.steps:
        lines.append("steps:")
        shown = result.steps
        if len(shown) > JUNIT_STEPS:
            bad = [s for s in shown if s.outcome in ("failed", "error")][:1]
            shown = shown[: JUNIT_STEPS - 1] + [s for s in bad if s not in shown[: JUNIT_STEPS - 1]]
        for step in shown:
            lines.append("  " + step_summary(step))
            lines.extend("      " + fact[:MESSAGE_LIMIT] for fact in step_lines(step))
        if len(shown) < len(result.steps):
            lines.append(f"  ... {len(result.steps) - len(shown)} more steps: see the full output")
    log = known_log(result, out)
    if log:
        lines.append(f"full output: {log}")
    lines.extend(result.rerun_lines)
    text = "\n".join(lines) + "\n"
    if stdout:
        text += "--- output ---\n" + stdout
    return text


#: what ElementTree writes as references in an attribute value, besides &, < and >
_ATTR_ENTITIES = {'"': "&quot;", "\n": "&#10;", "\r": "&#13;", "\t": "&#09;"}


def _escape_attr(text: str) -> str:
    """An attribute value as ElementTree writes it (line breaks and tabs as references)."""
    return _escape(text, _ATTR_ENTITIES)


def _no_del(text: str) -> str:
    """Without DEL: the file made through junit_xml, which dropped it, is kept byte for byte."""
    return text.replace("\x7f", "") if "\x7f" in text else text


def _attr(name: str, value: str) -> str:
    return f' {name}="{_escape_attr(value)}"'


def _leaf(tag: str, attrs: str, text: str) -> str:
    """An element without children; `text` escaped already.  Empty, it is written `<tag />`."""
    return f"<{tag}{attrs}>{text}</{tag}>" if text else f"<{tag}{attrs} />"


def _parent(tag: str, attrs: str, children: list[str], indent: str) -> str:
    """An element whose children each stand on a line of their own, one level below `indent`."""
    if not children:
        return f"<{tag}{attrs} />"
    inner = indent + "  "
    return f"<{tag}{attrs}>{inner}{inner.join(children)}{indent}</{tag}>"


def _attempts(result: TestResult) -> list[str]:
    """Earlier attempts as Surefire's flakyFailure (a later pass) or rerunFailure (still failing)."""
    tag = "flakyFailure" if result.outcome == "passed" else "rerunFailure"
    return [
        _leaf(
            tag,
            _attr("type", "failure") + _attr("message", _xml_text(line)[:MESSAGE_LIMIT]),
            _escape(_xml_text(line)),
        )
        for line in result.earlier_attempts
    ]


def _test_case(
    result: TestResult, out: Path, classname: str, attempts: TestResult | None
) -> tuple[str, float]:
    """The <testcase> element and its time as the suite adds it up.

    `attempts`: the result whose earlier attempts the case lists (found by the
    case's names as written), or None.
    """
    stdout, stderr = _bounded_output(result, out)
    attrs = _attr("name", _no_del(_xml_text(result.test)))
    duration = result.duration
    # the time as junit_xml wrote it ("%f"), rounded to 3 decimals; junit_xml left out a
    # zero time, which was then added after the other attributes
    case_time = round(float(f"{duration:f}"), 3) if duration else 0.0
    if duration:
        attrs += _attr("time", _time(case_time))
    if classname:
        attrs += _attr("classname", _no_del(classname))
    if not duration:
        attrs += _attr("time", _time(case_time))
    children = []
    if result.outcome in ("failed", "error"):
        tag = "failure" if result.outcome == "failed" else "error"
        kind = "timeout" if result.timed_out and tag == "failure" else tag
        what = _attr("type", kind) + _attr("message", _no_del(_message(result)))
        children.append(_leaf(tag, what, _escape(_no_del(_xml_text(_result_text(result, out))))))
    elif result.outcome == "skipped":
        # the dtkit junit-4 schema allows no attributes on <skipped>: the reason is its text
        children.append(_leaf("skipped", "", _escape(_no_del(_message(result)))))
    elif result.outcome == "xfailed":
        # as pytest writes an expected failure: skipped, saying so
        children.append(_leaf("skipped", "", _escape(_no_del(f"xfailed: {_message(result)}"))))
    children.append(_leaf("system-out", "", _escape(_no_del(_xml_text(_system_out(result, out, stdout))))))
    err = _xml_text(stderr)
    if err:
        children.append(_leaf("system-err", "", _escape(_no_del(err))))
    if attempts is not None and attempts.earlier_attempts:
        # one <testcase> per test whatever its attempts: before <system-out> for a pass,
        # after the <failure>/<error> for a test still failing
        position = 0 if attempts.outcome == "passed" else 1
        for n, element in enumerate(_attempts(attempts)):
            children.insert(position + n, element)
    return _parent("testcase", attrs, children, "\n    "), case_time


def _time(value: float) -> str:
    # junit-10.xsd: at most 3 decimals
    return f"{max(0.0, value):.3f}"


def _suite(
    run: RunSummary,
    package: str,
    results: list[TestResult],
    out: Path,
    first: bool,
    hostname: str,
    by_id: dict[tuple[str, str], TestResult],
) -> str:
    """One package's <testsuite>, its counts taken from its testcases."""
    name = _no_del(_xml_text(package))
    cases = []
    suite_time = 0.0
    for result in results:
        attempts = by_id.get((name, _no_del(_xml_text(result.test))))
        case, case_time = _test_case(result, out, _xml_text(result.package), attempts)
        cases.append(case)
        suite_time += case_time
    outcomes = [r.outcome for r in results]
    started = min(r.start for r in results)
    attrs = (
        _attr("errors", str(outcomes.count("error")))
        + _attr("failures", str(outcomes.count("failed")))
        + _attr("name", name)
        + _attr("skipped", str(outcomes.count("skipped") + outcomes.count("xfailed")))
        + _attr("tests", str(len(results)))
        + _attr("time", _time(suite_time))
        + (_attr("hostname", _no_del(hostname)) if hostname else "")
        # the Ant format: local time, no time zone
        + _attr("timestamp", datetime.fromtimestamp(started).strftime("%Y-%m-%dT%H:%M:%S"))
    )
    # one value a name (the last), as the dict junit_xml took
    properties = {_xml_text(k): _xml_text(v) for k, v in suite_properties(run, package, results, first)}
    if properties:
        items = [
            _leaf("property", _attr("name", _no_del(k)) + _attr("value", _no_del(v)), "")
            for k, v in properties.items()
        ]
        cases.insert(0, _parent("properties", "", items, "\n    "))
    return _parent("testsuite", attrs, cases, "\n  ")


def _pieces(run: RunSummary, out: Path) -> Iterator[str]:
    """The document a package's suite at a time: a 10,000-test file is never held whole.

    Written directly, as the junit_xml library made it (then parsed back and
    fixed up to validate) byte for byte, at a fraction of the cost (issue 8).
    `<testsuites>` takes only name/time/tests/failures/errors in junit-10.xsd.
    """
    suites = run.by_package()
    outcomes = [r.outcome for rs in suites.values() for r in rs]
    attrs = (
        _attr("name", "nixtest")
        + _attr("tests", str(len(outcomes)))
        + _attr("failures", str(outcomes.count("failed")))
        + _attr("errors", str(outcomes.count("error")))
        + _attr("time", _time(run.duration))
    )
    yield HEAD
    if not suites:
        yield f"<testsuites{attrs} />\n"
        return
    yield f"<testsuites{attrs}>"
    hostname = _xml_text(socket.gethostname())
    by_id = {(r.package, r.test): r for r in run.results}
    first = min(suites)
    for package, results in suites.items():
        yield "\n  " + _suite(run, package, results, out, package == first, hostname, by_id)
    yield "\n</testsuites>\n"


def render(run: RunSummary, out: Path) -> str:
    """The whole junit.xml document."""
    return "".join(_pieces(run, out))


HEAD = '<?xml version="1.0" encoding="utf-8"?>\n'


class JUnitReporter:
    """Writes OUT/junit.xml."""

    name = "junit"

    def write(self, run: RunSummary, out: Path) -> list[Path]:
        # as `render`, the text written as it is made rather than held whole
        with atomic_stream(out / "junit.xml") as f:
            f.writelines(_pieces(run, out))
        return [out / "junit.xml"]
