"""Test definitions: `package_tests/<package>/tests.yaml`, read and validated.

Every problem becomes a `DefinitionError` naming the file, the test and the
key; it is attached to the one test it concerns (or to the whole package when
the file itself cannot be read), so the rest of the set still runs.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from nixtest.errors import DefinitionError

DEFINITIONS_FILE = "tests.yaml"
DEFAULT_TIMEOUT = 600.0

Kind = Literal["classic", "pytest", "run", "imports", "autopkgtest"]

# \Z, never $: `$` also matches before a final newline, and "name\n" would pass
TEST_NAME = re.compile(r"[A-Za-z0-9_.-]+\Z")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
#: a tests.yaml larger than this is refused before it is parsed
MAX_FILE = 4 * 1024 * 1024
#: YAML nodes a tests.yaml may stand for once its aliases are expanded
MAX_NODES = 200_000
#: how much of a value an error message quotes
QUOTE_LIMIT = 80

KEYS = {
    "script",
    "run",
    "imports",
    "expect",
    "environment",
    "secrets",
    "profile",
    "skel",
    "sources",
    "symlinks",
    "timeout",
}
EXPECT_KEYS = {"exit", "stdout", "stderr"}
#: nixtest sets these itself; a definition may not
RESERVED_ENV = {"HOME", "TMPDIR"}


@dataclass(frozen=True)
class Expect:
    exit: int = 0
    stdout: tuple[str, ...] = ()
    stderr: tuple[str, ...] = ()

    @property
    def has_patterns(self) -> bool:
        return bool(self.stdout or self.stderr)


@dataclass(frozen=True)
class Symlink:
    """A symlink in the working directory: to a profile of `packages`, or to `path`."""

    name: str
    packages: tuple[str, ...] = ()
    path: Path | None = None


@dataclass(frozen=True)
class Autopkgtest:
    """What an autopkgtest stanza says about one test (read by `nixtest.sources.autopkgtest`)."""

    #: the source package's unpacked tree (or the folder holding just its debian/)
    tree: Path
    #: the 1-based stanza of debian/tests/control the test comes from
    stanza: int
    #: `Tests:`: the test program, relative to the tree (Tests-Directory/name)
    path: str | None = None
    #: `Test-Command:`: a shell command, run by `bash -e -c`
    command: str | None = None
    #: `Depends:` as written (with `@` and `@builddeps@`), for reports
    depends_text: str = ""
    #: `Depends:` expanded: one tuple of alternatives (relation strings) per comma item
    depends: tuple[tuple[str, ...], ...] = ()
    restrictions: tuple[str, ...] = ()
    features: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()
    #: why the test cannot run whatever the set (an unknown field or restriction...)
    unsupported: str = ""


@dataclass(frozen=True)
class TestDef:
    """One valid test of one package."""

    package: str
    name: str
    file: Path
    kind: Kind
    script: Path | None = None
    run: str | None = None
    imports: tuple[str, ...] = ()
    expect: Expect = field(default_factory=Expect)
    environment: dict[str, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()
    profile: tuple[str, ...] = ()
    skel: Path | None = None
    sources: dict[str, Path] = field(default_factory=dict)
    symlinks: tuple[Symlink, ...] = ()
    timeout: float = DEFAULT_TIMEOUT
    #: True when the definition gave its own timeout
    timeout_set: bool = False
    #: for kind "autopkgtest": what its control stanza says
    autopkgtest: Autopkgtest | None = None

    @property
    def package_dir(self) -> Path:
        return self.file.parent

    @property
    def nodeid(self) -> str:
        return f"{self.package}::{self.name}"

    def packages_needed(self) -> set[str]:
        """Every package the test's profiles name."""
        needed = set(self.profile)
        for link in self.symlinks:
            needed.update(link.packages)
        return needed


@dataclass(frozen=True)
class BadTest:
    """A test (or a whole package, when `name` is the file's) that could not be read."""

    package: str
    name: str
    file: Path
    error: DefinitionError

    @property
    def nodeid(self) -> str:
        return f"{self.package}::{self.name}"


Definition = Union[TestDef, BadTest]


# libyaml's parser when PyYAML has it: reading thousands of tests.yaml is collection time
_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _UniqueKeyLoader(_SafeLoader):  # type: ignore[valid-type,misc]
    """A safe loader that notes every key given twice (PyYAML keeps the last silently)."""


class _Mapping(dict[Any, Any]):
    """A mapping read from YAML, with the keys it was given more than once."""

    duplicates: tuple[str, ...] = ()


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    duplicates: list[str] = []
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *anchor` may be overridden by the keys next to it
        key = loader.construct_object(key_node)
        if isinstance(key, (str, int, float, bool)):
            if key in seen and str(key) not in duplicates:
                duplicates.append(str(key))
            seen.add(key)
    mapping = _Mapping(loader.construct_mapping(node))
    mapping.duplicates = tuple(duplicates)
    return mapping


def _duplicates(value: Any) -> tuple[str, ...]:
    return value.duplicates if isinstance(value, _Mapping) else ()


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def display_path(path: Path | str) -> str:
    """A path as the user wants to read it: relative to the current folder when below it.

    `os.path.relpath(path)`; a normal absolute path below the current folder is cut by
    hand, to the same text (relpath split and joined every component: about 15 us a
    call, twice a test).
    """
    text = os.fspath(path)
    if text.startswith("/"):
        cwd = os.getcwd()
        norm = os.path.normpath(text)
        if (
            norm.startswith(cwd)
            and norm[len(cwd) : len(cwd) + 1] == "/"
            and cwd != "/"
            and not cwd.startswith("//")
            and os.path.normpath(cwd) == cwd
        ):
            return norm[len(cwd) + 1 :]
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def real_path(path: Path | str, known: dict[str, str]) -> str:
    """`os.path.realpath(path)`, the real paths of the folders above it kept in `known`.

    Collection asks it for every package folder, each a child of the same few
    folders: resolving the folder above once, and then only whether the last
    name is a symlink, is one `lstat` instead of one per component.
    """
    text = os.fspath(path)
    return os.path.realpath(text) if os.path.islink(text) else _real_parent(text, known)


def _real_parent(text: str, known: dict[str, str]) -> str:
    """`os.path.realpath(text)` for a `text` whose last name is no symlink."""
    head, name = os.path.split(text)
    if not head.startswith("/") or name in ("", ".", ".."):
        return os.path.realpath(text)
    real = known.get(head)
    if real is None:
        real = known[head] = os.path.realpath(head)
    return real + name if real.endswith("/") else f"{real}/{name}"


def find_packages(tests_dir: Path) -> list[Path]:
    """The package folders below `tests_dir`, sorted by name."""
    if not tests_dir.is_dir():
        return []
    return sorted((p for p in tests_dir.iterdir() if is_package_folder(p)), key=lambda p: p.name)


def is_package_folder(path: Path) -> bool:
    """Whether `path` is a package folder: a folder with something named tests.yaml.

    Anything by that name counts (a folder, a FIFO, a dangling link or a
    symlink loop too), so that `load_package` says what is wrong with it
    instead of the package being skipped silently.
    """
    return os.path.isdir(path) and os.path.lexists(os.path.join(path, DEFINITIONS_FILE))


def _read_definitions(file: Path) -> str:
    """The text of a tests.yaml: a regular file of bounded size, opened without blocking."""
    try:
        info = os.stat(file)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise DefinitionsUnreadable("is a symlink loop") from None
        if exc.errno == errno.ENOENT and os.path.islink(file):
            raise DefinitionsUnreadable(f"is a dangling symlink (to {os.readlink(file)})") from None
        raise
    if stat.S_ISDIR(info.st_mode):
        raise DefinitionsUnreadable("is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise DefinitionsUnreadable("is not a regular file (a FIFO, socket or device)")
    if info.st_size > MAX_FILE:
        raise DefinitionsUnreadable(f"is larger than {MAX_FILE // (1024 * 1024)} MiB")
    # O_NONBLOCK: a FIFO swapped in after the check does not hang the run
    fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        # reads of the size the file has (one, and the one that finds its end): a
        # buffered read(MAX_FILE + 1) allocated 4 MiB a file
        chunks: list[bytes] = []
        total = 0
        while total <= MAX_FILE:
            chunk = os.read(fd, min(MAX_FILE + 1 - total, max(info.st_size + 1 - total, 1 << 16)))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    finally:
        os.close(fd)
    if total > MAX_FILE:
        raise DefinitionsUnreadable(f"is larger than {MAX_FILE // (1024 * 1024)} MiB")
    return b"".join(chunks).decode("utf-8")


class DefinitionsUnreadable(Exception):
    """A tests.yaml that is not a file nixtest reads."""


def _bound_aliases(text: str) -> None:
    """Refuses a document whose aliases expand past `MAX_NODES` nodes (a "billion laughs").

    PyYAML expands every alias into the loaded value: a kilobyte of nested
    aliases becomes gigabytes.  The parser's events are counted first, each
    alias weighing as much as the node it names.
    """
    sizes: dict[str, int] = {}
    stack: list[list[Any]] = []
    total = 0
    for event in yaml.parse(text, Loader=_SafeLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            stack.append([event.anchor, 1])
            continue
        if isinstance(event, yaml.ScalarEvent):
            anchor, size = event.anchor, 1
        elif isinstance(event, yaml.AliasEvent):
            anchor, size = None, sizes.get(str(event.anchor), 1)
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            anchor, size = stack.pop()
        else:
            continue
        if anchor:
            sizes[anchor] = size
        if stack:
            stack[-1][1] += size
            size = stack[-1][1]
        else:
            total += size
            size = total
        if size > MAX_NODES:
            raise DefinitionsUnreadable(
                f"its aliases expand to more than {MAX_NODES} values (an alias bomb?)"
            )


_STR_TAG = "tag:yaml.org,2002:str"
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
#: the other scalars a tests.yaml holds, made by the safe loader's own constructors
_SCALARS = {
    f"tag:yaml.org,2002:{kind}": SafeConstructor.yaml_constructors[f"tag:yaml.org,2002:{kind}"]
    for kind in ("int", "float", "bool", "null")
}

_KEY_TAGS = frozenset({_STR_TAG, *_SCALARS})


class _Unusual(Exception):
    """A document `_plain_document` leaves to PyYAML's constructor (an alias, a merge key, a tag)."""


def _load(text: str) -> Any:
    """`yaml.load(text, Loader=_UniqueKeyLoader)` after `_bound_aliases(text)`, made cheaper.

    libyaml parses the document into nodes once; a plain document (no alias,
    no merge key, only strings, numbers, booleans, nulls, mappings and lists:
    every tests.yaml nixtest wrote) is made into values here, the nodes
    counted as `_bound_aliases` counts them.  Anything else, a malformed
    document too, takes the full way: the alias check, then PyYAML's own
    constructor, the same values and the same errors.  The full way cost about
    60-120 us a tests.yaml, this one a third of it.
    """
    loader = _UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()
        return None if node is None else _plain_document(loader, node)
    except (yaml.YAMLError, _Unusual, RecursionError):
        pass
    finally:
        loader.dispose()
    _bound_aliases(text)
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader


def _plain_document(loader: _UniqueKeyLoader, root: Node) -> Any:
    """The values of a document's nodes, as `_UniqueKeyLoader` makes them; `_Unusual` if it is not plain."""
    seen: set[int] = set()

    def value(node: Node) -> Any:
        if id(node) in seen:
            raise _Unusual  # an alias: a node met twice
        seen.add(id(node))
        if len(seen) > MAX_NODES:
            raise _Unusual  # the full way refuses it, in its words
        tag = node.tag
        if type(node) is ScalarNode:
            if tag == _STR_TAG:
                return node.value
            make = _SCALARS.get(tag)
            if make is None:
                raise _Unusual
            return make(loader, node)
        if type(node) is SequenceNode and tag == _SEQ_TAG:
            return [value(item) for item in node.value]
        if type(node) is not MappingNode or tag != _MAP_TAG:
            raise _Unusual
        mapping = _Mapping()
        keys: set[Any] = set()
        duplicates: list[str] = []
        for key_node, value_node in node.value:
            if type(key_node) is not ScalarNode or key_node.tag not in _KEY_TAGS:
                raise _Unusual  # a merge key (`<<`), `=`, a mapping as a key...
            key = value(key_node)
            if isinstance(key, (str, int, float, bool)):  # as `_construct_mapping` notes them
                if key in keys and str(key) not in duplicates:
                    duplicates.append(str(key))
                keys.add(key)
            mapping[key] = value(value_node)
        mapping.duplicates = tuple(duplicates)
        return mapping

    return value(root)


def quote(value: object) -> str:
    """`repr(value)`, cut to `QUOTE_LIMIT` characters: an error message stays one short line."""
    text = repr(value)
    return text if len(text) <= QUOTE_LIMIT else text[: QUOTE_LIMIT - 3] + "..."


def load_package(package_dir: Path, realpaths: dict[str, str] | None = None) -> list[Definition]:
    """Every test of one package folder, each valid or carrying its error.

    `realpaths`: the real paths of the folders above package folders, kept by the caller
    for the packages to come (`real_path`); without it the folder is resolved whole.
    """
    if realpaths is not None and os.path.isabs(package_dir) and not os.path.islink(package_dir):
        package_dir = Path(_real_parent(os.fspath(package_dir), realpaths))
    else:
        package_dir = package_dir.resolve()
    file = package_dir / DEFINITIONS_FILE
    package = package_dir.name

    def bad(key: str | None, problem: str) -> list[Definition]:
        # the file's name as shown is made only for an error (relpath: 15 us a package)
        error = DefinitionError(display_path(file), None, key, problem)
        return [BadTest(package, DEFINITIONS_FILE, file, error)]

    try:
        data = _load(_read_definitions(file))
    except DefinitionsUnreadable as exc:
        return bad(None, str(exc))
    except (OSError, UnicodeDecodeError) as exc:
        return bad(None, _why(exc))
    except yaml.YAMLError as exc:
        return bad(None, "malformed YAML: " + " ".join(str(exc).split())[:500])
    if not isinstance(data, dict):
        return bad(None, f"must be a mapping with key 'tests', got {_typename(data)}")
    if _duplicates(data):
        return bad(_duplicates(data)[0], "is given twice; the file holds one key, 'tests'")
    extra = sorted(str(k) for k in data if k != "tests")
    if extra or "tests" not in data:
        problem = f"unknown key {quote(extra[0])}" if extra else "missing key 'tests'"
        return bad(extra[0] if extra else "tests", problem + "; the file holds one key, 'tests'")
    tests = data["tests"]
    if not isinstance(tests, dict) or not tests:
        return bad("tests", f"must be a non-empty mapping of test names, got {_typename(tests)}")
    result: list[Definition] = []
    twice = set(_duplicates(tests))
    for raw_name, body in tests.items():
        name = str(raw_name)
        try:
            if name in twice:
                raise DefinitionError(display_path(file), name, None, "the test is given twice")
            if not isinstance(raw_name, str):
                # YAML reads `true:`, `no:`, `null:`, `1.10:` as other things than their text
                problem = f"a test name must be a string: YAML read {_typename(raw_name)}; quote it"
                raise DefinitionError(display_path(file), name, None, problem)
            result.append(_parse_test(package, name, file, body))
        except DefinitionError as err:
            safe = name if TEST_NAME.match(name) and name not in (".", "..") else _safe_name(name)
            result.append(BadTest(package, safe, file, err))
    return result


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:60].strip(".") or "invalid-name"


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return " ".join(str(exc).split())


def _typename(value: object) -> str:
    if value is None:
        return "nothing"
    return {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }.get(type(value), type(value).__name__)


class _Checker:
    """Validates one test's mapping, raising errors that name file, test and key."""

    def __init__(self, file: Path, test: str) -> None:
        self.file = file
        self.test = test
        self.base = file.parent

    def fail(self, key: str | None, problem: str) -> DefinitionError:
        return DefinitionError(display_path(self.file), self.test, key, problem)

    def string(self, key: str, value: Any, *, empty: bool = False) -> str:
        if not isinstance(value, str):
            raise self.fail(key, f"must be a string, got {_typename(value)}")
        if not empty and not value.strip():
            raise self.fail(key, "must not be empty")
        if "\0" in value:
            raise self.fail(key, "must not contain a NUL character")
        return value

    def string_list(self, key: str, value: Any) -> tuple[str, ...]:
        if isinstance(value, str):
            raise self.fail(key, f"must be a list of strings, got a string (write [{value}])")
        if not isinstance(value, list):
            raise self.fail(key, f"must be a list of strings, got {_typename(value)}")
        return tuple(self.string(f"{key}[{i}]", item) for i, item in enumerate(value))

    def path(self, key: str, value: Any, *, directory: bool | None = None, confined: bool = True) -> Path:
        text = self.string(key, value)
        if os.path.isabs(text):
            raise self.fail(key, f"must be relative to the package's folder, got {quote(text)}")
        path = (self.base / text).resolve()
        if not path.exists():
            raise self.fail(key, f"no such file or folder: {display_path(self.base / text)}")
        base = self.base.resolve()
        if confined and path != base and base not in path.parents:
            # a definition must not copy /etc/shadow into a test's folder, or run a file from elsewhere
            raise self.fail(key, f"must stay inside the package's folder, got {quote(text)} (it is {path})")
        if directory is True and not path.is_dir():
            raise self.fail(key, f"must be a folder: {display_path(self.base / text)}")
        if directory is False and not path.is_file():
            raise self.fail(key, f"must be a file: {display_path(self.base / text)}")
        return path

    def relative_name(self, key: str, name: Any) -> str:
        text = self.string(key, name)
        parts = Path(text).parts
        first = os.path.normpath(text).split("/")[0]
        # `profile` (also `./profile`, `profile/`, `profile/x`) is the shared profile: a
        # link or a copy there would write into it; `.tmp` is the test's TMPDIR
        if os.path.isabs(text) or ".." in parts or first in (".", "profile", ".tmp"):
            raise self.fail(key, f"must be a name inside the working directory, got {quote(text)}")
        return os.path.normpath(text)

    def pattern(self, key: str, value: Any) -> tuple[str, ...]:
        patterns: tuple[str, ...] = (value,) if isinstance(value, str) else self.string_list(key, value)
        for i, pat in enumerate(patterns):
            try:
                re.compile(pat, re.MULTILINE)
            except re.error as exc:
                where = key if isinstance(value, str) else f"{key}[{i}]"
                raise self.fail(where, f"not a valid regular expression: {exc}") from None
        return patterns


def _parse_test(package: str, name: str, file: Path, body: Any) -> TestDef:
    check = _Checker(file, name)
    if not TEST_NAME.match(name) or name in (".", ".."):
        raise check.fail(None, "a test name holds only letters, digits, '-', '_' and '.'")
    if not isinstance(body, dict):
        raise check.fail(None, f"must be a mapping of keys, got {_typename(body)}")
    for key in body:
        if key not in KEYS:
            raise check.fail(str(key), f"unknown key; known keys: {', '.join(sorted(KEYS))}")
    twice = [*_duplicates(body)] + [
        f"{key}.{inner}"
        for key in ("expect", "environment", "sources", "symlinks")
        for inner in _duplicates(body.get(key))
    ]
    if twice:
        raise check.fail(twice[0], "is given twice")
    given = [k for k in ("script", "run", "imports") if k in body]
    if len(given) != 1:
        problem = "needs exactly one of 'script', 'run', 'imports'"
        raise check.fail(given[1] if len(given) > 1 else None, problem + (f", got {given}" if given else ""))

    kind: Kind
    script = run = None
    imports: tuple[str, ...] = ()
    if "script" in body:
        script = check.path("script", body["script"], directory=False)
        kind = "pytest" if re.fullmatch(r"test_.*\.py", script.name, re.DOTALL) else "classic"
    elif "run" in body:
        run = check.string("run", body["run"])
        kind = "run"
    else:
        imports = check.string_list("imports", body["imports"])
        if not imports:
            raise check.fail("imports", "must name at least one module")
        for i, module in enumerate(imports):
            if not MODULE_NAME.match(module):
                raise check.fail(f"imports[{i}]", f"not a module name: {quote(module)}")
        kind = "imports"

    expect = Expect()
    if "expect" in body:
        if kind != "run":
            raise check.fail("expect", "only a 'run' test has 'expect'")
        raw = body["expect"]
        if not isinstance(raw, dict):
            raise check.fail("expect", f"must be a mapping, got {_typename(raw)}")
        for key in raw:
            if key not in EXPECT_KEYS:
                raise check.fail(f"expect.{key}", "unknown key; known keys: exit, stdout, stderr")
        code = raw.get("exit", 0)
        if isinstance(code, bool) or not isinstance(code, int) or not 0 <= code <= 255:
            raise check.fail("expect.exit", f"must be an exit code 0-255, got {quote(code)}")
        expect = Expect(
            exit=code,
            stdout=check.pattern("expect.stdout", raw["stdout"]) if "stdout" in raw else (),
            stderr=check.pattern("expect.stderr", raw["stderr"]) if "stderr" in raw else (),
        )

    environment: dict[str, str] = {}
    raw_env = body.get("environment", {})
    if not isinstance(raw_env, dict):
        raise check.fail("environment", f"must be a mapping, got {_typename(raw_env)}")
    for var, value in raw_env.items():
        key = f"environment.{var}"
        if not isinstance(var, str) or not ENV_NAME.match(var):
            raise check.fail(key, "not a variable name (letters, digits, '_')")
        if var in RESERVED_ENV:
            raise check.fail(key, f"{var} is set by nixtest to point into the working directory")
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise check.fail(key, f"must be a string, got {_typename(value)}")
        environment[var] = check.string(key, str(value), empty=True)

    secrets = check.string_list("secrets", body.get("secrets", []))
    for i, secret in enumerate(secrets):
        if not ENV_NAME.match(secret):
            raise check.fail(f"secrets[{i}]", f"not a variable name: {quote(secret)}")
        if secret in environment or secret in RESERVED_ENV:
            raise check.fail(f"secrets[{i}]", f"{secret} is also set by the test or by nixtest")

    profile = check.string_list("profile", body["profile"]) if "profile" in body else (package,)
    skel = check.path("skel", body["skel"], directory=True) if "skel" in body else None

    sources: dict[str, Path] = {}
    raw_sources = body.get("sources", {})
    if not isinstance(raw_sources, dict):
        raise check.fail("sources", f"must be a mapping of names to paths, got {_typename(raw_sources)}")
    for dest, src in raw_sources.items():
        key = f"sources.{dest}"
        sources[check.relative_name(key, dest)] = check.path(key, src)

    links: list[Symlink] = []
    raw_links = body.get("symlinks", {})
    if not isinstance(raw_links, dict):
        raise check.fail("symlinks", f"must be a mapping of names, got {_typename(raw_links)}")
    for link_name, target in raw_links.items():
        key = f"symlinks.{link_name}"
        link = check.relative_name(key, link_name)
        if isinstance(target, list):
            links.append(Symlink(link, packages=check.string_list(key, target)))
        elif isinstance(target, str):
            path = Path(target) if os.path.isabs(target) else check.path(key, target, confined=False)
            if not os.path.lexists(path):
                raise check.fail(key, f"no such file or folder: {target}")
            links.append(Symlink(link, path=path))
        else:
            raise check.fail(key, f"must be a list of packages or a path, got {_typename(target)}")

    timeout = DEFAULT_TIMEOUT
    if "timeout" in body:
        raw_timeout = body["timeout"]
        if isinstance(raw_timeout, bool) or not isinstance(raw_timeout, (int, float)) or raw_timeout <= 0:
            raise check.fail("timeout", f"must be a positive number of seconds, got {quote(raw_timeout)}")
        timeout = float(raw_timeout)

    return TestDef(
        package=package,
        name=name,
        file=file,
        kind=kind,
        script=script,
        run=run,
        imports=imports,
        expect=expect,
        environment=environment,
        secrets=secrets,
        profile=profile,
        skel=skel,
        sources=sources,
        symlinks=tuple(links),
        timeout=timeout,
        timeout_set="timeout" in body,
    )
