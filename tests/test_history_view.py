"""History you can look at: each test's strip in log.html and `nixtest history --html`,
from real runs, opened in headless Chromium.

Four runs of one package: `steady` passes (cached from the second run on),
`always` fails every time, `flaky` fails and then passes at its retry, and
`breaks` passes three times and then fails: newly failing.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path

import lxml.html as lxml_html
import pytest
from test_e2e_reports import chromium

from conftest import nixtest_command, remove_tree, world_readable_dir

pytestmark = [pytest.mark.dpkg]

RUNS = 4

TESTS = """\
tests:
  steady:
    run: "true"
  always:
    run: echo "always broken"; false
  flaky:
    run: n=$(cat {counter}); echo $((n + 1)) > {counter}; [ $((n % 2)) -eq 1 ]
    profile: [coreutils]
  breaks:
    run: test "$MODE" = good
    environment: {{MODE: {mode}}}
"""


class History:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tests = root / "pt"
        self.out = root / "out"
        self.state = root / "state"
        self.counter = root / "counter"
        self.runs: list[subprocess.CompletedProcess[str]] = []

    def run(self, mode: str) -> subprocess.CompletedProcess[str]:
        package = self.tests / "coreutils"
        package.mkdir(parents=True, exist_ok=True)
        (package / "tests.yaml").write_text(TESTS.format(counter=self.counter, mode=mode))
        env = {k: v for k, v in os.environ.items() if not k.startswith("NIXTEST_")}
        done = subprocess.run(
            nixtest_command(
                "run",
                "--tests",
                str(self.tests),
                "--out",
                str(self.out),
                "--state",
                str(self.state),
                "--retries",
                "1",
            ),
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        self.runs.append(done)
        return done


@pytest.fixture(scope="module")
def history() -> Iterator[History]:
    root = world_readable_dir("nixtest-history-view-")
    made = History(root)
    made.counter.write_text("0\n")
    os.chmod(made.counter, 0o666)
    for n in range(RUNS):
        done = made.run("good" if n < RUNS - 1 else "bad")
        assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-2000:]
    yield made
    remove_tree(root)


def strips(page: Path) -> dict[str, lxml_html.HtmlElement]:
    tree = lxml_html.parse(str(page)).getroot()
    found = {}
    for details in tree.xpath("//details[contains(concat(' ', @class, ' '), ' test ')]"):
        name = details.xpath("summary/span[@class='name']")[0].text
        strip = details.xpath("summary/span[@class='strip']")
        assert len(strip) == 1, name
        found[name] = strip[0]
    return found


def cell_classes(strip: lxml_html.HtmlElement) -> list[str]:
    return [cell.get("class") for cell in strip]


def test_log_html_shows_each_tests_last_outcomes_as_a_strip(history: History) -> None:
    found = strips(history.out / "log.html")
    assert set(found) == {"steady", "always", "flaky", "breaks"}
    assert cell_classes(found["steady"]) == [
        "cell passed",
        "cell passed cached",
        "cell passed cached",
        "cell passed cached current",
    ]
    assert cell_classes(found["breaks"]) == [
        "cell passed",
        "cell passed cached",
        "cell passed cached",
        "cell failed current",
    ]
    assert cell_classes(found["always"]) == ["cell failed"] * 3 + ["cell failed current"]
    assert all("flaky" in c for c in cell_classes(found["flaky"]))
    # the runs, oldest first, and this run's box last
    runs = [cell.get("data-run") for cell in found["always"]]
    assert runs == sorted(runs, key=int) and len(set(runs)) == RUNS


def test_the_strips_link_to_earlier_runs_logs(history: History) -> None:
    found = strips(history.out / "log.html")
    always = found["always"]
    assert all(cell.tag == "a" for cell in always)
    hrefs = [cell.get("href") for cell in always]
    assert hrefs[-1] == "logs/coreutils/always.log"
    for href, cell in zip(hrefs[:-1], always):
        assert href == f"history/run-{cell.get('data-run')}/coreutils/always.log"
    for href in hrefs:
        assert "always broken" in (history.out / href).read_text(), href
    # a passing result keeps no extra log: a box, not a link
    assert [cell.tag for cell in found["breaks"]][:3] == ["span"] * 3


def test_log_html_opens_with_the_changes_newly_failing_first(history: History) -> None:
    tree = lxml_html.parse(str(history.out / "log.html")).getroot()
    body = tree.xpath("//body")[0]
    headings = [h.text_content().strip() for h in body.iter("h2")]
    assert headings[0].lower().startswith("newly failing"), headings
    first = body.xpath("//h2[1]/following-sibling::ul[1]/li/a")[0]
    assert first.text == "coreutils::breaks"


def test_nixtest_history_html_writes_the_same_view_across_runs(history: History) -> None:
    page = history.root / "report" / "history.html"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NIXTEST_")}
    done = subprocess.run(
        nixtest_command("history", "--state", str(history.state), "--html", str(page)),
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert str(page) in done.stdout + done.stderr
    tree = lxml_html.parse(str(page)).getroot()
    changes = [row.xpath("td[1]")[0].text for row in tree.xpath("//table[@class='changes']/tr")]
    assert changes[0] == "coreutils::breaks", changes
    assert "coreutils::flaky" in changes
    rows = {r.xpath("td[1]")[0].text: r for r in tree.xpath("//table[@class='tests']/tr")}
    assert set(rows) == {f"coreutils::{t}" for t in ("steady", "always", "flaky", "breaks")}
    assert len(tree.xpath("//table[@class='runs']/tr[@id]")) == RUNS
    always = rows["coreutils::always"].xpath(".//span[@class='strip']/*")
    assert len(always) == RUNS and all(cell.tag == "a" for cell in always)
    for cell in always:
        assert "always broken" in (page.parent / cell.get("href")).read_text()


# --------------------------------------------------------------------------- in Chromium

#: reports, into the body's data-strips, what the browser drew of every strip
PROBE = (
    "<script>window.addEventListener('load', () => document.body.setAttribute('data-strips', "
    "JSON.stringify([...document.querySelectorAll('.strip')].map(s => ({"
    "width: s.getBoundingClientRect().width, "
    "cells: [...s.children].map(c => ({tag: c.tagName, href: c.getAttribute('href'), "
    "bg: getComputedStyle(c).backgroundColor, w: c.getBoundingClientRect().width}))})))));"
    "</script>"
)

GREEN, RED = "rgb(46, 139, 61)", "rgb(198, 40, 40)"


def drawn(page: Path, tmp_path: Path) -> list[dict[str, object]]:
    """The page as Chromium lays it out: every strip's width and its cells' colour and links."""
    source = page.read_text(encoding="utf-8")
    probe = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", source)
    probe_page = page.with_name("probe-" + page.name)
    probe_page.write_text(probe.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    try:
        dom = chromium(tmp_path, "--dump-dom", probe_page.as_uri())
    finally:
        probe_page.unlink()
    match = re.search(r'<body[^>]*data-strips="([^"]*)"', dom)
    assert match, dom[:2000]
    import html

    return list(json.loads(html.unescape(match.group(1))))


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """The rows of an 8-bit RGB(A) PNG, unfiltered: enough for Chromium's screenshots."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    height = depth = colour = 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunk = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", chunk[:10])
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    assert depth == 8 and colour in (2, 6), (depth, colour)
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for x in range(stride):
            left = line[x - bpp] if x >= bpp else 0
            up = previous[x]
            corner = previous[x - bpp] if x >= bpp else 0
            if kind == 1:
                line[x] = (line[x] + left) & 0xFF
            elif kind == 2:
                line[x] = (line[x] + up) & 0xFF
            elif kind == 3:
                line[x] = (line[x] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                pred = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[x] = (line[x] + pred) & 0xFF
        rows.append(bytes(line) if bpp == 3 else bytes(b for i, b in enumerate(line) if i % 4 != 3))
        previous = line
    return width, height, rows


def count_colour(rows: list[bytes], rgb: tuple[int, int, int]) -> int:
    pixel = bytes(rgb)
    return sum(len(re.findall(re.escape(pixel), row)) for row in rows if pixel in row)


@pytest.mark.chromium
@pytest.mark.parametrize("which", ["log.html", "history.html"])
def test_the_strips_as_chromium_draws_them(history: History, tmp_path: Path, which: str) -> None:
    if which == "log.html":
        page = history.out / "log.html"
    else:
        page = history.root / "report" / "history.html"
        if not page.exists():
            test_nixtest_history_html_writes_the_same_view_across_runs(history)
    found = drawn(page, tmp_path)
    assert len(found) >= 4
    for strip in found:
        assert float(strip["width"]) > 10  # type: ignore[arg-type]
        cells = strip["cells"]
        assert isinstance(cells, list)
        assert all(float(c["w"]) > 5 for c in cells)
    colours = {c["bg"] for s in found for c in s["cells"]}  # type: ignore[union-attr]
    assert GREEN in colours and RED in colours, colours
    links = [c["href"] for s in found for c in s["cells"] if c["tag"] == "A"]  # type: ignore[union-attr]
    assert links
    for href in links:
        assert (page.parent / str(href)).is_file(), href
    # and the screenshot shows them: the strips' red and green boxes are on it
    png = tmp_path / (which + ".png")
    chromium(tmp_path, f"--screenshot={png}", "--window-size=1200,900", page.as_uri())
    _, _, rows = png_pixels(png.read_bytes())
    assert count_colour(rows, (198, 40, 40)) > 50, "no red box drawn"
    assert count_colour(rows, (46, 139, 61)) > 50, "no green box drawn"


def test_logs_of_runs_no_strip_shows_are_removed(history: History) -> None:
    # last in this file: it runs once more
    stale = history.out / "history" / "run-999" / "coreutils"
    stale.mkdir(parents=True)
    (stale / "always.log").write_text("old\n")
    done = history.run("bad")
    assert done.returncode == 1, done.stderr[-2000:]
    kept = sorted(p.name for p in (history.out / "history").iterdir())
    shown = {
        f"run-{cell.get('data-run')}"
        for strip in strips(history.out / "log.html").values()
        for cell in strip
        if cell.tag == "a" and "current" not in cell.get("class")
    }
    assert "run-999" not in kept
    assert kept == sorted(shown)
