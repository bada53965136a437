"""tests.yaml: reading, validating, and one-line errors naming the file, the test and the key."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
import yaml

from nixtest import definitions
from nixtest.definitions import (
    DEFAULT_TIMEOUT,
    BadTest,
    Definition,
    Expect,
    display_path,
    find_packages,
    load_package,
    real_path,
)
from nixtest.definitions import TestDef as Def
from nixtest.errors import DefinitionError


def write_package(root: Path, name: str, text: str, files: tuple[str, ...] = ()) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tests.yaml").write_text(textwrap.dedent(text), encoding="utf-8")
    for rel in files:
        path = folder / rel
        if rel.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("# a file\n")
    return folder


def by_name(definitions: list[Definition]) -> dict[str, Definition]:
    return {d.name: d for d in definitions}


def good(definitions: list[Definition], name: str) -> Def:
    found = by_name(definitions)[name]
    assert isinstance(found, Def), getattr(found, "error", found)
    return found


def bad(definitions: list[Definition], name: str) -> DefinitionError:
    found = by_name(definitions)[name]
    assert isinstance(found, BadTest), f"{name} was accepted: {found}"
    return found.error


# --------------------------------------------------------------------------- valid definitions


def test_full_definition(tmp_path: Path) -> None:
    folder = write_package(
        tmp_path,
        "python3",
        """
        tests:
          modules:
            script: available_modules.py
            environment: {TEST_PYTHON_MODULES: "zlib ssl sqlite3", COUNT: 3, RATIO: 1.5, EMPTY: ""}
            secrets: [API_TOKEN]
            profile: [python3, coreutils]
            skel: skel/
            sources: {devpkg: devpkg/, conf/app.ini: app.ini}
            symlinks:
              other: [coreutils, hello]
              data: skel
              etc: /etc
            timeout: 120
          version:
            run: python3 --version
            expect: {exit: 0, stdout: '^Python 3\\.', stderr: ['a', 'b']}
          imports:
            imports: [zlib, xml.etree.ElementTree]
          module:
            script: test_things.py
        """,
        files=("available_modules.py", "skel/", "devpkg/", "app.ini", "test_things.py"),
    )
    defs = load_package(folder)
    assert [d.name for d in defs] == ["modules", "version", "imports", "module"]

    modules = good(defs, "modules")
    assert modules.kind == "classic"
    assert modules.package == "python3"
    assert modules.nodeid == "python3::modules"
    assert modules.script == folder / "available_modules.py"
    assert modules.package_dir == folder
    assert modules.environment == {
        "TEST_PYTHON_MODULES": "zlib ssl sqlite3",
        "COUNT": "3",
        "RATIO": "1.5",
        "EMPTY": "",
    }
    assert modules.secrets == ("API_TOKEN",)
    assert modules.profile == ("python3", "coreutils")
    assert modules.skel == folder / "skel"
    assert modules.sources == {"devpkg": folder / "devpkg", "conf/app.ini": folder / "app.ini"}
    links = {link.name: link for link in modules.symlinks}
    assert links["other"].packages == ("coreutils", "hello") and links["other"].path is None
    assert links["data"].path == folder / "skel" and links["data"].packages == ()
    assert links["etc"].path == Path("/etc")
    assert modules.timeout == 120.0 and modules.timeout_set
    assert modules.packages_needed() == {"python3", "coreutils", "hello"}

    version = good(defs, "version")
    assert version.kind == "run"
    assert version.run == "python3 --version"
    assert version.expect == Expect(exit=0, stdout=("^Python 3\\.",), stderr=("a", "b"))
    assert version.expect.has_patterns
    assert version.profile == ("python3",), "the default profile is the package itself"
    assert version.timeout == DEFAULT_TIMEOUT and not version.timeout_set

    imports = good(defs, "imports")
    assert imports.kind == "imports"
    assert imports.imports == ("zlib", "xml.etree.ElementTree")

    assert good(defs, "module").kind == "pytest", "a script named test_*.py is a pytest module"


def test_run_without_patterns_has_none(tmp_path: Path) -> None:
    folder = write_package(tmp_path, "hello", "tests: {plain: {run: hello, expect: {exit: 3}}}")
    plain = good(load_package(folder), "plain")
    assert plain.expect == Expect(exit=3)
    assert not plain.expect.has_patterns


def test_yaml_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    folder = write_package(
        tmp_path,
        "hello",
        """
        tests:
          first: &common
            run: hello
            timeout: 30
          second:
            <<: *common
            timeout: 40
        """,
    )
    defs = load_package(folder)
    assert good(defs, "first").timeout == 30
    second = good(defs, "second")
    assert second.run == "hello" and second.timeout == 40


def test_find_packages(tmp_path: Path) -> None:
    write_package(tmp_path, "zlib", "tests: {a: {run: 'true'}}")
    write_package(tmp_path, "bash", "tests: {a: {run: 'true'}}")
    (tmp_path / "no-definitions").mkdir()
    (tmp_path / "stray.yaml").write_text("tests: {}")
    assert [p.name for p in find_packages(tmp_path)] == ["bash", "zlib"]
    assert find_packages(tmp_path / "missing") == []


def test_display_path_is_relative_below_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert display_path(tmp_path / "pt" / "hello" / "tests.yaml") == os.path.join("pt", "hello", "tests.yaml")


def test_display_path_is_relpath(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cut by hand gives relpath's text, below the current folder, beside it and above it."""
    below = tmp_path / "cwd"
    below.mkdir()
    monkeypatch.chdir(below)
    for path in (
        below / "pt" / "hello" / "tests.yaml",
        f"{below}/pt//hello/./x/../tests.yaml",
        f"{below}/pt/hello/",
        below,
        f"{below}x/tests.yaml",  # the same prefix, another folder
        tmp_path / "beside" / "tests.yaml",
        "/",
        "relative/tests.yaml",
    ):
        assert display_path(path) == os.path.relpath(path), path


def test_real_path_is_realpath(tmp_path: Path) -> None:
    (tmp_path / "real" / "pkg").mkdir(parents=True)
    (tmp_path / "link").symlink_to("real")
    (tmp_path / "real" / "alias").symlink_to("pkg")
    (tmp_path / "real" / "loop").symlink_to("loop")
    known: dict[str, str] = {}
    for _ in range(2):  # the second time from what `known` kept
        for path in (
            tmp_path / "link" / "pkg",
            tmp_path / "link" / "alias",
            tmp_path / "link" / "loop",
            tmp_path / "link" / "missing",
            f"{tmp_path}/link/pkg/..",
            f"{tmp_path}//link/./pkg",
            "/",
            "/usr",
        ):
            assert real_path(path, known) == os.path.realpath(path), path
    assert known[str(tmp_path / "link")] == str(tmp_path / "real")


def test_package_folder_names_are_resolved_with_known_parents(tmp_path: Path) -> None:
    write_package(tmp_path / "real", "hello", "tests: {a: {run: hello}}")
    (tmp_path / "real" / "other").symlink_to("hello")
    (tmp_path / "link").symlink_to("real")
    known: dict[str, str] = {}
    for name in ("hello", "other"):
        test = good(load_package(tmp_path / "link" / name, known), "a")
        assert test.package == "hello"
        assert test.file == tmp_path / "real" / "hello" / "tests.yaml"
        assert test == good(load_package(tmp_path / "link" / name), "a")


#: documents the fast way makes itself, and documents it leaves to PyYAML's constructor
YAML_DOCUMENTS = [
    "tests: {a: {run: hello}}",
    "tests:\n  a:\n    run: hello\n    expect: {exit: 3, stdout: '^x$'}\n    timeout: 1.5\n",
    "tests: {a: {run: hello, run: bye}, a: {}}",
    "tests: {1: x, true: y, 1.0: z, null: w, ~: v, 0x1F: u, .inf: t, -.NaN: s}",
    "tests: {a: [1, two, 3.0, no, null, [nested, {deep: [yes]}]]}",
    "tests:\n  a: ''\n  b: \"quoted: yes\"\n  c: !!str 12\n  d: !!int '7'\n  e: |\n    block\n",
    "",
    "# only a comment\n",
    "just a string",
    "[1, 2]",
    "tests: {a: 2001-12-14}",
    "tests: {a: !!binary aGVsbG8=}",
    "tests: {a: !custom x}",
    "tests: {a: !!python/object:os.system x}",
    "tests: {a: {<<: {run: x}, timeout: 3}}",
    "tests: {=: x}",
    "tests: {a: =}",
    "tests: {[1, 2]: x}",
    "tests: {{a: 1}: x}",
    "tests: {!!str 1: x}",
    "tests: &a {b: *a}",
    "common: &c {run: x}\ntests: {a: *c, b: *c}",
    "tests: {a: &s hello, b: *s}",
    "tests: {a: *undefined}",
    "tests: {a: &d 1, b: &d 2}",
    "tests: {a: [}",
    "tests: a: b",
    "---\ntests: {}\n---\ntests: {}\n",
    "tests: {a: !!map [1]}",
    "tests: {a: !!seq {b: 1}}",
    "tests: {a: !!str {b: 1}}",
    "tests: {a: !!null x}",
    "tests: {a: !!bool maybe}",
    "tests: {a: !!int nope}",
    "[" * 2000 + "]" * 2000,
    "x: &a [1,1,1,1,1,1,1,1,1]\ny: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
    "z: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nw: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
    "v: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nu: [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n",
]


def _full_way(text: str) -> object:
    definitions._bound_aliases(text)
    return yaml.load(text, Loader=definitions._UniqueKeyLoader)  # noqa: S506 - a SafeLoader


def _outcome(load: object, text: str) -> object:
    """What loading gives: the values with each mapping's noted duplicates, or the error's type and text."""

    def shape(value: object, depth: int = 0) -> object:
        if depth > 50:  # a recursive document
            return "..."
        if isinstance(value, dict):
            items = [(shape(k, depth + 1), shape(v, depth + 1)) for k, v in value.items()]
            return ("map", type(value).__name__, getattr(value, "duplicates", None), items)
        if isinstance(value, list):
            return ("seq", [shape(v, depth + 1) for v in value])
        return (type(value).__name__, repr(value))

    try:
        return shape(load(text))  # type: ignore[operator]
    except Exception as exc:  # noqa: BLE001 - the error is what is compared
        return ("error", type(exc).__name__, str(exc))


@pytest.mark.parametrize("text", YAML_DOCUMENTS, ids=range(len(YAML_DOCUMENTS)))
def test_fast_yaml_loading_gives_what_pyyaml_gives(text: str) -> None:
    assert _outcome(definitions._load, text) == _outcome(_full_way, text)


def test_plain_documents_take_the_fast_way(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tests.yaml of strings, numbers, lists and mappings never reaches PyYAML's constructor."""

    def refused(*args: object, **kwargs: object) -> None:
        raise AssertionError("the full way was taken")

    monkeypatch.setattr(definitions, "_bound_aliases", refused)
    for text in YAML_DOCUMENTS[:6]:
        definitions._load(text)
    assert definitions._load(YAML_DOCUMENTS[2])["tests"].duplicates == ("a",)


def test_a_document_over_the_node_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(definitions, "MAX_NODES", 10)
    with pytest.raises(definitions.DefinitionsUnreadable, match="more than 10 values"):
        definitions._load("tests: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]")
    assert definitions._load("tests: [1, 2, 3, 4, 5, 6, 7]") == {"tests": [1, 2, 3, 4, 5, 6, 7]}


# --------------------------------------------------------------------------- errors of one test

# (test body in YAML, the key the error must name, a word of the problem)
TEST_ERRORS = {
    "unknown-key": ("{run: hello, bogus: 1}", "bogus", "unknown key"),
    "timeout-type": ("{run: hello, timeout: soon}", "timeout", "positive number"),
    "timeout-zero": ("{run: hello, timeout: 0}", "timeout", "positive number"),
    "timeout-bool": ("{run: hello, timeout: true}", "timeout", "positive number"),
    "env-not-mapping": ("{run: hello, environment: [A]}", "environment", "must be a mapping"),
    "env-bad-name": ("{run: hello, environment: {1A: x}}", "environment.1A", "variable name"),
    "env-list-value": ("{run: hello, environment: {A: [x]}}", "environment.A", "must be a string"),
    "env-null-value": ("{run: hello, environment: {A: null}}", "environment.A", "must be a string"),
    "env-reserved": ("{run: hello, environment: {HOME: /root}}", "environment.HOME", "set by nixtest"),
    "env-nul": ('{run: hello, environment: {A: "x\\0y"}}', "environment.A", "NUL"),
    "profile-string": ("{run: hello, profile: hello}", "profile", "list of strings"),
    "profile-item": ("{run: hello, profile: [hello, 3]}", "profile[1]", "must be a string"),
    "secrets-string": ("{run: hello, secrets: TOKEN}", "secrets", "list of strings"),
    "secrets-bad-name": ("{run: hello, secrets: [a-b]}", "secrets[0]", "variable name"),
    "secret-also-env": ("{run: hello, secrets: [A], environment: {A: x}}", "secrets[0]", "also set"),
    "script-missing": ("{script: nothere.py}", "script", "no such file"),
    "script-folder": ("{script: skel}", "script", "must be a file"),
    "script-absolute": ("{script: /etc/passwd}", "script", "relative"),
    "script-type": ("{script: [a.py]}", "script", "must be a string"),
    "run-empty": ("{run: '  '}", "run", "must not be empty"),
    "run-and-script": ("{run: hello, script: present.py}", "run", "exactly one"),
    "imports-empty": ("{imports: []}", "imports", "at least one"),
    "imports-bad-module": ("{imports: [zlib, 'os; rm']}", "imports[1]", "not a module name"),
    "expect-not-run": ("{imports: [zlib], expect: {exit: 0}}", "expect", "only a 'run' test"),
    "expect-not-mapping": ("{run: hello, expect: 0}", "expect", "must be a mapping"),
    "expect-unknown": ("{run: hello, expect: {code: 1}}", "expect.code", "unknown key"),
    "expect-exit-range": ("{run: hello, expect: {exit: 256}}", "expect.exit", "0-255"),
    "expect-exit-type": ("{run: hello, expect: {exit: '0'}}", "expect.exit", "0-255"),
    "bad-regex": ("{run: hello, expect: {stdout: '(['}}", "expect.stdout", "regular expression"),
    "bad-regex-list": (
        "{run: hello, expect: {stderr: [ok, '*x']}}",
        "expect.stderr[1]",
        "regular expression",
    ),
    "skel-missing": ("{run: hello, skel: nothere/}", "skel", "no such file"),
    "skel-file": ("{run: hello, skel: present.py}", "skel", "must be a folder"),
    "sources-type": ("{run: hello, sources: [skel]}", "sources", "mapping"),
    "sources-missing": ("{run: hello, sources: {src: gone/}}", "sources.src", "no such file"),
    "sources-escape": ("{run: hello, sources: {../up: skel}}", "sources.../up", "inside the working"),
    "sources-profile": ("{run: hello, sources: {profile: skel}}", "sources.profile", "inside the working"),
    "symlink-type": ("{run: hello, symlinks: {x: 3}}", "symlinks.x", "list of packages or a path"),
    "symlink-missing": ("{run: hello, symlinks: {x: /no/such/path}}", "symlinks.x", "no such file"),
    "symlink-absolute-name": ("{run: hello, symlinks: {/x: [hello]}}", "symlinks./x", "inside the working"),
    "duplicate-key": ("{run: hello, run: hello}", "run", "given twice"),
    "duplicate-env": ("{run: hello, environment: {A: 1, A: 2}}", "environment.A", "given twice"),
    "duplicate-expect": ("{run: hello, expect: {exit: 0, exit: 1}}", "expect.exit", "given twice"),
}


@pytest.mark.parametrize("case", sorted(TEST_ERRORS))
def test_each_error_names_file_test_and_key_in_one_line(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body, key, problem = TEST_ERRORS[case]
    folder = write_package(
        tmp_path,
        "hello",
        f"tests:\n  broken: {body}\n  fine: {{run: hello}}\n",
        files=("present.py", "skel/"),
    )
    monkeypatch.chdir(tmp_path)
    defs = load_package(folder)
    err = bad(defs, "broken")
    assert err.file == os.path.join("hello", "tests.yaml")
    assert err.test == "broken"
    assert err.key == key
    assert problem in err.problem
    message = err.message
    assert "\n" not in message
    assert message.startswith(f"hello/tests.yaml: test 'broken': key '{key}': ")
    # ... and the other test of the package is still fine
    assert good(defs, "fine").run == "hello"


def test_neither_script_run_nor_imports(tmp_path: Path) -> None:
    folder = write_package(tmp_path, "hello", "tests: {empty: {timeout: 3}, ok: {run: hello}}")
    err = bad(load_package(folder), "empty")
    assert err.key is None and err.test == "empty"
    assert "exactly one of 'script', 'run', 'imports'" in err.message


def test_body_not_a_mapping(tmp_path: Path) -> None:
    folder = write_package(tmp_path, "hello", "tests: {listy: [run, hello], ok: {run: hello}}")
    err = bad(load_package(folder), "listy")
    assert "must be a mapping of keys, got a list" in err.message


def test_bad_test_name_gets_a_safe_name(tmp_path: Path) -> None:
    folder = write_package(tmp_path, "hello", "tests: {'a b/c': {run: hello}, ok: {run: hello}}")
    defs = load_package(folder)
    err = bad(defs, "a_b_c")
    assert err.test == "a b/c"
    assert "letters, digits" in err.message
    assert good(defs, "ok")


def test_test_names_yaml_reads_as_other_types_are_errors(tmp_path: Path) -> None:
    text = "tests: {true: {run: hello}, null: {run: hello}, 'no': {run: hello}}"
    folder = write_package(tmp_path, "hello", text)
    defs = load_package(folder)
    for name in ("True", "None"):
        err = bad(defs, name)
        assert "must be a string" in err.message and "quote it" in err.message, err.message
    assert good(defs, "no"), "a quoted name is a name"


def test_duplicate_test_name(tmp_path: Path) -> None:
    folder = write_package(
        tmp_path, "hello", "tests:\n  twice: {run: hello}\n  twice: {run: 'false'}\n  ok: {run: hello}\n"
    )
    defs = load_package(folder)
    err = bad(defs, "twice")
    assert err.message.endswith("test 'twice': the test is given twice")
    assert good(defs, "ok")


# --------------------------------------------------------------------------- errors of the file

FILE_ERRORS = {
    "malformed": ("tests: {a: {run: true\n", None, "malformed YAML"),
    "tab-indent": ("tests:\n\ta: {run: x}\n", None, "malformed YAML"),
    "not-mapping": ("- a\n- b\n", None, "must be a mapping with key 'tests', got a list"),
    "empty-file": ("", None, "got nothing"),
    "unknown-top-key": ("tests: {a: {run: x}}\nbase: 1\n", "base", "unknown key 'base'"),
    "missing-tests": ("test: {a: {run: x}}\n", "test", "unknown key 'test'"),
    "tests-empty": ("tests: {}\n", "tests", "non-empty mapping"),
    "tests-list": ("tests: [a]\n", "tests", "non-empty mapping"),
    "duplicate-tests-key": ("tests: {a: {run: x}}\ntests: {b: {run: y}}\n", "tests", "given twice"),
}


@pytest.mark.parametrize("case", sorted(FILE_ERRORS))
def test_file_errors_make_one_bad_test(case: str, tmp_path: Path) -> None:
    text, key, problem = FILE_ERRORS[case]
    folder = write_package(tmp_path, "hello", "")
    (folder / "tests.yaml").write_text(text)
    defs = load_package(folder)
    assert len(defs) == 1
    err = bad(defs, "tests.yaml")
    assert defs[0].nodeid == "hello::tests.yaml"
    assert err.test is None and err.key == key
    assert problem in err.message
    assert "tests.yaml" in err.message
    assert "\n" not in err.message


def test_not_utf8(tmp_path: Path) -> None:
    folder = write_package(tmp_path, "hello", "")
    (folder / "tests.yaml").write_bytes(b"tests: {a: {run: '\xff'}}\n")
    err = bad(load_package(folder), "tests.yaml")
    assert "tests.yaml" in err.message and "utf-8" in err.message.lower()


def test_unreadable_file(tmp_path: Path) -> None:
    folder = write_package(tmp_path, "hello", "")
    (folder / "tests.yaml").unlink()
    (folder / "tests.yaml").mkdir()
    err = bad(load_package(folder), "tests.yaml")
    assert "tests.yaml" in err.message and "directory" in err.message.lower()


def test_malformed_package_does_not_hide_others(tmp_path: Path) -> None:
    write_package(tmp_path, "bash", "tests: {a: {run: true\n")
    write_package(tmp_path, "hello", "tests: {greet: {run: hello}}")
    loaded = {p.name: load_package(p) for p in find_packages(tmp_path)}
    assert isinstance(loaded["bash"][0], BadTest)
    assert good(loaded["hello"], "greet").run == "hello"
