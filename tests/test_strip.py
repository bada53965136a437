"""The history strip and the history page, as HTML (parsed with lxml, no browser).

tests/test_history_view.py checks the same pages from real runs in Chromium.
"""

from __future__ import annotations

import html

import lxml.html as lxml_html

from nixtest.reports.historyhtml import HistoryRow, RunRow, render_history
from nixtest.reports.strip import STRIP_LENGTH, Cell, strip_html

EVIL = '"><script>alert(1)</script>'


def cells(outcomes: str, logs: bool = True) -> list[Cell]:
    """P passed, F failed, E error, S skipped; lower case: flaky; the last is the current run."""
    names = {"p": "passed", "f": "failed", "e": "error", "s": "skipped"}
    made = []
    for n, letter in enumerate(outcomes, 1):
        outcome = names[letter.lower()]
        made.append(
            Cell(
                run=str(n),
                outcome=outcome,
                when=1_700_000_000 + n * 60,
                message=EVIL if outcome == "failed" else "",
                flaky=letter.islower(),
                log=f"logs/run {n}.log" if logs and outcome != "passed" else "",
                current=n == len(outcomes),
            )
        )
    return made


def boxes(fragment: str) -> list[lxml_html.HtmlElement]:
    root = lxml_html.fragment_fromstring(fragment)
    return list(root.iterchildren())


def test_a_strip_shows_the_last_20_oldest_first_with_links_to_kept_logs() -> None:
    history = cells("P" * 10 + "F" * 10 + "PPPEp")
    shown = boxes(strip_html(history))
    assert len(shown) == STRIP_LENGTH
    assert [b.get("data-run") for b in shown] == [str(n) for n in range(6, 26)]
    assert shown[-1].get("class") == "cell passed flaky current"
    failed = shown[5]
    assert failed.tag == "a" and failed.get("href") == "logs/run%2011.log"
    assert "cell failed" in failed.get("class")
    # passing results keep no log here: a box, not a link
    assert shown[0].tag == "span" and shown[0].get("href") is None
    # the message goes into the title as text
    assert EVIL in failed.get("title") and "run 11" in failed.get("title")


def test_a_strip_never_carries_markup_from_a_message() -> None:
    text = strip_html(cells("FFF"))
    assert "<script" not in text
    assert boxes(text)[0].get("title").endswith(EVIL)


def test_a_box_title_is_escaped_as_a_whole_would_be() -> None:
    """The title is escaped a part at a time (a run id or an outcome only when it needs it):
    the same attribute as `html.escape` of the whole title, each time formatted the same."""
    from datetime import datetime

    from nixtest.reports.strip import cell_title

    odd = [
        Cell(run="12", outcome="failed", when=1_700_000_059.999, message=EVIL + " & 'x'"),
        Cell(run='1"<2', outcome="<odd>&", when=1_700_000_060.0, message="é & <b>", flaky=True),
        Cell(run="3", outcome="error", when=0.5, message="", cached=True, current=True),
        Cell(run="4", outcome="passed", when=1_700_003_599.5, message="ignored for a pass"),
    ]
    for cell in odd:
        title = cell_title(cell)
        assert datetime.fromtimestamp(cell.when).strftime("%Y-%m-%d %H:%M") in title
        box = strip_html([cell])
        assert f'title="{html.escape(title, quote=True)}"' in box
        assert f'data-run="{html.escape(cell.run, quote=True)}"' in box
        assert boxes(box)[0].get("title") == title


def test_the_history_page_puts_newly_failing_first_and_marks_flaky() -> None:
    runs = [
        RunRow("3", 1_700_000_300, "host", "/t", {"passed": 2, "failed": 1}, ["b::new-failure"]),
        RunRow("2", 1_700_000_200, "host", "/t", {"passed": 3}),
    ]
    tests = [
        HistoryRow("a::steady", cells("PPP"), "still-succeeding"),
        HistoryRow("z::flaky", cells("PFP"), "newly-succeeding"),
        HistoryRow("b::new-failure", cells("PPF"), "newly-failing"),
        HistoryRow("c::always", cells("FFF"), "still-failing"),
    ]
    page = render_history(runs, tests, "/state/history.sqlite")
    tree = lxml_html.fromstring(page)
    assert not tree.xpath("//script")
    csp = tree.xpath("//meta[@http-equiv='Content-Security-Policy']/@content")
    assert csp and "default-src 'none'" in csp[0]
    changes = [row.xpath("td[1]")[0].text for row in tree.xpath("//table[@class='changes']/tr")]
    assert changes == ["b::new-failure", "c::always", "z::flaky"]
    rows = tree.xpath("//table[@class='tests']/tr")
    assert [r.xpath("td[1]")[0].text for r in rows] == [
        "b::new-failure",
        "c::always",
        "z::flaky",
        "a::steady",
    ]
    assert rows[2].xpath("td[3]")[0].text == "flaky" and rows[3].xpath("td[3]")[0].text is None
    assert tree.xpath("//tr[@id='run-3']/td[6]")[0].text == "b::new-failure"
    assert len(tree.xpath("//table[@class='tests']//span[@class='strip']")) == 4
