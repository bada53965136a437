"""The documentation site: built by Sphinx with warnings as errors, every internal link checked.

Sphinx, myst-parser, sphinx-click and furo come from the `docs` extra, which
the README's test command installs: in CI (`CI=true`) their absence fails the
test; elsewhere it is skipped, naming what is missing.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import urllib.parse
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
NEEDED = ("sphinx", "myst_parser", "sphinx_click", "furo")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    missing = [name for name in NEEDED if importlib.util.find_spec(name) is None]
    if missing:
        message = f"the docs extra is not installed (pip install '.[docs]'): no {', '.join(missing)}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-n",
            "-q",
            "-E",
            "-b",
            "html",
            str(DOCS),
            str(out),
            "-d",
            str(out / ".doctrees"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert done.stderr.strip() == "", done.stderr  # -q: anything left is a warning
    return out


class Links(HTMLParser):
    """Every href/src of a page, and every id it defines."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for key, value in attrs:
            if key in ("href", "src") and value is not None:
                self.links.append(value)
            elif key in ("id", "name") and value is not None:
                self.ids.add(value)


def parse(page: Path) -> Links:
    parser = Links()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def test_every_markdown_page_is_in_the_site(site: Path) -> None:
    for page in DOCS.glob("*.md"):
        assert (site / page.with_suffix(".html").name).is_file(), page.name


def test_every_internal_link_and_anchor_resolves(site: Path) -> None:
    pages = {page: parse(page) for page in site.rglob("*.html")}
    broken: list[str] = []
    checked = 0
    for page, parsed in pages.items():
        for link in parsed.links:
            url = urllib.parse.urlsplit(link)
            if url.scheme or link.startswith("//"):
                continue  # external: not fetched (CI has no business with the network here)
            target = (page.parent / urllib.parse.unquote(url.path)).resolve() if url.path else page
            if target.is_dir():
                target = target / "index.html"
            checked += 1
            if not target.exists():
                broken.append(f"{page.relative_to(site)}: {link}: no {target}")
            elif url.fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else parse(target).ids
                if urllib.parse.unquote(url.fragment) not in ids:
                    broken.append(f"{page.relative_to(site)}: {link}: no anchor #{url.fragment}")
    assert checked > 100
    assert broken == []


def test_the_cli_reference_is_generated_from_the_click_commands(site: Path) -> None:
    import click

    from nixtest.cli import main

    text = (site / "cli.html").read_text(encoding="utf-8")
    ctx = click.Context(main)
    for name in main.list_commands(ctx):
        command = main.get_command(ctx, name)
        assert command is not None
        # a section per command, an anchor per option: sphinx-click's, parsed as RST
        assert f'id="nixtest-{name}"' in text, name
        for param in command.params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("--"):
                    assert f'id="cmdoption-nixtest-{name}-{opt[2:]}"' in text, (name, opt)
