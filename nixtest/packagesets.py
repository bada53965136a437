"""Package sets: where packages, their files, versions and dependencies come from.

`load_set(spec)` turns a ``--set`` value into a `PackageSet`:

* ``host``: dpkg's database (`DpkgSet`) where there is one, else the programs on
  ``PATH`` (`PathSet`);
* ``path``: `PathSet`, on any machine;
* ``prefix:FILE``: a YAML file naming install prefixes (`PrefixSet`);
* ``nix:FILE``: a Nix expression, built by the real Nix (`nixtest.nix.NixSet`).

Every set also says which files a package contributes to a profile
(`PackageSet.profile_entries`), already mapped to the profile layout
(``bin/``, ``lib/``, ``include/``, ``share/``...), so that `nixtest.profiles`
needs to know nothing about where a set keeps its files.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any, Protocol, runtime_checkable

import yaml

from nixtest.errors import PackageSetError, UnknownPackage

__all__ = [
    "DpkgSet",
    "PackageSet",
    "PathSet",
    "PrefixSet",
    "SCHEMES",
    "debian_profile_path",
    "dependency_closure",
    "essential_packages",
    "load_set",
    "parse_dpkg_listfiles",
    "parse_dpkg_query",
]


@runtime_checkable
class PackageSet(Protocol):
    """What nixtest needs from a package set.  Unknown names raise `UnknownPackage`."""

    @property
    def spec(self) -> str:
        """The ``--set`` value as given, e.g. ``host`` or ``prefix:sets/conda.yaml``."""
        ...

    @property
    def identity(self) -> str:
        """A stable string naming where the contents come from (for content addressing)."""
        ...

    def names(self) -> list[str]:
        """All package names, sorted."""
        ...

    def has(self, name: str) -> bool:
        """Whether the set has a package called `name`."""
        ...

    def version(self, name: str) -> str:
        """The package's version, or ``""`` when the set does not know it."""
        ...

    def dependencies(self, name: str) -> list[str]:
        """Names of the packages `name` depends on, all in this set, sorted."""
        ...

    def files(self, name: str) -> list[Path]:
        """The package's files: absolute paths of the existing non-directories it installed."""
        ...

    def profile_entries(self, name: str) -> Iterator[tuple[PurePosixPath, Path]]:
        """``(path inside a profile, absolute target)`` for every leaf it gives a profile."""
        ...


def _is_leaf(path: str) -> bool | None:
    """True for a non-directory, False for a directory, None if nothing is there.

    `os.lstat` does not follow a final symlink, so a symlink to a directory is a
    leaf: a profile links to it rather than merging its contents.
    """
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return not stat.S_ISDIR(st.st_mode)


# ---------------------------------------------------------------------------
# dpkg

#: dpkg's database (dpkg's default; DPKG_ADMINDIR moves it, and then we ask dpkg-query)
DPKG_ADMINDIR = "/var/lib/dpkg"

# The field separator of our dpkg-query format: no dpkg field we ask for holds a tab.
_DPKG_FIELDS = (
    "${binary:Package}",
    "${Package}",
    "${Architecture}",
    "${Version}",
    "${Status}",
    "${Depends}",
    "${Pre-Depends}",
    "${Provides}",
    "${source:Package}",
)
_DPKG_FORMAT = "\\t".join(_DPKG_FIELDS) + "\\n"

# A Debian multiarch tuple as found in /usr/lib/<tuple>/: x86_64-linux-gnu,
# arm-linux-gnueabihf, x86_64-linux-gnux32, x86_64-kfreebsd-gnu, i386-gnu.
_TRIPLET = re.compile(r"^[a-z0-9_]+-(?:(?:linux|kfreebsd)-)?gnu[a-z0-9_]*$")

# Debian's top-level directories (below /, /usr or /usr/local) and where they
# go in a profile.  lib32/libx32 hold another ABI's libraries: kept out of lib/.
_DEBIAN_TOPS = {
    "bin": "bin",
    "sbin": "bin",
    "games": "bin",
    "lib": "lib",
    "lib64": "lib",
    "include": "include",
    "share": "share",
    "libexec": "libexec",
}


def debian_profile_path(path: str) -> PurePosixPath | None:
    """Where a file Debian installed at absolute `path` goes in a profile, or None (see below)."""
    inside = debian_profile_text(path)
    return None if inside is None else PurePosixPath(inside)


def _normal(path: str) -> str:
    """``str(Path(path))`` without making the object, for a path already in normal form."""
    if "//" in path or "/./" in path or path.endswith(("/", "/.")):
        return str(PurePosixPath(path))
    return path


def debian_profile_text(path: str) -> str | None:
    """Where a file Debian installed at absolute `path` goes in a profile, or None.

    ``/usr/bin/x`` and ``/bin/x`` go to ``bin/x``; ``/usr/lib/<triplet>/x`` to
    ``lib/x``; ``/usr/share/pkgconfig/x.pc`` to ``lib/pkgconfig/x.pc``; and so
    on.  Anything outside those directories (``/etc``, ``/var``...) is left out.
    """
    for root in ("/usr/local/", "/usr/", "/"):
        if path.startswith(root):
            parts = [p for p in path[len(root) :].split("/") if p and p != "."]
            break
    else:
        return None
    if not parts or parts[0] not in _DEBIAN_TOPS:
        return None
    top = _DEBIAN_TOPS[parts[0]]
    rest = parts[1:]
    if top in ("lib", "include") and rest and _TRIPLET.match(rest[0]):
        rest = rest[1:]
    if top == "share" and rest and rest[0] == "pkgconfig":
        top, rest = "lib", rest  # share/pkgconfig/x.pc -> lib/pkgconfig/x.pc
    if not rest:
        return None  # the directory itself (/usr/bin, /usr/lib/<triplet>)
    return "/".join([top, *rest])


def _strip_relation(text: str) -> str:
    """``"python3.11 (>= 3.11) [amd64] <!nocheck>"`` and ``"perl:any"`` -> the bare name."""
    name = re.split(r"[\s(\[<]", text.strip(), maxsplit=1)[0]
    return name.split(":", 1)[0]


class _DpkgPackage:
    __slots__ = ("binary", "name", "arch", "version", "depends", "provides", "source")

    def __init__(
        self,
        binary: str,
        name: str,
        arch: str,
        version: str,
        depends: list[list[str]],
        provides: list[str],
        source: str,
    ) -> None:
        self.binary = binary  # name[:arch], what dpkg-query -L wants
        self.name = name
        self.arch = arch
        self.version = version
        self.depends = depends  # each item: alternatives, bare names, in order
        self.provides = provides
        self.source = source  # the Debian source package it was built from


def _parse_relations(field: str) -> list[list[str]]:
    """A Depends-style field -> one list of alternative bare names per comma item."""
    result = []
    for item in field.split(","):
        alternatives = [_strip_relation(alt) for alt in item.split("|")]
        alternatives = [a for a in alternatives if a]
        if alternatives:
            result.append(alternatives)
    return result


_USABLE = {"installed", "triggers-pending", "triggers-awaited"}


def parse_dpkg_query(output: str) -> tuple[dict[str, _DpkgPackage], str]:
    """Parse our ``dpkg-query -W`` output -> (installed packages by bare name, native arch).

    Only installed packages count ("install ok installed", "hold ok
    installed" for a held one, or one whose triggers are pending).  A name installed for several architectures
    (Multi-Arch: same) maps to one package: the native architecture's, else
    ``all``, else the first.
    """
    rows: list[_DpkgPackage] = []
    native = ""
    for line in output.splitlines():
        fields = line.split("\t")
        if len(fields) != len(_DPKG_FIELDS):
            continue
        binary, name, arch, version, status, depends, predepends, provides, source = fields
        status_words = status.split()
        # Files are in place once unpacked and configured; a package only waiting for
        # another's trigger (apt-get running elsewhere) is as usable as an installed one.
        if len(status_words) != 3 or status_words[1] != "ok" or status_words[2] not in _USABLE:
            continue
        relations = _parse_relations(predepends) + _parse_relations(depends)
        provided = [_strip_relation(p) for p in provides.split(",") if p.strip()]
        rows.append(_DpkgPackage(binary, name, arch, version, relations, provided, source or name))
        if name == "dpkg":
            native = arch  # dpkg itself is always of the native architecture
    rank = {native: 0, "all": 1}
    packages: dict[str, _DpkgPackage] = {}
    for row in rows:
        old = packages.get(row.name)
        if old is None or rank.get(row.arch, 2) < rank.get(old.arch, 2):
            packages[row.name] = row
    return packages, native


def parse_dpkg_listfiles(output: str) -> list[tuple[str, str]]:
    """Parse ``dpkg-query -L`` output -> ``(listed path, where the file really is)``.

    A line "diverted by X to: P" means this package's copy of the path listed
    just before was moved to P (X installed its own at the listed path).  A line
    "package diverts others to: P" is only information about other packages.
    """
    result: list[tuple[str, str]] = []
    for line in output.splitlines():
        if line.startswith("/"):
            if line != "/.":
                result.append((line, line))
        elif line.startswith("diverted by ") and " to: " in line and result:
            listed, _ = result[-1]
            result[-1] = (listed, line.split(" to: ", 1)[1])
    return result


class DpkgSet:
    """The packages dpkg installed on this machine (spec ``host`` on Debian/Ubuntu).

    One ``dpkg-query -W`` call, made the first time a name is asked for, answers
    `names`, `has`, `version` and `dependencies` for every package; file lists
    come from ``dpkg-query -L`` per package, only when asked for, and are cached.

    What a package gives a profile is what Nix would build as one derivation:
    the package and the dependencies built from the same Debian source package
    (`outputs`).  Debian splits a program over several binary packages (the
    ``python3`` package has ``pydoc3`` but ``/usr/bin/python3`` is in its
    dependency ``python3-minimal``), while a dependency from another source
    (``libc6`` for ``hello``) stays out, as it would in a Nix profile.
    """

    def __init__(self, spec: str = "host", dpkg_query: str = "dpkg-query") -> None:
        self.spec = spec
        self._dpkg_query = dpkg_query
        self._packages: dict[str, _DpkgPackage] | None = None
        self._native = ""
        self._providers: dict[str, list[str]] = {}
        self._sorted: list[str] = []
        self._files: dict[str, list[tuple[str, str]]] = {}
        #: name -> package_identity(name): one pair of strings shared by every result
        self._identities: dict[str, tuple[str, str]] = {}
        self._alternatives: dict[str, list[str]] | None = None
        self.alternatives_dir = Path("/var/lib/dpkg/alternatives")
        self.alternatives_links = Path("/etc/alternatives")
        self._diverted: dict[str, tuple[str, str]] | None = None

    # -- the one database query -------------------------------------------

    def _run(self, *args: str) -> str:
        try:
            proc = subprocess.run(
                [self._dpkg_query, *args],
                capture_output=True,
                text=True,
                errors="surrogateescape",
                # Untranslated messages, so that errors read the same everywhere.
                env={**os.environ, "LC_ALL": "C"},
                check=False,
            )
        except OSError as exc:
            raise PackageSetError(f"{self.spec}: cannot run {self._dpkg_query}: {exc}") from exc
        if proc.returncode != 0:
            lines = proc.stderr.strip().splitlines()
            why = lines[0] if lines else f"exit code {proc.returncode}"
            raise PackageSetError(f"{self.spec}: {self._dpkg_query} {args[0]} failed: {why}")
        return proc.stdout

    def _query(self) -> str:
        """The raw ``dpkg-query -W`` output (tests replace this)."""
        return self._run("-W", "-f", _DPKG_FORMAT)

    def _db(self) -> dict[str, _DpkgPackage]:
        if self._packages is None:
            packages, native = parse_dpkg_query(self._query())
            providers: dict[str, list[str]] = {}
            for name in sorted(packages):
                for virtual in packages[name].provides:
                    providers.setdefault(virtual, []).append(name)
            self._native = native
            self._providers = providers
            self._sorted = sorted(packages)
            self._packages = packages
        return self._packages

    def _get(self, name: str) -> _DpkgPackage:
        package = self._db().get(name)
        if package is None:
            raise UnknownPackage(name, self.spec)
        return package

    # -- PackageSet ---------------------------------------------------------

    @property
    def identity(self) -> str:
        self._db()
        return f"host:dpkg:{self._native or 'unknown'}"

    def names(self) -> list[str]:
        self._db()
        return list(self._sorted)

    def has(self, name: str) -> bool:
        return name in self._db()

    def version(self, name: str) -> str:
        return self._get(name).version

    def package_identity(self, name: str) -> tuple[str, str]:
        """(version, version:arch): what a result depends on (see nixtest.run.inputs)."""
        found = self._identities.get(name)
        if found is None:
            package = self._get(name)
            found = self._identities[name] = (package.version, f"{package.version}:{package.arch}")
        return found

    def dependencies(self, name: str) -> list[str]:
        """Depends and Pre-Depends, each ``a | b`` resolved to its first installed choice.

        A virtual package resolves to an installed package that provides it; a
        relation nothing installed satisfies is left out.
        """
        package = self._get(name)
        db = self._db()
        result: set[str] = set()
        for alternatives in package.depends:
            for alt in alternatives:
                if alt in db:
                    result.add(alt)
                    break
                providers = self._providers.get(alt)
                if providers:
                    result.add(name if name in providers else providers[0])
                    break
        result.discard(name)
        return sorted(result)

    def essential(self) -> list[str]:
        """The installed packages marked ``Essential: yes``: what every Debian system has."""
        db = self._db()
        found = []
        for line in self._run("-W", "-f", "${Package}\\t${Essential}\\n").splitlines():
            name, _, flag = line.partition("\t")
            if flag.strip() == "yes" and name in db:
                found.append(name)
        return sorted(set(found))

    def provider(self, virtual: str) -> str | None:
        """An installed package that provides the virtual package `virtual`, or None."""
        self._db()
        providers = self._providers.get(virtual)
        return providers[0] if providers else None

    def owner(self, path: str) -> str | None:
        """The installed package whose files hold `path` (``dpkg -S``), or None."""
        candidates = [path, os.path.realpath(path)]
        for root in ("/usr/bin/", "/usr/sbin/", "/usr/lib/"):
            # a merged-/usr machine: dpkg may list /bin/x for what is found as /usr/bin/x
            for p in list(candidates):
                if p.startswith(root):
                    candidates.append("/" + p[len("/usr/") :])
        for candidate in dict.fromkeys(candidates):
            try:
                out = self._run("-S", candidate)
            except PackageSetError:
                continue
            for line in out.splitlines():
                names, sep, listed = line.partition(": ")
                if sep and listed == candidate and not names.startswith("diversion by"):
                    return names.split(",")[0].strip().split(":")[0]
        return None

    def _listing(self, name: str) -> list[tuple[str, str]]:
        listing = self._files.get(name)
        if listing is None:
            binary = self._get(name).binary
            listing = self._read_list(name, binary)
            if listing is None:
                listing = parse_dpkg_listfiles(self._run("-L", binary))
            self._files[name] = listing
        return listing

    def _read_list(self, name: str, binary: str) -> list[tuple[str, str]] | None:
        """What ``dpkg-query -L`` says, read from dpkg's database itself; None if it cannot be.

        One ``dpkg-query -L`` costs a process that parses the whole status file:
        tens of milliseconds, for each of hundreds of packages.  dpkg keeps the
        list in ``info/<package>.list`` and the diversions in ``diversions``.
        Only for the real dpkg-query with the default database (a test's fake
        or DPKG_ADMINDIR go through the command).
        """
        if self._dpkg_query != "dpkg-query" or os.environ.get("DPKG_ADMINDIR"):
            return None
        info = os.path.join(DPKG_ADMINDIR, "info")
        for file in (f"{binary}.list", f"{name}.list", f"{name}:{self._native}.list"):
            try:
                with open(os.path.join(info, file), "rb") as f:
                    raw = f.read()
                break
            except FileNotFoundError:
                continue
            except OSError:
                return None
        else:
            return None
        diversions = self._diversions()
        if diversions is None:
            return None
        result: list[tuple[str, str]] = []
        for line in raw.decode("utf-8", "surrogateescape").splitlines():
            if not line.startswith("/") or line == "/.":
                continue
            diverted = diversions.get(line)
            if diverted is not None and diverted[1] not in (name, ":"):
                result.append((line, diverted[0]))  # "diverted by X to: P"
            else:
                result.append((line, line))
        return result

    def _diversions(self) -> dict[str, tuple[str, str]] | None:
        """dpkg's diversions: diverted path -> (where it went, the diverting package or ':')."""
        if self._diverted is None:
            try:
                with open(os.path.join(DPKG_ADMINDIR, "diversions"), "rb") as f:
                    lines = f.read().decode("utf-8", "surrogateescape").splitlines()
            except FileNotFoundError:
                lines = []
            except OSError:
                return None
            self._diverted = {lines[i]: (lines[i + 1], lines[i + 2]) for i in range(0, len(lines) - 2, 3)}
        return self._diverted

    def files(self, name: str) -> list[Path]:
        return [Path(real) for _, real in self._listing(name) if _is_leaf(real)]

    def outputs(self, name: str) -> list[str]:
        """`name`, then the packages of its source it depends on, directly or through each other."""
        source = self._get(name).source
        db = self._db()
        found = [name]
        seen = {name}
        for current in found:  # grows while we walk it: a breadth-first search
            for dep in self.dependencies(current):
                if dep not in seen and db[dep].source == source:
                    seen.add(dep)
                    found.append(dep)
        return found

    def alternatives(self) -> dict[str, list[str]]:
        """The alternatives dpkg chose: real path of the chosen file -> the links that name it.

        ``/usr/bin/awk`` is no file of ``mawk``'s: update-alternatives made it,
        pointing at ``/usr/bin/mawk``.  A profile with ``mawk`` has ``awk`` too,
        as the machine has.  Read from ``/var/lib/dpkg/alternatives/<name>``
        (its mode, its link, then pairs of slave name and slave link).
        """
        if self._alternatives is None:
            found: dict[str, list[str]] = {}
            try:
                names = sorted(os.listdir(self.alternatives_dir))
            except OSError:
                names = []
            for alt in names:
                try:
                    lines = (self.alternatives_dir / alt).read_text(encoding="utf-8").split("\n")
                except (OSError, UnicodeDecodeError):
                    continue
                links = [(alt, lines[1])] if len(lines) > 1 else []
                i = 2
                while i + 1 < len(lines) and lines[i]:
                    links.append((lines[i], lines[i + 1]))
                    i += 2
                for link_name, link in links:
                    chosen = self.alternatives_links / link_name
                    if not os.path.lexists(chosen):
                        continue
                    found.setdefault(os.path.realpath(chosen), []).append(link)
            self._alternatives = found
        return self._alternatives

    def profile_entries(self, name: str) -> Iterator[tuple[PurePosixPath, Path]]:
        """The leaves of `name` and of its other `outputs`, mapped to the profile layout.

        The alternatives that point at one of them come along under their own names.
        """
        for inside, real in self.profile_texts(name):
            yield PurePosixPath(inside), Path(real)

    def profile_texts(self, name: str) -> Iterator[tuple[str, str]]:
        """`profile_entries` as text, which profiles plan with: making the path
        objects cost more than the rest of planning the 842 profiles of a host."""
        alternatives = self.alternatives()
        for package in self.outputs(name):
            for listed, real in self._listing(package):
                # The profile path comes from the listed path: a diverted file
                # keeps its name in the package's profile, as the package was built.
                inside = debian_profile_text(listed)
                if inside is not None and _is_leaf(real):
                    target = _normal(real)
                    yield inside, target
                    for link in alternatives.get(real, ()):
                        link_inside = debian_profile_text(link)
                        if link_inside is not None and link_inside != inside:
                            yield link_inside, target


def dependency_closure(pset: PackageSet, names: Iterable[str]) -> list[str]:
    """`names` and every package they depend on, transitively (sorted).

    For a dpkg set: Depends and Pre-Depends, each ``a | b`` taken as its first
    installed alternative (`DpkgSet.dependencies`).  Unknown names raise
    `UnknownPackage`.
    """
    found: list[str] = []
    seen: set[str] = set()
    todo = list(dict.fromkeys(names))
    for name in todo:
        if not pset.has(name):
            raise UnknownPackage(name, pset.spec)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        found.append(name)
        todo.extend(dep for dep in pset.dependencies(name) if dep not in seen)
    return sorted(found)


def essential_packages(pset: PackageSet) -> list[str]:
    """The set's essential packages (dpkg's ``Essential: yes``); none for other sets."""
    essential = getattr(pset, "essential", None)
    return list(essential()) if callable(essential) else []


# ---------------------------------------------------------------------------
# PATH


class PathSet:
    """Every program on ``PATH`` is a package of that name (spec ``path``).

    The first directory that has a name wins, as in the shell.  Relative
    ``PATH`` entries are ignored: they would make the set depend on the
    current directory.
    """

    def __init__(self, spec: str = "path", path: str | None = None) -> None:
        self.spec = spec
        search = os.environ.get("PATH", os.defpath) if path is None else path
        self.dirs = [d for d in search.split(os.pathsep) if os.path.isabs(d)]
        self.identity = "path:" + os.pathsep.join(self.dirs)
        self._programs: dict[str, Path] | None = None

    def _scan(self) -> dict[str, Path]:
        if self._programs is None:
            programs: dict[str, Path] = {}
            for directory in self.dirs:
                try:
                    entries = list(os.scandir(directory))
                except OSError:
                    continue
                for entry in sorted(entries, key=lambda e: e.name):
                    if entry.name in programs:
                        continue
                    try:
                        if not entry.is_file():  # follows symlinks, like the shell
                            continue
                    except OSError:
                        continue
                    if os.access(entry.path, os.X_OK):
                        programs[entry.name] = Path(entry.path)
            self._programs = programs
        return self._programs

    def _get(self, name: str) -> Path:
        program = self._scan().get(name)
        if program is None:
            raise UnknownPackage(name, self.spec)
        return program

    def names(self) -> list[str]:
        return sorted(self._scan())

    def has(self, name: str) -> bool:
        return name in self._scan()

    def version(self, name: str) -> str:
        self._get(name)
        return ""

    def package_identity(self, name: str) -> tuple[str, str]:
        """(the program, the program with its size and time): a PATH program has no version."""
        real = os.path.realpath(self._get(name))
        try:
            st = os.stat(real)
        except OSError:
            return real, real
        return real, f"{real}:{st.st_size}:{st.st_mtime_ns}"

    def dependencies(self, name: str) -> list[str]:
        self._get(name)
        return []

    def files(self, name: str) -> list[Path]:
        return [self._get(name)]

    def profile_entries(self, name: str) -> Iterator[tuple[PurePosixPath, Path]]:
        yield PurePosixPath("bin", name), self._get(name)


# ---------------------------------------------------------------------------
# prefixes

# A prefix's top-level directories and where they go in a profile
# (lib/pkgconfig/ comes with lib/).
_PREFIX_TOPS = (
    ("bin", "bin"),
    ("sbin", "bin"),
    ("lib", "lib"),
    ("lib64", "lib"),
    ("include", "include"),
    ("share", "share"),
    ("libexec", "libexec"),
)

_PREFIX_KEYS = {"prefix", "version", "depends"}


def _walk_leaves(directory: str) -> Iterator[str]:
    """Every non-directory below `directory` (symlinks to directories included, not entered)."""
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
        except OSError:
            is_dir = False
        if is_dir:
            yield from _walk_leaves(entry.path)
        else:
            yield entry.path


class _Prefix:
    __slots__ = ("prefix", "version", "depends")

    def __init__(self, prefix: Path, version: str, depends: list[str]) -> None:
        self.prefix = prefix
        self.version = version
        self.depends = depends


class PrefixSet:
    """Packages installed in prefixes, named in a YAML file (spec ``prefix:FILE``).

    ::

        python: /opt/conda/envs/py311
        mytool: {prefix: ../views/mytool, version: "1.2", depends: [python]}

    Relative prefixes are relative to the YAML file's folder.
    """

    def __init__(self, file: Path | str, spec: str | None = None) -> None:
        self.file = Path(os.path.abspath(file))
        self.spec = spec if spec is not None else f"prefix:{file}"
        try:
            raw = self.file.read_bytes()
        except OSError as exc:
            raise PackageSetError(f"{self.file}: cannot read: {exc.strerror or exc}") from exc
        # The file's contents are part of the identity: pointing a name at
        # another prefix must not reuse a profile built from the old one.
        digest = hashlib.sha256(raw).hexdigest()[:16]
        self.identity = f"prefix:{self.file}#{digest}"
        self._packages = self._parse(raw)
        self._sorted = sorted(self._packages)

    def _error(self, key: object, problem: str) -> PackageSetError:
        return PackageSetError(f"{self.file}: key {key!r}: {problem}")

    def _parse(self, raw: bytes) -> dict[str, _Prefix]:
        try:
            data = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            where = ""
            mark = getattr(exc, "problem_mark", None)
            if mark is not None:
                where = f" at line {mark.line + 1}, column {mark.column + 1}"
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise PackageSetError(f"{self.file}: malformed YAML{where}: {problem}") from exc
        if not isinstance(data, dict):
            got = "an empty file" if data is None else f"a {type(data).__name__}"
            raise PackageSetError(f"{self.file}: expected a mapping of package names to prefixes, got {got}")
        packages: dict[str, _Prefix] = {}
        for name, value in data.items():
            if not isinstance(name, str) or not name or re.search(r"[\s/]", name):
                raise self._error(name, "a package name must be a non-empty string without / or spaces")
            packages[name] = self._parse_entry(name, value)
        for name, entry in packages.items():
            for dep in entry.depends:
                if dep not in packages:
                    raise self._error(name, f"depends on {dep!r}, which this file does not name")
        return packages

    def _parse_entry(self, name: str, value: Any) -> _Prefix:
        version = ""
        depends: list[str] = []
        if isinstance(value, dict):
            unknown = sorted(str(k) for k in value if k not in _PREFIX_KEYS)
            if unknown:
                raise self._error(name, f"unknown key {unknown[0]!r} (expected prefix, version, depends)")
            if "prefix" not in value:
                raise self._error(name, "missing 'prefix'")
            prefix = value["prefix"]
            version = value.get("version", "")
            if version is None:
                version = ""
            if not isinstance(version, str):
                # YAML reads 1.10 as the float 1.1: only a string keeps the version as written.
                raise self._error(name, f'version must be a string (quote it: "{version}")')
            depends = value.get("depends") or []
            if not isinstance(depends, list) or not all(isinstance(d, str) for d in depends):
                raise self._error(name, "depends must be a list of package names")
        else:
            prefix = value
        if not isinstance(prefix, str) or not prefix:
            raise self._error(name, "the prefix must be a path")
        path = Path(os.path.abspath(self.file.parent / os.path.expanduser(prefix)))
        if not path.is_dir():
            missing = "does not exist" if not os.path.lexists(path) else "is not a directory"
            raise self._error(name, f"prefix {path} {missing}")
        return _Prefix(path, version, list(dict.fromkeys(depends)))

    def _get(self, name: str) -> _Prefix:
        entry = self._packages.get(name)
        if entry is None:
            raise UnknownPackage(name, self.spec)
        return entry

    def prefix(self, name: str) -> Path:
        """The package's install prefix."""
        return self._get(name).prefix

    def names(self) -> list[str]:
        return list(self._sorted)

    def has(self, name: str) -> bool:
        return name in self._packages

    def version(self, name: str) -> str:
        return self._get(name).version

    def package_identity(self, name: str) -> tuple[str, str]:
        """(version, version + prefix + depends): the entry as the YAML file gives it."""
        entry = self._get(name)
        full = f"{entry.version} at {entry.prefix}, depends: {','.join(sorted(entry.depends))}"
        return entry.version, full

    def dependencies(self, name: str) -> list[str]:
        return sorted(set(self._get(name).depends) - {name})

    def files(self, name: str) -> list[Path]:
        return [Path(p) for p in _walk_leaves(str(self._get(name).prefix))]

    def profile_entries(self, name: str) -> Iterator[tuple[PurePosixPath, Path]]:
        prefix = self._get(name).prefix
        walked: set[str] = set()
        for top, dest in _PREFIX_TOPS:
            directory = prefix / top
            if not directory.is_dir():
                continue
            # A venv's lib64 is a symlink to lib: walk each real directory once.
            real = os.path.realpath(directory)
            if real in walked:
                continue
            walked.add(real)
            base = str(directory)
            for leaf in _walk_leaves(base):
                yield PurePosixPath(dest, *Path(os.path.relpath(leaf, base)).parts), Path(leaf)


# ---------------------------------------------------------------------------
# choosing a set


def _host(spec: str, rest: str) -> PackageSet:
    if shutil.which("dpkg-query") and os.path.exists("/var/lib/dpkg/status"):
        return DpkgSet(spec)
    return PathSet(spec)


def _path(spec: str, rest: str) -> PackageSet:
    return PathSet(spec)


def _prefix(spec: str, rest: str) -> PackageSet:
    if not rest:
        raise PackageSetError(f"package set {spec!r}: expected prefix:FILE, a YAML file")
    return PrefixSet(rest, spec)


def _nix(spec: str, rest: str) -> PackageSet:
    # nix:FILE lives in nixtest/nix.py (NixSet), imported here: it imports nixtest.profiles.
    from nixtest.nix import load_nix_set

    return load_nix_set(spec, rest)


#: ``--set`` schemes: the text before the first ``:`` -> factory(spec, text after it).
SCHEMES: dict[str, Callable[[str, str], PackageSet]] = {
    "host": _host,
    "path": _path,
    "prefix": _prefix,
    "nix": _nix,
}

# Schemes that take no argument, and so must be given alone.
_BARE = {"host", "path"}


def load_set(spec: str) -> PackageSet:
    """The package set a ``--set`` value names."""
    scheme, colon, rest = spec.partition(":")
    factory = SCHEMES.get(scheme)
    if factory is None or (scheme in _BARE and colon) or (scheme not in _BARE and not colon):
        raise PackageSetError(f"unknown package set {spec!r}: expected host, path, prefix:FILE or nix:FILE")
    return factory(spec, rest)
