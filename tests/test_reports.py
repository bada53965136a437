"""Unit tests of the report writers (nixtest/reports/), on hand-made RunSummary objects.

The checks use the real consumers where there are some: xmllint and xmlschema
with Jenkins' junit-10.xsd, junitparser and xunitparser, xsltproc with the
Nix, Hydra and NixOS stylesheets, and Hydra's own rules for nix-support/.
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import subprocess
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from xml.sax.saxutils import XMLGenerator
from xml.sax.xmlreader import AttributesImpl

import junitparser
import lxml.html
import pytest
import xmlschema
import xunitparser
from junit_reference import render as library_junit

from nixtest.reports import (
    REPORTERS,
    JUnitReporter,
    LogXMLReporter,
    NixSupportReporter,
    Reporter,
    ReportError,
    ReportJSONReporter,
    junit,
    logxml,
    reportjson,
    write_reports,
)
from nixtest.reports.common import relative_to_out
from nixtest.reports.text import clean_text
from nixtest.results import RunSummary, Step
from nixtest.results import TestResult as Result

# ../shared/reference/ comes from the `reference` fixture of the checkout's conftest.py
JUNIT_XSD = "junit/jenkins-xunit-junit-10.xsd"
JUNIT4_XSD = "junit/junit5-jenkins-junit.xsd"

RED = "\x1b[31mRED\x1b[0m"
SCRIPT = "<script>alert('pwned')</script>"
BIG = 3 * 1024 * 1024

# The run: 2 packages, 6 tests.
N_TESTS, N_FAILED, N_ERROR, N_SKIPPED, N_PASSED = 6, 3, 1, 1, 1
FAILING = {("alpha", "modules"), ("alpha", "slow"), ("libxml++2.6", "noisy")}


def _random_text(seed: int, errors: str) -> str:
    return random.Random(seed).randbytes(BIG).decode("utf-8", errors)


def make_run(out: Path, *, failing: bool = True) -> RunSummary:
    """passed, failed (failing step), timed out, error, skipped, and one with 3 MB of noise."""

    def wrapper(package: str, test: str) -> str:
        return str(out / "rerun" / package / test)

    version = Result(
        package="alpha",
        test="version",
        start=1000.0,
        end=1000.5,
        steps=[
            Step(
                "python3 --version",
                command="python3 --version",
                exit_code=0,
                expected="exit 0",
                output=[("stdout", "Python 3.11.2\n")],
                start=1000.0,
                end=1000.25,
            )
        ],
        output=[("stdout", "checking the version\n")],
        wrapper=wrapper("alpha", "version"),
    )
    results = [version]
    if failing:
        results += [
            Result(
                package="alpha",
                test="modules",
                outcome="failed",
                message="step 'import ssl' failed: exit code 1, expected 0",
                kind="classic",
                command=[wrapper("alpha", "modules")],
                exit_code=1,
                start=1000.0,
                end=1002.0,
                steps=[
                    Step(
                        "import zlib",
                        command="python3 -c 'import zlib'",
                        exit_code=0,
                        start=1000.0,
                        end=1000.5,
                    ),
                    Step(
                        "import ssl",
                        command="python3 -c 'import ssl'",
                        exit_code=1,
                        outcome="failed",
                        expected="exit 0",
                        output=[
                            ("stdout", "before the import\n"),
                            ("stderr", "Traceback (most recent call last):\n"),
                            ("stderr", f"{RED} ModuleNotFoundError: No module named 'ssl' {SCRIPT}\n"),
                        ],
                        start=1000.5,
                        end=1001.75,
                        detail="ModuleNotFoundError: No module named 'ssl'",
                    ),
                ],
                output=[("stdout", "testing modules & more\n")],
                wrapper=wrapper("alpha", "modules"),
                warnings=["profile collision: bin/python3 from python3 and python3-minimal"],
            ),
            Result(
                package="alpha",
                test="slow",
                outcome="failed",
                timed_out=True,
                message="timed out after 2 seconds",
                start=1000.0,
                end=1002.125,
                output=[("stdout", "sleeping...\n")],
                wrapper=wrapper("alpha", "slow"),
            ),
            Result(
                package="libxml++2.6",
                test="noisy",
                outcome="failed",
                message=f"step 'noise' failed {RED} NUL\x00 here",
                start=1000.0,
                end=1003.0,
                steps=[
                    Step(
                        "noise",
                        command="cat /dev/urandom | head -c 3M",
                        exit_code=2,
                        outcome="failed",
                        output=[
                            ("stdout", _random_text(1, "surrogateescape")),
                            ("stdout", "\nstep output: NUL\x00 " + RED + " end of step\n"),
                        ],
                        output_dropped=123,
                        start=1000.0,
                        end=1003.0,
                    )
                ],
                output=[
                    ("stdout", _random_text(2, "surrogateescape")),
                    ("stderr", _random_text(3, "replace")),
                    (
                        "stdout",
                        "\ninvalid utf-8: "
                        + b"\xc3\x28\xa0\xa1\xff".decode("utf-8", "surrogateescape")
                        + "\n",
                    ),
                    ("stderr", f"NUL\x00 colour {RED} {SCRIPT}\n"),
                ],
                wrapper=wrapper("libxml++2.6", "noisy"),
            ),
        ]
    results += [
        Result(
            package="libxml++2.6",
            test="broken",
            outcome="error" if failing else "passed",
            message=(
                "package_tests/libxml++2.6/tests.yaml: test 'broken': key 'scirpt': unknown key"
                if failing
                else ""
            ),
            start=1000.0,
            end=1000.0,
        ),
        Result(
            package="libxml++2.6",
            test="later",
            outcome="skipped",
            message="needs a network connection",
            start=1000.0,
            end=1000.0,
        ),
    ]
    # the executor writes a full log for every test that ran (not for broken or skipped ones)
    for result in results:
        if result.test not in ("broken", "later"):
            log = out / "logs" / result.package / f"{result.test}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_bytes(result.output_text().encode("utf-8", "surrogateescape"))
    results[0].log_path = str(out / "logs" / "alpha" / "version.log")
    return RunSummary(results=results, set_spec="host", out_dir=str(out), start=1000.0, end=1003.5)


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """OUT, with a space in its path (Hydra products must quote it), reports written."""
    out = tmp_path_factory.mktemp("reports") / "nixtest out"
    written = write_reports(make_run(out), out)
    assert sorted(p.relative_to(out).as_posix() for p in written) == [
        "junit.xml",
        "log.html",
        "log.xml",
        "nix-support/failed",
        "nix-support/hydra-build-products",
        "nix-support/hydra-metrics",
        "report.json",
    ]
    assert all(p.is_file() for p in written)
    return out


# -- every file ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["junit.xml", "log.xml", "log.html"])
def test_no_escape_sequences_or_illegal_characters(out: Path, name: str) -> None:
    text = (out / name).read_bytes().decode("utf-8")  # strict: valid UTF-8
    assert "\x1b" not in text
    assert "[31m" not in text and "[0m" not in text
    assert "RED" in text  # the coloured word itself is kept
    assert not re.search("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]", text)


@pytest.mark.parametrize("name", ["junit.xml", "log.xml", "log.html"])
def test_output_is_bounded_and_points_to_the_log(out: Path, name: str) -> None:
    # 6 MB of noise went in; the reports keep a tail of it and say where the rest is
    assert (out / name).stat().st_size < 1024 * 1024
    text = (out / name).read_text()
    log = os.path.join(os.path.abspath(out), "logs", "libxml++2.6", "noisy.log")
    assert re.search(r"\[\.\.\. \d+ characters left out[^\]]*; full output: " + re.escape(log), text)
    assert "bytes the runner already left out" in text  # the step's output_dropped


def test_no_temporary_files_left(out: Path) -> None:
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert not [f for f in files if ".tmp" in f], files


# -- junit.xml ----------------------------------------------------------------


@pytest.mark.tools("xmllint")
def test_junit_validates_with_xmllint(out: Path, reference: Path) -> None:
    proc = subprocess.run(
        ["xmllint", "--noout", "--schema", str(reference / JUNIT_XSD), str(out / "junit.xml")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "validates" in proc.stderr


@pytest.mark.parametrize("xsd", [JUNIT_XSD, JUNIT4_XSD], ids=["junit-10", "dtkit-junit-4"])
def test_junit_validates_with_xmlschema(out: Path, reference: Path, xsd: str) -> None:
    xmlschema.XMLSchema(str(reference / xsd)).validate(str(out / "junit.xml"))


def test_junit_counts_agree(out: Path) -> None:
    root = ET.parse(out / "junit.xml").getroot()
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["alpha", "libxml++2.6"]
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for suite in suites:
        cases = suite.findall("testcase")
        assert all(c.get("classname") == suite.get("name") for c in cases)
        counted = {
            "tests": len(cases),
            "failures": sum(c.find("failure") is not None for c in cases),
            "errors": sum(c.find("error") is not None for c in cases),
            "skipped": sum(c.find("skipped") is not None for c in cases),
        }
        for key, value in counted.items():
            assert suite.get(key) == str(value), (suite.get("name"), key)
            totals[key] += value
        # exactly one result element per testcase at most
        assert all(len(c.findall("failure") + c.findall("error") + c.findall("skipped")) <= 1 for c in cases)
    assert totals == {"tests": N_TESTS, "failures": N_FAILED, "errors": N_ERROR, "skipped": N_SKIPPED}
    for key in ("tests", "failures", "errors"):
        assert root.get(key) == str(totals[key])
    assert "skipped" not in root.attrib  # not allowed on <testsuites> by junit-10.xsd


def test_junit_library_defaults_are_fixed(out: Path) -> None:
    root = ET.parse(out / "junit.xml").getroot()
    elements = list(root.iter())
    assert not [e.tag for e in elements if "disabled" in e.attrib]
    times = [e.get("time") for e in elements if e.tag in ("testsuites", "testsuite", "testcase")]
    assert len(times) == 1 + 2 + N_TESTS
    assert all(t is not None and re.fullmatch(r"\d+\.\d{3}", t) for t in times), times
    skipped = root.findall(".//skipped")
    assert len(skipped) == 1
    assert skipped[0].attrib == {} and skipped[0].text == "needs a network connection"
    case_times = {c.get("name"): c.get("time") for c in root.iter("testcase")}
    assert case_times["slow"] == "2.125" and case_times["broken"] == "0.000"


def _case(out: Path, package: str, test: str) -> ET.Element:
    root = ET.parse(out / "junit.xml").getroot()
    found = root.findall(f"testsuite[@name='{package}']/testcase[@name='{test}']")
    assert len(found) == 1
    return found[0]


def test_junit_failure_holds_the_failed_step_and_rerun_lines(out: Path) -> None:
    case = _case(out, "alpha", "modules")
    failure = case.find("failure")
    assert failure is not None and failure.text is not None
    assert failure.get("message") == "step 'import ssl' failed: exit code 1, expected 0"
    assert failure.get("type") == "failure"
    assert "step failed: import ssl" in failure.text
    assert "command: python3 -c 'import ssl'" in failure.text
    assert "RED ModuleNotFoundError: No module named 'ssl' " + SCRIPT in failure.text
    wrapper = str(out / "rerun" / "alpha" / "modules")
    assert failure.text.rstrip("\n").endswith(f"to reproduce: {wrapper}\n    to debug: {wrapper} --ipdb")
    system_out = case.findtext("system-out") or ""
    assert "[passed] import zlib" in system_out and "[failed] import ssl" in system_out
    assert f"to reproduce: {wrapper}" in system_out
    assert "testing modules & more" in system_out


def test_junit_timeout_error_and_stderr(out: Path) -> None:
    slow = _case(out, "alpha", "slow").find("failure")
    assert slow is not None and slow.get("type") == "timeout"
    assert "timed out after 2 seconds" in (slow.text or "")
    broken = _case(out, "libxml++2.6", "broken")
    error = broken.find("error")
    assert error is not None and "key 'scirpt': unknown key" in (error.get("message") or "")
    assert broken.find("failure") is None
    noisy = _case(out, "libxml++2.6", "noisy")
    system_err = noisy.findtext("system-err") or ""
    assert system_err.rstrip("\n").endswith(f"NUL\ufffd colour RED {SCRIPT}")
    assert "invalid utf-8: \ufffd(\ufffd\ufffd\ufffd" in (noisy.findtext("system-out") or "")
    failure = noisy.find("failure")
    assert failure is not None
    assert failure.get("message") == "step 'noise' failed RED NUL\ufffd here"


def test_junitparser_reads_the_same_counts(out: Path) -> None:
    xml = junitparser.JUnitXml.fromfile(str(out / "junit.xml"))
    outcomes: dict[str, int] = {}
    n = 0
    for suite in xml:
        for case in suite:
            n += 1
            kinds = [type(r).__name__ for r in case.result] or ["Passed"]
            for kind in kinds:
                outcomes[kind] = outcomes.get(kind, 0) + 1
    assert n == N_TESTS
    assert outcomes == {"Passed": N_PASSED, "Failure": N_FAILED, "Error": N_ERROR, "Skipped": N_SKIPPED}


def test_xunitparser_reads_the_same_counts(out: Path) -> None:
    # xunitparser asserts that the root's totals match the testcases
    with open(out / "junit.xml", "rb") as f:
        suite, result = xunitparser.parse(f)
    assert result.testsRun == N_TESTS
    assert len(result.failures) == N_FAILED
    assert len(result.errors) == N_ERROR
    assert len(result.skipped) == N_SKIPPED


# -- log.xml ------------------------------------------------------------------


def _children(nest: ET.Element, tag: str) -> list[ET.Element]:
    return [c for c in nest if c.tag == tag]


def test_logxml_structure(out: Path) -> None:
    root = ET.parse(out / "log.xml").getroot()
    assert root.tag == "logfile"
    assert (out / "log.xml").read_text().startswith('<?xml version="1.0" encoding="utf-8"?>')
    nests = list(root.iter("nest"))
    assert len(nests) == 2 + N_TESTS + 4  # packages, tests, steps
    for nest in nests:
        assert nest[0].tag == "head", "a nest starts with its head"
        assert nest[-1].tag == "line"
        assert re.fullmatch(r"\(finished: .+, in \d+\.\d\d seconds\)", nest[-1].text or "")
        assert {c.tag for c in nest} <= {"head", "line", "nest"}
    packages = _children(root, "nest")
    assert [p[0].text for p in packages] == ["package alpha", "package libxml++2.6"]
    heads: dict[str, ET.Element] = {}
    for package in packages:
        for test in _children(package, "nest"):
            heads[test[0].text or ""] = test
    assert sorted(heads) == [
        "test broken: error",
        "test later: skipped",
        "test modules: failed",
        "test noisy: failed",
        "test slow: failed (timed out)",
        "test version: passed",
    ]
    for text, test in heads.items():
        failing = "failed" in text or "error" in text
        assert (test[0].get("expanded") == "1") == failing, text
    steps = [s[0].text for s in _children(heads["test modules: failed"], "nest")]
    assert steps == ["step: import zlib", "step: import ssl"]


def test_logxml_lines(out: Path) -> None:
    root = ET.parse(out / "log.xml").getroot()
    lines = list(root.iter("line"))
    assert lines
    assert all("type" not in line.attrib for line in lines)  # type="serial" means a VM console
    streams = {line.get("stream") for line in lines} - {None}
    assert streams == {"stdout", "stderr"}
    modules = next(n for n in root.iter("nest") if n[0].text == "test modules: failed")
    ssl, zlib = (
        next(s for s in _children(modules, "nest") if s[0].text == f"step: {name}")
        for name in ("import ssl", "import zlib")
    )
    ssl_lines = _children(ssl, "line")
    assert len(ssl_lines) >= 5
    assert all(line.get("error") == "1" for line in ssl_lines)
    assert not [e for e in zlib.iter() if "error" in e.attrib]
    texts = [(line.get("stream"), line.text) for line in ssl_lines]
    assert ("stdout", "before the import") in texts
    assert ("stderr", f"RED ModuleNotFoundError: No module named 'ssl' {SCRIPT}") in texts
    wrapper = str(out / "rerun" / "alpha" / "modules")
    own = [line.text for line in _children(modules, "line")]
    assert f"to reproduce: {wrapper}" in own and f"    to debug: {wrapper} --ipdb" in own
    # output outside any step stays in the test's nest
    assert "testing modules & more" in own
    version = next(n for n in root.iter("nest") if n[0].text == "test version: passed")
    assert not [e for e in version.iter() if "error" in e.attrib]


def _head_and_line_texts(log_xml: Path) -> list[str]:
    root = ET.parse(log_xml).getroot()
    texts = [e.text or "" for e in root.iter() if e.tag in ("head", "line")]
    assert len(texts) > 100
    return [t for t in texts if t.strip()]


class _CodeTexts(HTMLParser):
    """The texts of <code> (Nix, NixOS) and <span class="code"> (Hydra) elements."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.texts: list[str] = []
        self._stack: list[tuple[str, list[str] | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = (dict(attrs).get("class") or "").split()
        if tag == "code" or (tag == "span" and "code" in classes):
            self._stack.append((tag, []))
        elif tag in ("code", "span", "a", "em"):
            self._stack.append((tag, None))

    def handle_endtag(self, tag: str) -> None:
        if self._stack and self._stack[-1][0] == tag:
            _, buffer = self._stack.pop()
            if buffer is not None:
                self.texts.append("".join(buffer))

    def handle_data(self, data: str) -> None:
        for _, buffer in reversed(self._stack):
            if buffer is not None:
                buffer.append(data)
                break


def _xsltproc(*args: str, stdin: bytes | None = None) -> bytes:
    proc = subprocess.run(["xsltproc", *args], input=stdin, capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout


PIPELINES = ["nixos-test-driver", "nix", "hydra"]


def _render(reference: Path, log_xml: Path, pipeline: str) -> str:
    if pipeline == "nixos-test-driver":
        html = _xsltproc(str(reference / pipeline / "log2html.xsl"), str(log_xml))
    else:
        marked = _xsltproc(str(reference / pipeline / "mark-errors.xsl"), str(log_xml))
        html = _xsltproc(str(reference / pipeline / "log2html.xsl"), "-", stdin=marked)
    return html.decode("utf-8")


@pytest.mark.tools("xsltproc")
@pytest.mark.parametrize("pipeline", PIPELINES)
def test_logxml_renders_with_the_stylesheets(out: Path, reference: Path, pipeline: str) -> None:
    html = _render(reference, out / "log.xml", pipeline)
    parser = _CodeTexts()
    parser.feed(html)
    parser.close()
    rendered = set(parser.texts)
    expected = _head_and_line_texts(out / "log.xml")
    missing = [t for t in expected if t not in rendered]
    assert not missing, missing[:5]
    assert "ModuleNotFoundError" in html and "<script>alert" not in html


@pytest.mark.tools("xsltproc")
@pytest.mark.parametrize("pipeline", PIPELINES)
def test_logxml_failing_tests_are_expanded_in_the_stylesheets(
    out: Path, reference: Path, pipeline: str
) -> None:
    tree = lxml.html.fromstring(_render(reference, out / "log.xml", pipeline))

    def nest_style(head: str) -> str:
        # the <ul> right after the head's <code>/<span class="code">
        found = [e for e in tree.iter("code", "span") if (e.text or "") == head]
        assert found, head
        ul = found[0].getnext()
        assert ul is not None and ul.tag == "ul", head
        return ul.get("style") or ""

    assert "display: none" not in nest_style("test modules: failed")
    assert "display: none" not in nest_style("step: import ssl")
    assert "display: none" in nest_style("step: import zlib")
    if pipeline == "nixos-test-driver":
        # expanded="1" opens a failing test even without error lines below it
        assert "display: none" not in nest_style("test slow: failed (timed out)")
        assert "display: none" in nest_style("test version: passed")


# -- log.html -----------------------------------------------------------------

VOID = {"meta", "br", "hr", "img", "input", "link", "wbr", "col", "area", "base", "source"}


class _HTMLCheck(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1:]}")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse_html(path: Path) -> _HTMLCheck:
    check = _HTMLCheck()
    check.feed(path.read_text(encoding="utf-8"))
    check.close()
    assert not check.problems, check.problems[:5]
    assert check.stack == []
    return check


def test_loghtml_parses_and_is_self_contained(out: Path) -> None:
    raw = (out / "log.html").read_text()
    check = _parse_html(out / "log.html")
    assert raw.startswith("<!DOCTYPE html>")
    tags = [t for t, _ in check.tags]
    assert "script" not in tags and "<script" not in raw
    assert "iframe" not in tags and "object" not in tags
    references = [
        value
        for _, attrs in check.tags
        for name, value in attrs.items()
        if name in ("src", "href", "action", "srcset", "data", "poster") and value
    ]
    assert references  # the failure list links to the tests
    assert not [r for r in references if re.match(r"\s*(\w+:|//)", r)], references
    assert not re.search(r"url\(|@import", raw)
    text = "".join(check.text)
    # test output is shown as text, never as markup
    assert SCRIPT in text
    assert "testing modules & more" in text


def test_loghtml_folding_rerun_and_summary(out: Path) -> None:
    tree = lxml.html.parse(str(out / "log.html")).getroot()
    tests = tree.xpath("//details[contains(concat(' ', @class, ' '), ' test ')]")
    assert len(tests) == N_TESTS
    seen = set()
    for details in tests:
        package = details.xpath("ancestor::details[1]/summary/span[@class='name']")[0].text
        name = details.xpath("summary/span[@class='name']")[0].text
        seen.add((package, name))
        failing = (package, name) in FAILING or name == "broken"
        assert ("open" in details.attrib) == failing, name
        rerun = details.xpath("pre[@class='rerun']")
        if failing and name != "broken":
            wrapper = str(out / "rerun" / package / name)
            # --ipdb only for the classic script; the others have no kind, so --shell
            flag = "--ipdb" if name == "modules" else "--shell"
            assert rerun and rerun[0].text_content() == (
                f"to reproduce: {wrapper}\n    to debug: {wrapper} {flag}"
            )
        elif not failing:
            assert not rerun
    assert len(seen) == N_TESTS
    # the summary's counts, each exactly
    summary = tree.xpath("//p[@class='summary']")[0]
    assert summary.xpath("strong")[0].text_content() == f"{N_TESTS} tests"
    counts = {span.get("class"): span.text_content() for span in summary.xpath("span")}
    assert counts == {
        "passed": f"{N_PASSED} passed",
        "failed": f"{N_FAILED} failed",
        "error": f"{N_ERROR} error",
        "skipped": f"{N_SKIPPED} skipped",
    }
    assert " in 3.50 s " in summary.text_content()
    assert tree.findtext(".//title") == f"nixtest: {N_PASSED} passed, {N_FAILED + N_ERROR} failed"
    # the failure index: one link per failed or broken test, to that test's own entry
    failed_links = tree.xpath("//ul/li/a[starts-with(@href, '#')]")
    linked = set()
    for link in failed_links:
        target = tree.get_element_by_id(link.get("href")[1:])
        package = target.xpath("ancestor::details[1]/summary/span[@class='name']")[0].text
        name = target.xpath("summary/span[@class='name']")[0].text
        assert link.text_content() == f"{package}::{name}"
        linked.add((package, name))
    assert len(failed_links) == len(linked) == N_FAILED + N_ERROR
    assert linked == FAILING | {("libxml++2.6", "broken")}, linked
    # the log link is relative to OUT and URL-quoted
    log_links = tree.xpath("//a[contains(@href, 'noisy.log')]")
    assert [a.get("href") for a in log_links] == ["logs/libxml%2B%2B2.6/noisy.log"]
    # a test that never ran has no log to link to
    broken = tree.xpath("//details[@id][summary/span[@class='name']='broken']")
    assert len(broken) == 1 and not broken[0].xpath(".//a[@href]")


# -- nix-support --------------------------------------------------------------

# Hydra's POSIX ERE (build-result.cc), matched against whole lines; [[:space:]] is
# the C locale's " \t\n\v\f\r", so no Unicode \s here.
SP = r"[ \t\n\v\f\r]"
NSP = r"[^ \t\n\v\f\r"
PRODUCT = re.compile(
    r"([a-zA-Z0-9_-]+)" + SP + r"+([a-zA-Z0-9_-]+)" + SP + r"+"
    r'("[^"]+"|' + NSP + r'<>"]+)'
    r"(" + SP + r"+(" + NSP + r"<>]+))?"
)


def _products(out: Path) -> list[tuple[str, str, str, str]]:
    text = (out / "nix-support" / "hydra-build-products").read_text()
    products = []
    for line in [line for line in text.split("\n") if line]:
        match = PRODUCT.fullmatch(line)
        assert match, f"Hydra would drop {line!r}"
        path = match[3][1:-1] if match[3].startswith('"') else match[3]
        assert os.path.isabs(path) and os.path.exists(path), line
        assert os.path.normpath(path) == path  # Hydra canonicalises it
        if match[5]:
            assert os.path.exists(os.path.join(path, match[5])), line
        products.append((match[1], match[2], path, match[5] or ""))
    return products


def test_hydra_build_products(out: Path) -> None:
    raw = (out / "nix-support" / "hydra-build-products").read_text()
    absout = os.path.abspath(out)
    assert " " in absout and f'"{absout}"' in raw  # quoted because of the space
    assert _products(out) == [
        ("report", "testlog", absout, "log.html"),
        ("report", "junit", os.path.join(absout, "junit.xml"), ""),
    ]


def test_hydra_build_products_unquoted(tmp_path: Path) -> None:
    out = tmp_path / "plain"
    write_reports(make_run(out), out)
    raw = (out / "nix-support" / "hydra-build-products").read_text()
    assert '"' not in raw
    assert [p[:2] for p in _products(out)] == [("report", "testlog"), ("report", "junit")]


def _metrics(out: Path) -> dict[str, tuple[float, str]]:
    metrics: dict[str, tuple[float, str]] = {}
    for line in (out / "nix-support" / "hydra-metrics").read_text().split("\n"):
        fields = line.split()
        if not line:
            continue
        assert len(fields) in (2, 3), line
        assert re.fullmatch(r"[a-zA-Z0-9._-]+", fields[0]), line
        value = float(fields[1])  # std::stod would take a prefix; we want all of it
        unit = fields[2] if len(fields) == 3 else ""
        if unit:
            assert re.fullmatch(r"[a-zA-Z0-9._%-]+", unit), line
        assert fields[0] not in metrics, f"{fields[0]} repeats: Hydra keeps only the last"
        metrics[fields[0]] = (value, unit)
    return metrics


def test_hydra_metrics(out: Path) -> None:
    assert _metrics(out) == {
        "tests": (N_TESTS, ""),
        "failures": (N_FAILED, ""),
        "errors": (N_ERROR, ""),
        "skipped": (N_SKIPPED, ""),
        "passed": (N_PASSED, ""),
        "duration": (3.5, "s"),
        "cached": (0, ""),
        "flaky": (0, ""),
        "package.alpha.duration": (0.5 + 2.0 + 2.125, "s"),
        "package.libxml__2.6.duration": (3.0, "s"),
    }


def test_hydra_metrics_names_do_not_collide(tmp_path: Path) -> None:
    run = RunSummary(
        results=[Result("a+b", "t", start=0, end=1), Result("a_b", "t", start=0, end=2)],
        start=0,
        end=2,
    )
    NixSupportReporter().write(run, tmp_path)
    metrics = _metrics(tmp_path)
    assert metrics["package.a_b.duration"] == (1.0, "s")
    assert metrics["package.a_b_2.duration"] == (2.0, "s")


def test_failed_marker_present_then_removed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    failed = out / "nix-support" / "failed"
    write_reports(make_run(out), out)
    assert failed.is_file()
    assert failed.read_text().splitlines() == [
        "alpha::modules",
        "alpha::slow",
        "libxml++2.6::noisy",
        "libxml++2.6::broken",
    ]
    # a later run into the same OUT with nothing failing removes it
    written = write_reports(make_run(out, failing=False), out)
    assert not failed.exists()
    assert failed not in written
    assert (out / "nix-support" / "hydra-metrics").is_file()
    assert _metrics(out)["failures"] == (0.0, "")


@pytest.mark.parametrize("outcome", ["failed", "error"])
def test_failed_marker_for_a_single_failure(tmp_path: Path, outcome: str) -> None:
    run = RunSummary(results=[Result("p", "t", outcome=outcome)], start=0, end=1)  # type: ignore[arg-type]
    NixSupportReporter().write(run, tmp_path)
    assert (tmp_path / "nix-support" / "failed").exists()


def test_no_failed_marker_when_only_skipped(tmp_path: Path) -> None:
    run = RunSummary(results=[Result("p", "t", outcome="skipped")], start=0, end=1)
    NixSupportReporter().write(run, tmp_path)
    assert not (tmp_path / "nix-support" / "failed").exists()


# -- write_reports ------------------------------------------------------------


class _Boom:
    def __init__(self, name: str) -> None:
        self.name = name

    def write(self, run: RunSummary, out: Path) -> list[Path]:
        raise RuntimeError(f"{self.name} exploded")


def test_reporters_are_named_and_distinct() -> None:
    names = [r.name for r in REPORTERS]
    assert names == ["junit", "logxml", "loghtml", "report.json", "nix-support"]


def test_a_failing_reporter_does_not_stop_the_others(tmp_path: Path) -> None:
    run = make_run(tmp_path, failing=False)
    reporters: list[Reporter] = [
        _Boom("first"),
        JUnitReporter(),
        _Boom("second"),
        LogXMLReporter(),
    ]
    with pytest.raises(ReportError) as info:
        write_reports(run, tmp_path, reporters)
    assert set(info.value.failures) == {"first", "second"}
    assert "first (RuntimeError: first exploded)" in str(info.value)
    assert "second (RuntimeError: second exploded)" in str(info.value)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert (tmp_path / "junit.xml").is_file() and (tmp_path / "log.xml").is_file()


def test_a_report_that_cannot_be_written_leaves_no_earlier_one(tmp_path: Path) -> None:
    """An earlier run's log.html must not sit beside this run's junit.xml."""
    write_reports(make_run(tmp_path, failing=True), tmp_path)
    assert (tmp_path / "nix-support" / "failed").is_file()
    (tmp_path / "log.html").unlink()
    (tmp_path / "log.html").mkdir()  # where the report goes, a folder: os.replace fails
    (tmp_path / "log.html" / "keep").write_text("")
    with pytest.raises(ReportError) as info:
        write_reports(make_run(tmp_path, failing=False), tmp_path)
    assert "log.html" in str(info.value)
    assert not (tmp_path / "nix-support" / "failed").exists(), "the earlier run's failure marker"
    assert ET.parse(tmp_path / "junit.xml").getroot().get("failures") == "0"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [], "temporary files left"


def test_empty_run(tmp_path: Path) -> None:
    written = write_reports(RunSummary(start=0, end=0), tmp_path)
    assert len(written) == 6  # no failed marker
    assert ET.parse(tmp_path / "junit.xml").getroot().get("tests") == "0"
    assert ET.parse(tmp_path / "log.xml").getroot().tag == "logfile"
    _parse_html(tmp_path / "log.html")


def test_names_with_markup_are_escaped(tmp_path: Path) -> None:
    nasty = 'x"<b>&\x1b[1m'
    run = RunSummary(
        results=[Result(nasty, nasty, outcome="failed", message=nasty, wrapper=nasty)],
        start=0,
        end=1,
    )
    write_reports(run, tmp_path)
    check = _parse_html(tmp_path / "log.html")
    assert "b" not in [t for t, _ in check.tags]
    assert clean_text(nasty) in "".join(check.text)
    ET.parse(tmp_path / "junit.xml")
    root = ET.parse(tmp_path / "log.xml").getroot()
    assert root.find("nest/head") is not None
    assert root.find("nest/head").text == f"package {clean_text(nasty)}"  # type: ignore[union-attr]


def test_report_json_is_what_design_md_shows(out: Path) -> None:
    data = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert set(data) >= {"run", "set", "baseline", "counts", "removed", "tests"}
    assert set(data["counts"]) == {
        "passed", "failed", "error", "skipped", "xfailed", "cached", "flaky",
        "newly-failing", "newly-succeeding", "still-failing", "new", "removed",
    }  # fmt: skip
    assert data["counts"]["passed"] == N_PASSED and data["counts"]["failed"] == N_FAILED
    assert data["baseline"] is None and data["removed"] == []
    test = data["tests"][0]
    assert set(test) == {
        "id", "package", "test", "outcome", "message", "cached", "flaky", "attempts",
        "change", "duration", "input", "packages", "log", "wrapper",
    }  # fmt: skip
    assert test["id"] == f"{test['package']}::{test['test']}"
    # paths inside OUT are relative to it, as in DESIGN.md
    assert any(t["log"] == "logs/alpha/version.log" for t in data["tests"])


def test_comparison_and_flaky_tests_in_every_report(tmp_path: Path) -> None:
    results = [
        Result("pkg", "broke", outcome="failed", message="boom", start=0, end=1, change="newly-failing",
               wrapper=str(tmp_path / "rerun/pkg/broke")),
        Result("pkg", "wobbly", start=0, end=1, flaky=True, attempts=2, change="still-succeeding",
               earlier_attempts=["attempt 1: failed: boom"], packages={"zlib1g": "1:1.3"}),
        Result("pkg", "kept", start=0, end=1, cached=True, cached_from="3", change="new",
               reason="passed in run 3 with the same inputs"),
    ]  # fmt: skip
    run = RunSummary(results=results, start=0, end=1, run_id="4", baseline="3", removed=["pkg::gone"])
    write_reports(run, tmp_path)
    metrics = _metrics(tmp_path)
    assert metrics["newly-failing"] == (1, "") and metrics["removed"] == (1, "")
    assert metrics["flaky"] == (1, "") and metrics["cached"] == (1, "")
    html = (tmp_path / "log.html").read_text()
    assert html.index("Compared with run 3") < html.index("package <span")
    logxml = (tmp_path / "log.xml").read_text()
    assert "compared with run 3: 1 newly failing" in logxml and "packages: zlib1g 1:1.3" in logxml
    root = ET.parse(tmp_path / "junit.xml").getroot()
    props = {p.get("name"): p.get("value") for p in root.iter("property")}
    assert props["nixtest.change.pkg::broke"] == "newly-failing"
    assert props["nixtest.newly-failing"] == "1" and props["nixtest.removed.tests"] == "pkg::gone"
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["counts"]["newly-failing"] == 1 and report["removed"] == ["pkg::gone"]


@pytest.mark.parametrize("name", ["junit.xml", "log.xml", "log.html", "report.json"])
def test_a_report_written_as_it_is_made_is_the_rendered_text(out: Path, name: str) -> None:
    """The writers stream their file (issue 8: a 10,000-test report is not held whole).

    The bytes are those of `render`.
    """
    from nixtest.reports import junit, loghtml, logxml, reportjson

    module = {"junit.xml": junit, "log.xml": logxml, "log.html": loghtml, "report.json": reportjson}[name]
    again = make_run(out)
    assert (out / name).read_bytes() == module.render(again, out).encode("utf-8")


# -- the writers against the library-made files -------------------------------

#: text of every awkward kind: markup, quotes, tabs and line breaks of all sorts, DEL and
#: C0/C1 controls, terminal escapes, characters XML forbids, undecodable bytes, a masked
#: secret, characters beyond the BMP
AWKWARD = [
    "",
    "plain",
    "x\"<b>&amp;'</b>",
    "tab\there\r\nCRLF\rCR\nLF",
    "DEL\x7f here",
    "\x7f",
    "NUL\x00 bell\x07 vt\x0b ff\x0c esc\x1b",
    "C1 \x85 \x9b31m csi \x80\x9f",
    f"{RED} and OSC \x1b]0;title\x07 after",
    "non-characters \ufffe\uffff \ufdd0 \U0001fffe",
    b"bytes \xc3\x28\xa0\xa1\xff".decode("utf-8", "surrogateescape"),
    "token=*** (masked)",
    "emoji \U0001f600, accents éàü, CJK 漢字",
    "  spaced   out  \n\n",
    "]]> end of CDATA",
    "x" * 1500,
]


def varied_run(out: Path, seed: int, n: int = 60) -> RunSummary:
    """Results of every outcome, with attempts, steps, properties, changes and awkward text."""
    rng = random.Random(seed)

    def text() -> str:
        return rng.choice(AWKWARD) + (rng.choice(AWKWARD) if rng.random() < 0.3 else "")

    def output() -> list[tuple[str, str]]:
        chunks = [(rng.choice(["stdout", "stderr"]), text() + "\n") for _ in range(rng.randrange(4))]
        if rng.random() < 0.1:
            noise = rng.randbytes(rng.randrange(70_000)).decode("utf-8", "surrogateescape")
            chunks.append(("stdout", noise))
        return chunks

    packages = ["alpha", "libxml++2.6", "zeta", "a\x7fb", "", f"p{RED}"]
    results = []
    for i in range(n):
        outcome = rng.choice(["passed", "failed", "error", "skipped", "xfailed"])
        start = 1000.0 + rng.choice([0, 0.0004, 0.0005, 1 / 3, 2.125, 86400.9996])
        steps = [
            Step(
                text() or "step",
                command=rng.choice(["", "true", text()]),
                exit_code=rng.choice([None, 0, 1, 124]),
                outcome=rng.choice(["passed", "passed", "failed", "error"]),
                expected=rng.choice(["", "exit 0", text()]),
                output=output(),
                output_dropped=rng.choice([0, 0, 77]),
                start=start,
                end=start + rng.random(),
                detail=rng.choice(["", text()]),
            )
            for _ in range(rng.choice([0, 0, 1, 2, 60]))
        ]
        # retried after a failure; the last attempt skipped is left to its own test (the
        # library's file had the attempts after <skipped>, which the schemas refuse)
        attempts = rng.choice([1, 1, 1, 3]) if outcome in ("passed", "failed", "error") else 1
        result = Result(
            package=rng.choice(packages),
            test=f"t{i}" + rng.choice(["", "", text()[:20]]),
            outcome=outcome,  # type: ignore[arg-type]
            message=rng.choice(["", text(), "timed out after 2 seconds"]),
            kind=rng.choice(["", "run", "classic", "pytest"]),
            command=rng.choice([[], [str(out / "rerun" / "x" / "y")], ["a", text()]]),
            exit_code=rng.choice([None, 0, 1, -9]),
            timed_out=outcome == "failed" and rng.random() < 0.3,
            output=output(),
            output_dropped=rng.choice([0, 0, 0, 12345]),
            start=start,
            end=start + rng.choice([0.0, 0.0, 0.0004, 0.0005, 0.0015, 1.23456789, 2.1255, 1e-7]),
            steps=steps,
            wrapper=rng.choice(["", str(out / "rerun" / "x" / f"t{i}")]),
            log_path=rng.choice(["", str(out / "logs" / "x" / f"t{i}.log"), "/elsewhere/t.log"]),
            warnings=[text() for _ in range(rng.randrange(2))],
            profile=rng.choice(["", "/nix/store/abc-profile"]),
            properties={text()[:10] or "k": text() for _ in range(rng.randrange(3))},
            input_key=rng.choice(["", "ab" * 32]),
            packages={rng.choice(["zlib1g", "libc6", 'q"<&>']): text()[:12] for _ in range(rng.randrange(4))},
            cached=rng.random() < 0.2,
            cached_from=rng.choice(["", "3"]),
            reason=rng.choice(["", "--no-cache", text()]),
            attempts=attempts,
            flaky=attempts > 1 and rng.random() < 0.5,
            earlier_attempts=[f"attempt {k}: failed: {text()}" for k in range(1, attempts)]
            + ([""] if attempts > 1 and rng.random() < 0.2 else []),
            change=rng.choice(["", "", "newly-failing", "still-succeeding", "new", "flaky-ish"]),
        )
        results.append(result)
    return RunSummary(
        results=results,
        set_spec=rng.choice(["host", text()]),
        out_dir=str(out),
        start=1000.0,
        end=1000.0 + rng.choice([0.0, 3.5, 1e-4]),
        interrupted=rng.random() < 0.3,
        run_id=rng.choice(["", "7"]),
        baseline=rng.choice([None, "6", "main.json"]),
        removed=rng.choice([[], ["pkg::gone", f"p::{text()}"]]),
    )


@pytest.mark.parametrize("seed", range(12))
def test_junit_is_the_library_made_file(tmp_path: Path, reference: Path, seed: int) -> None:
    """The direct writer gives the bytes junit_xml (parsed back, fixed up) gave, and they validate."""
    run = varied_run(tmp_path, seed)
    expected = library_junit(run, tmp_path)
    assert junit.render(run, tmp_path) == expected
    JUnitReporter().write(run, tmp_path)
    assert (tmp_path / "junit.xml").read_bytes() == expected.encode("utf-8")
    xmlschema.XMLSchema(str(reference / JUNIT_XSD)).validate(str(tmp_path / "junit.xml"))
    if not any(r.earlier_attempts for r in run.results):
        # the junit-4 schema knows no Surefire <flakyFailure>/<rerunFailure>
        xmlschema.XMLSchema(str(reference / JUNIT4_XSD)).validate(str(tmp_path / "junit.xml"))


def test_junit_of_an_empty_run_is_the_library_made_file(tmp_path: Path) -> None:
    run = RunSummary(start=0, end=0)
    assert junit.render(run, tmp_path) == library_junit(run, tmp_path)


@pytest.mark.parametrize("outcome", ["skipped", "xfailed", "failed", "passed"])
def test_junit_attempts_are_placed_as_the_library_made_file(tmp_path: Path, outcome: str) -> None:
    attempts = ["attempt 1: failed: boom", "attempt 2: error: \x7f<gone>"]
    results = [
        Result("pkg", "t", outcome=outcome, start=0, end=1, attempts=3, earlier_attempts=attempts),  # type: ignore[arg-type]
        # names the writer changes: the library's tree looked results up by the names
        # as written, so this case lists the attempts of pkg::t
        Result(
            "p\x7fkg", "t\x1b[1m", outcome="failed", start=0, end=1, attempts=2, earlier_attempts=attempts[:1]
        ),
    ]
    run = RunSummary(results=results, start=0, end=1)
    text = junit.render(run, tmp_path)
    assert text == library_junit(run, tmp_path)
    tag = "flakyFailure" if outcome == "passed" else "rerunFailure"
    assert text.count(f'<{tag} type="failure" message="attempt 1: failed: boom">') == 2


class _SaxLogWriter(logxml._LogWriter):
    """log.xml's writer as it was, over an XMLGenerator: the direct one must give its bytes."""

    def __init__(self, stream: io.TextIOBase) -> None:
        self._xml = XMLGenerator(stream, encoding="utf-8", short_empty_elements=False)

    def start(self) -> None:
        self._xml.startDocument()
        self._xml.startElement("logfile", AttributesImpl({}))

    def end(self) -> None:
        self._xml.endElement("logfile")
        self._xml.endDocument()

    def flush(self) -> None:
        pass

    def _element(self, tag: str, text: str, attrs: dict[str, str]) -> None:
        self._xml.startElement(tag, AttributesImpl({k: clean_text(v) for k, v in attrs.items()}))
        self._xml.characters(clean_text(text))
        self._xml.endElement(tag)
        self._xml.ignorableWhitespace("\n")

    def _open_nest(self) -> None:
        self._xml.startElement("nest", AttributesImpl({}))
        self._xml.ignorableWhitespace("\n")

    def _close_nest(self) -> None:
        self._xml.endElement("nest")
        self._xml.ignorableWhitespace("\n")


@pytest.mark.parametrize("seed", range(12))
def test_logxml_is_the_xmlgenerator_made_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    run = varied_run(tmp_path, seed)
    LogXMLReporter().write(run, tmp_path)
    with monkeypatch.context() as m:
        m.setattr(logxml, "_LogWriter", _SaxLogWriter)
        expected = logxml.render(run, tmp_path)
    assert (tmp_path / "log.xml").read_bytes() == expected.encode("utf-8")
    ET.parse(tmp_path / "log.xml")


@pytest.mark.parametrize("seed", range(12))
def test_report_json_is_what_json_dumps_gives(tmp_path: Path, seed: int) -> None:
    run = varied_run(tmp_path, seed)
    tests = [reportjson.test_entry(r, tmp_path) for rs in run.by_package().values() for r in rs]
    document = {**reportjson.head(run), "tests": tests}
    expected = json.dumps(document, indent=1, ensure_ascii=False) + "\n"
    assert reportjson.render(run, tmp_path) == expected
    try:
        data = expected.encode("utf-8")
    except UnicodeEncodeError:
        # a name or message with undecodable bytes: as json.dump into the file did, it fails
        with pytest.raises(UnicodeEncodeError):
            ReportJSONReporter().write(run, tmp_path)
    else:
        ReportJSONReporter().write(run, tmp_path)
        assert (tmp_path / "report.json").read_bytes() == data
    assert reportjson.render(RunSummary(start=0, end=0), tmp_path).endswith('"tests": []\n}\n')


@pytest.mark.parametrize(
    "value",
    [
        {"a": [1, 2.5, -0.0, 1e100, 10**30, True, False, None, 'é\x00"\\\n\U0001f600', [], {}, [[]]]},
        {"x": {"y": {}}, "z": (1, "2")},
        [float("nan"), float("inf"), -float("inf")],
        [],
        {},
        "plain",
        3,
    ],
)
def test_report_json_encodes_as_json_dumps(value: object) -> None:
    assert reportjson.encode(value) == json.dumps(value, indent=1, ensure_ascii=False)


def test_report_json_refuses_what_json_refuses() -> None:
    with pytest.raises(TypeError):
        reportjson.encode({1: "a"})
    with pytest.raises(TypeError):
        reportjson.encode({"a": {1, 2}})


def test_relative_to_out_is_what_commonpath_and_relpath_say() -> None:
    def slow(path: str, out: str) -> str | None:
        absout, abspath = os.path.abspath(out), os.path.abspath(path)
        return os.path.relpath(abspath, absout) if os.path.commonpath([absout, abspath]) == absout else None

    inside = ["/a", "/a/b", "/a/", "./a/../b", "/a/b/../c", "a", "a/b"]
    for path in [*inside, "/", "/ab", "//a", "///a", "..", "../x"]:
        for out in ["/", "/a", "/a/", "a", ".", "/a/b", "//a", "///", ".."]:
            assert relative_to_out(path, Path(out)) == slow(path, out), (path, out)
