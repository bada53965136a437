"""OUT/junit.xml: one testsuite per package, one testcase per test.

Built with the junit-xml library, then fixed up so that it validates against
Jenkins' xunit-plugin junit-10.xsd (and the dtkit junit-4 schema): no
`disabled` attributes, times with 3 decimals, `<skipped>` without attributes
(the reason is its text), and counts recomputed from the testcases.
"""

from __future__ import annotations

import socket
import xml.etree.ElementTree as ET
from collections import defaultdict
from datetime import datetime
from pathlib import Path

from junit_xml import TestCase, TestSuite, to_xml_report_string

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


def _test_case(result: TestResult, out: Path) -> TestCase:
    stdout, stderr = _bounded_output(result, out)
    case = TestCase(
        name=_xml_text(result.test),
        classname=_xml_text(result.package),
        elapsed_sec=result.duration,
        stdout=_xml_text(_system_out(result, out, stdout)),
        stderr=_xml_text(stderr) or None,
    )
    if result.outcome == "failed":
        kind = "timeout" if result.timed_out else "failure"
        case.add_failure_info(_message(result), _xml_text(_result_text(result, out)), kind)
    elif result.outcome == "error":
        case.add_error_info(_message(result), _xml_text(_result_text(result, out)), "error")
    elif result.outcome == "skipped":
        reason = _message(result)
        case.add_skipped_info(reason, reason)
    elif result.outcome == "xfailed":
        # as pytest writes an expected failure: skipped, saying so
        reason = f"xfailed: {_message(result)}"
        case.add_skipped_info(reason, reason)
    return case


def _add_attempts(root: ET.Element, run: RunSummary) -> None:
    """Earlier attempts as Surefire's flakyFailure (a later pass) or rerunFailure (still failing).

    One <testcase> per test whatever its attempts; the text of each says what
    happened, and system-out tells them all too.
    """
    by_id = {(r.package, r.test): r for r in run.results}
    for suite in root.iter("testsuite"):
        for case in suite.findall("testcase"):
            result = by_id.get((suite.get("name", ""), case.get("name", "")))
            if result is None or not result.earlier_attempts:
                continue
            tag = "flakyFailure" if result.outcome == "passed" else "rerunFailure"
            position = 0 if result.outcome == "passed" else 1  # after <failure>/<error>
            for n, line in enumerate(result.earlier_attempts):
                element = ET.Element(tag, {"type": "failure", "message": _xml_text(line)[:MESSAGE_LIMIT]})
                element.text = _xml_text(line)
                case.insert(position + n, element)


def _time(value: float) -> str:
    # junit-10.xsd: at most 3 decimals
    return f"{max(0.0, value):.3f}"


def _fix_up(root: ET.Element, run: RunSummary) -> None:
    """Make the library's tree schema-valid, with counts taken from the testcases."""
    totals = {"tests": 0, "failures": 0, "errors": 0}
    for suite in root.iter("testsuite"):
        cases = suite.findall("testcase")
        counts = {
            "tests": len(cases),
            "failures": sum(1 for c in cases if c.find("failure") is not None),
            "errors": sum(1 for c in cases if c.find("error") is not None),
            "skipped": sum(1 for c in cases if c.find("skipped") is not None),
        }
        suite.attrib.pop("disabled", None)
        for key, value in counts.items():
            suite.set(key, str(value))
            if key in totals:
                totals[key] += value
        suite_time = 0.0
        for case in cases:
            case_time = round(float(case.get("time", "0")), 3)
            suite_time += case_time
            case.set("time", _time(case_time))
            for skipped in case.findall("skipped"):
                # the dtkit junit-4 schema allows no attributes on <skipped>
                skipped.text = skipped.text or skipped.get("message", "")
                skipped.attrib.clear()
        suite.set("time", _time(suite_time))
    root.attrib.clear()
    # <testsuites> takes only name/time/tests/failures/errors in junit-10.xsd
    root.set("name", "nixtest")
    root.set("tests", str(totals["tests"]))
    root.set("failures", str(totals["failures"]))
    root.set("errors", str(totals["errors"]))
    root.set("time", _time(run.duration))


def _tree(run: RunSummary, out: Path) -> ET.Element:
    """The whole junit.xml document, as a tree.

    `junit_xml` makes the text of a package's suite at a time, parsed back into
    one tree, with the totals `to_xml_report_string` gives the whole document:
    the whole run's text, its bytes and a second tree are never held at once
    (at 10,000 tests they were the run's peak memory, issue 8).
    """
    hostname = socket.gethostname()
    root = ET.Element("testsuites")
    totals: defaultdict[str, float] = defaultdict(int)
    suites = run.by_package()
    first = min(suites, default=None)
    for package, results in suites.items():
        started = min(r.start for r in results)
        suite = TestSuite(
            name=_xml_text(package),
            test_cases=[_test_case(r, out) for r in results],
            hostname=_xml_text(hostname),
            properties={
                _xml_text(k): _xml_text(v)
                for k, v in suite_properties(run, package, results, package == first)
            }
            or None,
            # the Ant format: local time, no time zone
            timestamp=datetime.fromtimestamp(started).strftime("%Y-%m-%dT%H:%M:%S"),
        )
        part = ET.fromstring(to_xml_report_string([suite], prettyprint=False))[0]
        for key in ("disabled", "errors", "failures", "tests"):
            totals[key] += int(part.get(key, 0))
        totals["time"] += float(part.get("time", 0))
        root.append(part)
    for key, value in totals.items():
        root.set(key, str(value))
    _add_attempts(root, run)
    _fix_up(root, run)
    ET.indent(root)
    return root


def render(run: RunSummary, out: Path) -> str:
    """The whole junit.xml document."""
    return HEAD + ET.tostring(_tree(run, out), encoding="unicode") + "\n"


HEAD = '<?xml version="1.0" encoding="utf-8"?>\n'


class JUnitReporter:
    """Writes OUT/junit.xml."""

    name = "junit"

    def write(self, run: RunSummary, out: Path) -> list[Path]:
        # as `render`, the text written as it is made rather than held whole
        with atomic_stream(out / "junit.xml") as f:
            f.write(HEAD)
            ET.ElementTree(_tree(run, out)).write(f, encoding="unicode")
            f.write("\n")
        return [out / "junit.xml"]
