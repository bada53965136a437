"""Debian autopkgtest suites: `debian/tests/control` read into nixtest test definitions.

A folder under ``--tests`` holding ``debian/tests/control`` (an unpacked source
package, or just its ``debian/`` folder) is the suite of its source package.
The control file is read as Debian's ``autopkgtest`` reads it
(``README.package-tests.rst``): lines starting with ``#`` and the rest of a line
after ``#`` are comments, continuation lines are joined, ``Tests:`` names
programs in ``debian/tests/`` (or ``Tests-Directory:``), ``Test-Command:`` is a
shell command named ``command1``, ``command2``... (or by the ``test-name=``
feature), and ``Depends:`` defaults to ``@``.

A stanza that cannot be used is an error for its tests alone, in one line
naming the file, the stanza and the field.  A test that can never run here (an
unknown field, another architecture) is kept, marked `unsupported`, and skipped
with that reason, as autopkgtest skips it.
"""

from __future__ import annotations

import os
import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from debian.deb822 import Deb822, PkgRelation
from debian.debian_support import version_compare

from nixtest.definitions import Autopkgtest, BadTest, Definition, TestDef, display_path
from nixtest.errors import DefinitionError

if TYPE_CHECKING:
    from nixtest.packagesets import PackageSet

CONTROL = Path("debian", "tests", "control")
DEFAULT_TESTS_DIRECTORY = "debian/tests"

#: the fields autopkgtest knows, lower case; another is "unknown field" (skipped, as autopkgtest does)
FIELDS = {
    "tests",
    "test-command",
    "restrictions",
    "features",
    "depends",
    "tests-directory",
    "classes",
    "architecture",
}

#: restrictions nixtest can honour: the test runs (with the matching rule)
RUNNABLE = {
    "allow-stderr",
    "flaky",
    "needs-root",  # decided by the wrapper, when it runs: as root it runs, else it is skipped
    "rw-build-tree",  # the tree is always a fresh writable copy
    "skip-not-installable",  # a missing Depends is skipped anyway
    "skippable",
    "superficial",
    # a hint for the archive's migration software, no requirement on the testbed
    "hint-testsuite-triggers",
}
#: restrictions that need a testbed nixtest does not give: the test is skipped, naming it
SKIPPED = {
    "breaks-testbed": "it may break the machine it runs on",
    "build-needed": "it needs the package built in its tree",
    "isolation-container": "it needs a container of its own",
    "isolation-machine": "it needs a machine of its own",
    "needs-internet": "it needs the internet",
    "needs-reboot": "it reboots the machine",
    "needs-sudo": "it needs a normal user with sudo",
    "needs-recommends": "it needs the Recommends of its Depends installed (deprecated)",
}

TEST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
PACKAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]*$")
_SPLIT = re.compile(r"[\s,]+")


@dataclass
class _Stanza:
    number: int
    line: int
    fields: dict[str, str]
    problem: str = ""  # a malformed line in it
    problem_field: str | None = None


def is_suite(folder: Path) -> bool:
    return (folder / CONTROL).is_file()


def _clean(text: str) -> list[tuple[int, str]]:
    """(line number, line) of `text` without comments, as autopkgtest strips them."""
    lines = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("#"):
            continue
        if "#" in line:
            line = line.split("#", 1)[0]
            if not line.strip():
                continue
        lines.append((number, line))
    return lines


def _paragraphs(text: str) -> list[_Stanza]:
    """The stanzas of a deb822 file, each parsed by python-debian's `Deb822`."""
    stanzas: list[_Stanza] = []
    block: list[tuple[int, str]] = []

    def flush() -> None:
        if not block:
            return
        stanza = _Stanza(len(stanzas) + 1, block[0][0], {})
        current: str | None = None
        for number, line in block:
            if line[:1] in (" ", "\t"):
                if current is None and not stanza.problem:
                    stanza.problem = f"line {number}: a continuation line with no field before it"
                continue
            name, colon, _ = line.partition(":")
            if not colon or not name.strip() or " " in name.strip():
                if not stanza.problem:
                    stanza.problem = f"line {number}: not 'Field: value': {line.strip()[:60]!r}"
                    stanza.problem_field = current
                continue
            current = name.strip()
        paragraph = Deb822([line + "\n" for _, line in block])
        for field, value in paragraph.items():
            # continuation lines are joined, as autopkgtest joins them
            stanza.fields[string.capwords(field.strip(), "-")] = "".join(value.split("\n")).replace("  ", " ")
        stanzas.append(stanza)
        block.clear()

    for number, line in _clean(text):
        if line.strip():
            block.append((number, line.rstrip("\n")))
        else:
            flush()
    flush()
    return stanzas


def _read_control(path: Path) -> list[_Stanza]:
    return _paragraphs(path.read_text(encoding="utf-8", errors="replace"))


def source_name(folder: Path) -> str:
    """`Source:` of ``debian/control``, else the folder's name."""
    try:
        stanzas = _read_control(folder / "debian" / "control")
    except OSError:
        return folder.name
    name = stanzas[0].fields.get("Source", "").strip() if stanzas else ""
    return name if PACKAGE_NAME.match(name) else folder.name


def _words(value: str) -> list[str]:
    return [w for w in _SPLIT.split(value) if w]


def native_arch() -> str:
    """dpkg's architecture name of this machine."""
    machine = os.uname().machine
    return {
        "x86_64": "amd64",
        "aarch64": "arm64",
        "i686": "i386",
        "i386": "i386",
        "armv7l": "armhf",
        "ppc64le": "ppc64el",
        "s390x": "s390x",
        "riscv64": "riscv64",
    }.get(machine, machine)


def _arch_matches(wildcards: Iterable[str], arch: str) -> bool:
    return any(w in (arch, "any", "linux-any", f"linux-{arch}", f"any-{arch}") for w in wildcards)


def _arch_concerned(arches: Sequence[tuple[bool, str]], arch: str) -> bool:
    """Whether a relation's ``[a !b]`` list includes `arch`."""
    if not arches:
        return True
    positive = [a for enabled, a in arches if enabled]
    negative = [a for enabled, a in arches if not enabled]
    if positive:
        return _arch_matches(positive, arch)
    return not _arch_matches(negative, arch)


def binary_packages(folder: Path, arch: str) -> list[str]:
    """`@`: the binary packages ``debian/control`` builds on `arch` (udebs left out)."""
    try:
        stanzas = _read_control(folder / "debian" / "control")
    except OSError:
        return []
    names = []
    for stanza in stanzas[1:]:
        f = stanza.fields
        if "Package" not in f or f.get("Package-Type", f.get("Xc-Package-Type", "deb")) != "deb":
            continue
        arches = _words(f.get("Architecture", "any"))
        if "all" in arches or _arch_matches(arches, arch):
            names.append(f["Package"].strip())
    return names


def _binary_field(folder: Path, field: str) -> str:
    try:
        stanzas = _read_control(folder / "debian" / "control")
    except OSError:
        return ""
    values = []
    for stanza in stanzas:
        value = stanza.fields.get(field, "").strip()
        if value:
            values.append(value)
    return ", ".join(values)


def _without_variables(text: str) -> str:
    # ${misc:Depends} and friends are filled in at build time: not package names
    return ", ".join(item for item in text.split(",") if "${" not in item)


def _expand(depends: str, folder: Path, arch: str) -> list[str]:
    """`Depends:` with `@`, `@builddeps@` and `@recommends@` replaced, one or-group a string."""
    groups: list[str] = []
    binaries: list[str] | None = None
    for group in depends.split(","):
        group = group.strip()
        if not group:
            continue
        if group == "@builddeps@":
            fields = ("Build-Depends", "Build-Depends-Indep", "Build-Depends-Arch")
            source = ", ".join(_binary_field(folder, f) for f in fields)
            groups += [g.strip() for g in _without_variables(source).split(",") if g.strip()]
            groups.append("build-essential")
        elif group == "@recommends@":
            recommends = _without_variables(_binary_field(folder, "Recommends"))
            groups += [g.strip() for g in recommends.split(",") if g.strip()]
        elif re.search(r"(^|[\s|])@([\s|(\[:]|$)", group):
            if binaries is None:
                binaries = binary_packages(folder, arch)
            # each or-group naming @ is replicated once for each binary package
            for binary in binaries:
                groups.append(re.sub(r"(^|(?<=[\s|]))@(?=[\s|(\[:]|$)", binary, group))
        else:
            groups.append(group)
    return groups


def _relation_text(rel: Any) -> str:
    name = str(rel["name"])
    if rel.get("archqual"):
        name += f":{rel['archqual']}"
    version = rel.get("version")
    if version:
        name += f" ({version[0]} {version[1]})"
    arches = rel.get("arch")
    if arches:
        name += " [" + " ".join(("" if a.enabled else "!") + a.arch for a in arches) + "]"
    return name


def _profiles_active(rel: Any) -> bool:
    """Build-profile restrictions `<!nocheck>`: true with no profile enabled, as in a plain build."""
    restrictions = rel.get("restrictions")
    if not restrictions:
        return True
    return any(all(not term.enabled for term in formula) for formula in restrictions)


def _parse_groups(groups: list[str], fail: DefinitionErrorFactory) -> tuple[tuple[str, ...], ...]:
    parsed: list[tuple[str, ...]] = []
    for group in groups:
        alternatives: list[str] = []
        for text in group.split("|"):
            text = text.strip()
            relations = PkgRelation.parse_relations(text) if text else []
            if len(relations) != 1 or len(relations[0]) != 1:
                raise fail("Depends", f"not a package relation: {text!r}")
            rel = relations[0][0]
            name = str(rel.get("name", ""))
            version = rel.get("version")
            if not PACKAGE_NAME.match(name) or (version is not None and not _valid_version(version[1])):
                raise fail("Depends", f"not a package relation: {text!r}")
            if _profiles_active(rel):
                alternatives.append(_relation_text(rel))
        if alternatives:
            parsed.append(tuple(alternatives))
    return tuple(parsed)


def _valid_version(version: str) -> bool:
    return bool(re.match(r"^(\d+:)?[A-Za-z0-9.+~:-]+$", version))


class DefinitionErrorFactory:
    """Makes the one-line error of a stanza: file, stanza (and its first line), test, field."""

    def __init__(self, shown: str, stanza: _Stanza, test: str | None) -> None:
        self.where = f"{shown}: stanza {stanza.number} (line {stanza.line})"
        self.test = test

    def __call__(self, field: str | None, problem: str) -> DefinitionError:
        return DefinitionError(self.where, self.test, field, problem)


def load_suite(folder: Path, arch: str | None = None) -> list[Definition]:
    """Every test of one autopkgtest suite, each valid or carrying its error."""
    folder = folder.resolve()
    control = folder / CONTROL
    source = source_name(folder)
    shown = display_path(control)
    arch = arch or native_arch()
    try:
        stanzas = _read_control(control)
    except OSError as exc:
        err = DefinitionError(shown, None, None, exc.strerror or str(exc))
        return [BadTest(source, "control", control, err)]
    if not stanzas:
        err = DefinitionError(shown, None, None, "holds no test stanza")
        return [BadTest(source, "control", control, err)]
    result: list[Definition] = []
    commands = 0
    for stanza in stanzas:
        f = stanza.fields
        names: list[str] = []
        if "Tests" in f:
            names = _words(f["Tests"])
        elif "Test-Command" in f:
            commands += 1
            names = [f"command{commands}"]
            for feature in _words(f.get("Features", "")):
                if feature.startswith("test-name="):
                    names = [feature.partition("=")[2]]
        try:
            result += _stanza_tests(folder, control, source, stanza, names, arch, shown)
        except DefinitionError as err:
            bad = [n for n in names if TEST_NAME.match(n)] or [f"stanza{stanza.number}"]
            for name in bad:
                result.append(BadTest(source, name, control, err))
    return result


def _stanza_tests(
    folder: Path, control: Path, source: str, stanza: _Stanza, names: list[str], arch: str, shown: str
) -> list[TestDef]:
    f = stanza.fields
    fail = DefinitionErrorFactory(shown, stanza, names[0] if len(names) == 1 else None)
    if stanza.problem:
        raise fail(stanza.problem_field, stanza.problem)
    if "Tests" in f and "Test-Command" in f:
        raise fail("Test-Command", "only one of 'Tests' and 'Test-Command' may be given")
    if "Tests" not in f and "Test-Command" not in f:
        raise fail(None, "needs 'Tests' or 'Test-Command'")
    if "Tests" in f and not names:
        raise fail("Tests", "is empty")
    if "Test-Command" in f and not f["Test-Command"].strip():
        raise fail("Test-Command", "is empty")
    features = tuple(_words(f.get("Features", "")))
    named = [x for x in features if x.split("=", 1)[0] == "test-name"]
    if named and "Tests" in f:
        raise fail("Features", "the test-name feature goes with Test-Command, not Tests")
    if len(named) > 1 or any("=" not in x or not x.partition("=")[2] for x in named):
        raise fail("Features", "one test-name=NAME feature at most, with a name")
    for name in names:
        if not TEST_NAME.match(name):
            raise fail("Tests" if "Tests" in f else "Features", f"not a test name: {name!r}")
    directory = f.get("Tests-Directory", DEFAULT_TESTS_DIRECTORY).strip()
    if not directory or os.path.isabs(directory) or ".." in Path(directory).parts:
        raise fail("Tests-Directory", f"must be a relative path inside the source tree, got {directory!r}")
    restrictions = tuple(_words(f.get("Restrictions", "")))
    depends_text = f.get("Depends", "@").strip()
    depends = _parse_groups(_expand(depends_text, folder, arch), fail)

    unsupported = ""
    unknown = sorted(k for k in f if k.lower() not in FIELDS)
    if unknown:
        unsupported = f"unknown field {unknown[0]}"
    arches = _words(f.get("Architecture", ""))
    if arches and not unsupported:
        wanted = [a for a in arches if not a.startswith("!")]
        refused = [a[1:] for a in arches if a.startswith("!")]
        if (wanted and not _arch_matches(wanted, arch)) or _arch_matches(refused, arch):
            unsupported = f"Architecture: {' '.join(arches)} does not include {arch}"

    tests = []
    for name in names:
        path = None
        if "Tests" in f:
            path = f"{directory}/{name}"
            if not (folder / path).is_file():
                raise DefinitionErrorFactory(shown, stanza, name)(
                    "Tests", f"no test program {display_path(folder / path)}"
                )
        spec = Autopkgtest(
            tree=folder,
            stanza=stanza.number,
            path=path,
            command=f["Test-Command"].strip() if "Test-Command" in f else None,
            depends_text=depends_text,
            depends=depends,
            restrictions=restrictions,
            features=features,
            classes=tuple(_words(f.get("Classes", ""))),
            unsupported=unsupported,
        )
        tests.append(TestDef(package=source, name=name, file=control, kind="autopkgtest", autopkgtest=spec))
    return tests


# ---------------------------------------------------------------------------
# against a package set


def skip_reason(spec: Autopkgtest) -> str:
    """Why the test is skipped whatever the set has ("" when it may run)."""
    if spec.unsupported:
        return spec.unsupported
    for restriction in spec.restrictions:
        if restriction in SKIPPED:
            return f"restriction {restriction}: {SKIPPED[restriction]}"
        if restriction not in RUNNABLE:
            return f"unknown restriction {restriction}"
    return ""


def _satisfies(installed: str, version: tuple[str, str] | None) -> bool:
    if version is None or not installed:
        return True
    op, wanted = version
    cmp = version_compare(installed, wanted)
    return {
        ">=": cmp >= 0,
        "<=": cmp <= 0,
        ">>": cmp > 0,
        "<<": cmp < 0,
        "=": cmp == 0,
        ">": cmp >= 0,  # obsolete forms, as dpkg reads them
        "<": cmp <= 0,
    }.get(op, False)


def resolve_depends(
    spec: Autopkgtest, pset: PackageSet, arch: str | None = None
) -> tuple[list[str], list[str]]:
    """(the packages chosen for `Depends`, the or-groups nothing in the set satisfies).

    Each group takes its first alternative the set has at a matching version
    (a virtual package: its first provider); an alternative for another
    architecture is left out.
    """
    arch = arch or native_arch()
    chosen: list[str] = []
    missing: list[str] = []
    provider = getattr(pset, "provider", None)
    for group in spec.depends:
        concerned = False
        found = None
        for text in group:
            rel = PkgRelation.parse_relations(text)[0][0]
            arches = [(a.enabled, a.arch) for a in rel.get("arch") or []]
            if not _arch_concerned(arches, arch):
                continue
            concerned = True
            name = str(rel["name"])
            if pset.has(name):
                if _satisfies(pset.version(name), rel.get("version")):
                    found = name
                    break
            elif callable(provider) and rel.get("version") is None:
                found = provider(name)
                if found:
                    break
        if found:
            chosen.append(found)
        elif concerned:
            missing.append(" | ".join(group))
    return chosen, missing


# ---------------------------------------------------------------------------
# after a failure: commands the test ran that its profile does not have

_NOT_FOUND = [
    # dash: "sh: 1: foo: not found", "/path/script: 12: foo: not found"
    re.compile(r"^.*?: \d+: ([^\s:/'\"]+): not found\s*$", re.MULTILINE),
    # bash: "bash: line 1: foo: command not found", "script: foo: command not found"
    re.compile(r"^.*?([^\s:/'\"]+): command not found\s*$", re.MULTILINE),
    # env(1), xargs, exec: "env: 'foo': No such file or directory"
    re.compile(r"^[\w./-]+: [‘'`]?([^\s:/'\"‘’`]+)[’'`]?: No such file or directory\s*$", re.MULTILINE),
    # Python's subprocess: "[Errno 2] No such file or directory: 'foo'"
    re.compile(r"No such file or directory: '([^\s/']+)'"),
    # Perl's system() and exec: 'Can't exec "foo": No such file or directory'
    re.compile(r"Can't exec \"([^\s/\"]+)\": No such file or directory"),
]

HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def missing_commands(output: str, profile: Path) -> list[str]:
    """Command names the output says were not found and the profile's bin/ does not have."""
    found: list[str] = []
    for pattern in _NOT_FOUND:
        for match in pattern.finditer(output):
            name = match.group(1)
            if name not in found and not os.path.lexists(profile / "bin" / name):
                found.append(name)
    return found


def undeclared(output: str, profile: Path, pset: PackageSet) -> list[tuple[str, str, str]]:
    """(command, host path, package) for each command the test missed that the host has."""
    import shutil

    owner = getattr(pset, "owner", None)
    result = []
    for name in missing_commands(output, profile):
        path = shutil.which(name, path=HOST_PATH)
        if path is None:
            continue
        package = owner(path) if callable(owner) else None
        result.append((name, path, package or "an unknown package"))
    return result
