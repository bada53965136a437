"""`nixtest sources`' private apt configuration: deb-src lines from the machine's own."""

from __future__ import annotations

from pathlib import Path

from debian.deb822 import Deb822

from nixtest.sources.debian import _last_error, derive_deb_src, has_autopkgtest

DEBIAN_SOURCES = """\
Types: deb
# a comment
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://example.org/off
Suites: x
Components: main
Enabled: no
"""


def etc(tmp_path: Path, sources: str = DEBIAN_SOURCES, one_line: str = "") -> Path:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(sources)
    (tmp_path / "sources.list.d" / "other.list.disabled").write_text("deb http://example.org/never x main\n")
    if one_line:
        (tmp_path / "sources.list").write_text(one_line)
    return tmp_path


def test_deb_src_is_made_from_deb_when_the_machine_has_none(tmp_path: Path) -> None:
    one_line, text, had_src = derive_deb_src(
        etc(tmp_path, one_line="deb [arch=amd64] http://a.example/d x main # c\n")
    )
    assert not had_src
    assert one_line == "deb-src [arch=amd64] http://a.example/d x main\n"
    [paragraph] = list(Deb822.iter_paragraphs(text.splitlines(True)))
    assert paragraph["Types"] == "deb-src"
    assert paragraph["Suites"] == "bookworm bookworm-updates"
    assert paragraph["Signed-By"] == "/usr/share/keyrings/debian-archive-keyring.gpg"
    assert "example.org" not in text + one_line  # disabled entries and other files stay out


def test_the_machines_own_deb_src_lines_are_used_as_they_are(tmp_path: Path) -> None:
    sources = DEBIAN_SOURCES.replace("Types: deb\n# a comment", "Types: deb deb-src", 1)
    one_line, text, had_src = derive_deb_src(etc(tmp_path, sources))
    assert had_src and one_line == ""
    assert [p["Types"] for p in Deb822.iter_paragraphs(text.splitlines(True))] == ["deb deb-src"]


def test_testsuite_names_autopkgtest_itself() -> None:
    assert has_autopkgtest(Deb822({"Testsuite": "autopkgtest"}))
    assert has_autopkgtest(Deb822({"Testsuite": "autopkgtest, autopkgtest-pkg-python"}))
    # autodep8's generated suites have no debian/tests/control to run
    assert not has_autopkgtest(Deb822({"Testsuite": "autopkgtest-pkg-perl"}))
    assert not has_autopkgtest(Deb822({}))


def test_apt_errors_become_one_line() -> None:
    output = (
        "Reading package lists...\n"
        "Err:1 http://deb.debian.org/debian bookworm/main x 1.0 (tar)\n  404  Not Found [IP: 1.2.3.4 80]\n"
        "E: Failed to fetch http://deb.debian.org/debian/pool/main/x/x_1.0.tar.xz"
        "  404  Not Found [IP: 1.2.3.4 80]\n"
        "E: Failed to fetch some archives.\n"
    )
    assert (
        _last_error(output)
        == "E: Failed to fetch http://deb.debian.org/debian/pool/main/x/x_1.0.tar.xz 404 Not Found"
    )
