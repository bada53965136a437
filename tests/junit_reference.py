"""junit.xml as nixtest made it through the junit-xml library, kept to check the direct writer.

`nixtest.reports.junit` writes the file itself (issue 8: the library's text,
parsed back and fixed up, was most of the report's time).  This is that earlier
code, unchanged but for its imports: tests/test_reports.py checks that both give
the same bytes for the same results.
"""

from __future__ import annotations

import socket
import xml.etree.ElementTree as ET
from collections import defaultdict
from datetime import datetime
from pathlib import Path

from junit_xml import TestCase, TestSuite, to_xml_report_string

from nixtest.reports.common import suite_properties
from nixtest.reports.junit import (
    HEAD,
    MESSAGE_LIMIT,
    _bounded_output,
    _message,
    _result_text,
    _system_out,
    _time,
    _xml_text,
)
from nixtest.results import RunSummary, TestResult


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
