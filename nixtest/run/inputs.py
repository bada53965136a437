"""The input key of a test: a hash of everything its result depends on.

That is the definition and every file it names (script, skel, sources), the
identity of every package in the test's closure (its profile packages and,
transitively, what they depend on: dpkg name=version:arch, a prefix entry's
version and depends, a Nix store path), the timeout, the environment (secrets
by name only: their values are never read here), nixtest's version and, for a
classic script or a pytest module, the Python interpreter its code runs in.

`Inputs.parts` keeps the pieces, so that a later run can say what changed
(`changes`): "zlib1g 1:1.2.13 -> 1:1.3", "definition changed", ...
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from operator import itemgetter
from pathlib import Path
from typing import Any, Protocol, cast, runtime_checkable

from nixtest import __version__
from nixtest.definitions import TestDef
from nixtest.errors import UnknownPackage
from nixtest.packagesets import PackageSet

#: raised when the way the key is computed changes: old keys must not match new ones
KEY_FORMAT = 1


@runtime_checkable
class IdentifiedSet(Protocol):
    """A set that can name what a package is beyond its version (all of nixtest's sets)."""

    def package_identity(self, name: str) -> tuple[str, str]:
        """(shown, full): what reports show, and everything the key must cover."""
        ...


@dataclass(frozen=True)
class Inputs:
    key: str
    #: definition, files, packages, shown, timeout, environment, nixtest (see `inputs_of`)
    parts: dict[str, Any] = field(default_factory=dict)

    @property
    def packages(self) -> dict[str, str]:
        """Each package of the closure -> its version or store path, as reports show it.

        The parts' own dict, not a copy: a result keeps both (`packages`, `inputs`),
        and a copy each cost a run about 0.7 KiB a test for its whole length.  Read it only.
        """
        shown: dict[str, str] = self.parts.get("shown", {})
        return shown


#: what `json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)` uses, made once
#: (json.dumps makes an encoder a call when given options: about 3 us)
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _digest(data: Any) -> str:
    text = _ENCODER.encode(data)
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _tree(path: Path, label: str, into: dict[str, str]) -> None:
    """Every file below `path` (or `path` itself) -> its content hash, under `label`."""
    if path.is_symlink():
        into[label] = "symlink:" + os.readlink(path)
    elif path.is_dir():
        entries = sorted(os.scandir(path), key=lambda e: e.name)
        if not entries:
            into[label + "/"] = "empty folder"
        for entry in entries:
            _tree(Path(entry.path), f"{label}/{entry.name}", into)
    elif path.exists():
        mode = "x" if os.access(path, os.X_OK) else "-"
        into[label] = f"{mode}{_file_digest(path)}"
    else:
        into[label] = "missing"


def _relative(path: Path, base: Path) -> str:
    text, prefix = str(path), str(base)
    # the common case by text (pathlib's relative_to compares parts: about 4 us a call)
    if text.startswith(prefix) and text[len(prefix) : len(prefix) + 1] == "/" and "//" not in text:
        return text[len(prefix) + 1 :]
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


#: the fields of a definition its key's "definition" part covers (the others are parts of their own)
_DEFINITION_FIELDS = tuple(
    f.name for f in fields(TestDef) if f.name not in ("file", "environment", "timeout", "timeout_set")
)


def definition_parts(test: TestDef) -> dict[str, Any]:
    """The definition as plain data, paths relative to its package folder.

    Relative paths: moving the whole tests folder changes no key.
    """
    base = test.package_dir
    return {name: _plain(getattr(test, name), base) for name in _DEFINITION_FIELDS}


def _plain(value: Any, base: Path) -> Any:
    kind = type(value)
    if kind is str or value is None or kind is int or kind is float or kind is bool:
        return value
    if kind is tuple and not value:
        return []
    if isinstance(value, Path):
        return _relative(value, base)
    if isinstance(value, dict):
        return {str(k): _plain(v, base) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, base) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        names = _FIELD_NAMES.get(kind)
        if names is None:
            names = _FIELD_NAMES[kind] = tuple(f.name for f in fields(value))
        return {name: _plain(getattr(value, name), base) for name in names}
    return value


#: a dataclass (Expect, Symlink...) -> its fields' names
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def file_parts(test: TestDef) -> dict[str, str]:
    """Every file the definition names -> its content hash (a changed skel file changes the key)."""
    base = test.package_dir
    found: dict[str, str] = {}
    if test.script is not None:
        _tree(test.script, _relative(test.script, base), found)
    if test.skel is not None:
        _tree(test.skel, _relative(test.skel, base), found)
    for path in test.sources.values():
        _tree(path, _relative(path, base), found)
    for link in test.symlinks:
        if link.path is not None and not link.path.is_absolute():
            _tree(link.path, _relative(link.path, base), found)
    if test.autopkgtest is not None:
        # an autopkgtest runs in a copy of its whole source tree: any file may matter
        _tree(test.autopkgtest.tree, "tree", found)
    return found


def closure(
    pset: PackageSet, roots: set[str], dependencies: Callable[[str], list[str]] | None = None
) -> list[str]:
    """`roots` and, transitively, what they depend on, sorted.

    `dependencies`: the set's `dependencies`, or a memo of it.
    """
    depends_on = pset.dependencies if dependencies is None else dependencies
    if getattr(pset, "identity_covers_dependencies", False):
        for name in roots:
            if not pset.has(name):
                raise UnknownPackage(name, pset.spec)
        return sorted(roots)
    seen: set[str] = set()
    todo = sorted(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        if not pset.has(name):
            raise UnknownPackage(name, pset.spec)
        seen.add(name)
        todo.extend(d for d in depends_on(name) if d not in seen)
    return sorted(seen)


def package_identity(pset: PackageSet, name: str) -> tuple[str, str]:
    if isinstance(pset, IdentifiedSet):
        return pset.package_identity(name)
    version = pset.version(name)
    return version, version


class _Closure:
    """What the tests of one closure share, made once: its two identity dicts and the JSON text of
    the full one (read only)."""

    __slots__ = ("full", "full_text", "shown")

    def __init__(self, shown: dict[str, str], full: dict[str, str]) -> None:
        self.shown = shown
        self.full = full
        self.full_text = _canonical(full)


class _Known:
    """One package set's closures: by their roots, and by their package names."""

    def __init__(self, pset: PackageSet) -> None:
        try:
            self.pset: Callable[[], PackageSet | None] = weakref.ref(pset)
        except TypeError:  # a set that takes no weak reference: kept by its caller only
            self.pset = lambda: pset
        self.closures: dict[frozenset[str], list[str]] = {}
        self.identities: dict[tuple[str, ...], _Closure] = {}
        #: each package's dependencies, resolved once (dpkg's resolve alternatives and
        #: virtual packages: about 3 us a package, 20 packages a closure)
        self.depends: dict[str, list[str]] = {}
        #: each package walked so far -> its closure (the packages of one dependency cycle
        #: share one set)
        self.reached: dict[str, frozenset[str]] = {}
        #: the protocol checked once, not per closure (a runtime_checkable isinstance costs ~5 us)
        self.identified = isinstance(pset, IdentifiedSet)

    def dependencies(self, name: str) -> list[str]:
        found = self.depends.get(name)
        if found is None:
            pset = self.pset()
            assert pset is not None
            found = self.depends[name] = pset.dependencies(name)
        return found

    def reach(self, root: str) -> frozenset[str]:
        """`root` and everything it depends on, transitively; `_Missing` if one is not in the set.

        Each package's closure is the union of its dependencies' closures, made once: a
        closure of its own per test (one test a package) was a walk of its 20-odd
        packages in Python each, now it is a union of a few sets.  Tarjan's algorithm
        (without recursion) finds the dependency cycles (libc6 <-> libgcc-s1), whose
        packages share a closure.
        """
        found = self.reached.get(root)
        if found is not None:
            return found
        pset = self.pset()
        assert pset is not None
        reached = self.reached
        order: dict[str, int] = {}  # the walk's number of each package met and not yet done
        low: dict[str, int] = {}
        stack: list[str] = []  # the packages met whose cycle is not yet known
        if not pset.has(root):
            raise _Missing
        order[root] = low[root] = 0
        stack.append(root)
        path = [(root, iter(self.dependencies(root)))]
        while path:
            name, todo = path[-1]
            for dep in todo:
                if dep in reached:
                    continue
                if dep in order:  # on the stack: in the cycle being walked, or above it
                    low[name] = min(low[name], order[dep])
                    continue
                if not pset.has(dep):
                    raise _Missing
                order[dep] = low[dep] = len(order)
                stack.append(dep)
                path.append((dep, iter(self.dependencies(dep))))
                break
            else:
                path.pop()
                if path:
                    parent = path[-1][0]
                    low[parent] = min(low[parent], low[name])
                if low[name] == order[name]:
                    cycle = stack[stack.index(name) :]
                    del stack[len(stack) - len(cycle) :]
                    found_set = set(cycle)
                    for member in cycle:
                        for dep in self.dependencies(member):
                            if dep not in found_set:
                                found_set |= reached[dep]
                    frozen = frozenset(found_set)
                    for member in cycle:
                        reached[member] = frozen
                        del order[member]
        return reached[root]


class _Missing(Exception):
    """A package of a closure is not in the set: `closure` says which, as it always did."""


#: package set -> what its tests share: the tests of one package (or of one closure) share one
#: pair of dicts, read only, instead of a pair each for the whole run (about 1.2 KiB a test),
#: and their closure is walked, and its identities hashed into text, once (about 0.3 ms a test)
_SHARED: weakref.WeakKeyDictionary[Any, _Known] = weakref.WeakKeyDictionary()


def _known(pset: PackageSet) -> _Known:
    try:
        known = _SHARED.get(pset)
        if known is None:
            known = _SHARED[pset] = _Known(pset)
        return known
    except TypeError:  # a set that takes no weak reference: no sharing
        return _Known(pset)


def _closure_of(pset: PackageSet, roots: set[str], known: _Known | None = None) -> list[str]:
    """`closure`, made once per distinct set of roots, from each package's closure made once."""
    known = _known(pset) if known is None else known
    key = frozenset(roots)
    names = known.closures.get(key)
    if names is None:
        if getattr(pset, "identity_covers_dependencies", False):
            names = closure(pset, roots, known.dependencies)
        else:
            try:
                union: set[str] = set()
                for root in roots:
                    union |= known.reach(root)
                names = sorted(union)
            except _Missing:
                closure(pset, roots, known.dependencies)  # raises UnknownPackage for the first one
                raise AssertionError("a closure with a package not in its set") from None
        known.closures[key] = names
    return names


def _identities(pset: PackageSet, names: list[str], shared: _Known | None = None) -> _Closure:
    """Each package's (shown, full) identity, as two dicts shared by the tests of the same closure."""
    shared = _known(pset) if shared is None else shared
    known = shared.identities
    found = known.get(tuple(names))
    if found is None:
        if shared.identified:
            pairs = list(map(cast(IdentifiedSet, pset).package_identity, names))
            shown = dict(zip(names, map(itemgetter(0), pairs)))
            full = dict(zip(names, map(itemgetter(1), pairs)))
        else:
            shown = {name: pset.version(name) for name in names}
            full = dict(shown)
        found = known[tuple(names)] = _Closure(shown, full)
    return found


def _canonical(data: Any) -> str:
    return _ENCODER.encode(data)


#: `json.dumps(s, ensure_ascii=False)` of a string `s`
_string: Callable[[str], str] = json.encoder.encode_basestring
#: the parts' names as JSON strings
_LABELS: dict[str, str] = {}


def _key(parts: dict[str, Any], packages_text: str) -> str:
    """The digest of every part but "shown", as `_digest` makes it, with the closure's text made once.

    `json.dumps(sort_keys=True)` of a dict is its sorted keys' `"key":value` joined by
    commas in braces: the same text, so the same key as before.
    """
    items = []
    for name in sorted(parts):
        if name == "shown":
            continue
        value = parts[name]
        if name == "packages":
            text = packages_text
        elif type(value) is str:
            text = _string(value)  # what json.dumps makes of a string, without its encoder object
        else:
            text = _canonical(value)
        label = _LABELS.get(name)
        if label is None:
            label = _LABELS[name] = _string(name)
        items.append(f"{label}:{text}")
    text = "{" + ",".join(items) + "}"
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


#: the "environment" part of a test that sets no variable (most of them)
_NO_ENVIRONMENT = _digest([])


def timeout_of(test: TestDef, override: float | None) -> float:
    """The timeout the test runs with: its own, else the run's, else the default."""
    return test.timeout if (test.timeout_set or override is None) else override


def inputs_of(
    test: TestDef,
    pset: PackageSet,
    timeout: float | None = None,
    python: str = sys.executable,
    packages: Iterable[str] | None = None,
) -> Inputs:
    """The test's input key and its parts.  `UnknownPackage` for a package not in the set.

    `python` is the interpreter a classic script or a pytest module runs in
    (the run context's): its code runs there, so another one is another input.
    `packages` is the closure when the caller has it (an autopkgtest's: its
    Depends closure and the essential packages).
    """
    known = _known(pset)
    if packages is not None:
        names = sorted(set(packages))
    else:
        names = _closure_of(pset, test.packages_needed() | {test.package}, known)
    shared = _identities(pset, names, known)
    shown, full = shared.shown, shared.full
    parts: dict[str, Any] = {
        "format": KEY_FORMAT,
        "definition": _digest(definition_parts(test)),
        "files": file_parts(test),
        "packages": full,
        "shown": shown,
        "timeout": timeout_of(test, timeout),
        # values, but of `environment` only: `secrets` are names in the definition
        "environment": _digest(sorted(test.environment.items())) if test.environment else _NO_ENVIRONMENT,
        "nixtest": __version__,
        "python": os.path.realpath(python) if test.kind in ("classic", "pytest") else "",
    }
    return Inputs(key=_key(parts, shared.full_text), parts=parts)


def changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between the parts of two keys, one short phrase each."""
    if not old:
        return ["no recorded inputs"]
    found: list[str] = []
    if old.get("format") != new.get("format"):
        return ["the input key's format changed"]
    if old.get("nixtest") != new.get("nixtest"):
        found.append(f"nixtest {old.get('nixtest')} -> {new.get('nixtest')}")
    if old.get("definition") != new.get("definition"):
        found.append("definition changed")
    old_files: dict[str, str] = old.get("files", {})
    new_files: dict[str, str] = new.get("files", {})
    for name in sorted(set(old_files) | set(new_files)):
        if name not in old_files:
            found.append(f"{name} added")
        elif name not in new_files:
            found.append(f"{name} removed")
        elif old_files[name] != new_files[name]:
            found.append(f"{name} changed")
    if (old.get("python") or "") != (new.get("python") or ""):  # a key made before it counted has none
        found.append(f"python {old.get('python') or '-'} -> {new.get('python') or '-'}")
    if old.get("environment") != new.get("environment"):
        found.append("environment changed")
    if old.get("timeout") != new.get("timeout"):
        found.append(f"timeout {old.get('timeout')} -> {new.get('timeout')}")
    old_full: dict[str, str] = old.get("packages", {})
    new_full: dict[str, str] = new.get("packages", {})
    old_shown: dict[str, str] = old.get("shown", {})
    new_shown: dict[str, str] = new.get("shown", {})
    for name in sorted(set(old_full) | set(new_full)):
        if name not in old_full:
            found.append(f"{name} {new_shown.get(name) or ''} added to the closure".replace("  ", " "))
        elif name not in new_full:
            found.append(f"{name} left the closure")
        elif old_full[name] != new_full[name]:
            before, after = old_shown.get(name, ""), new_shown.get(name, "")
            if before != after:
                found.append(f"{name} {before or '?'} -> {after or '?'}")
            else:
                found.append(f"{name} changed ({old_full[name]} -> {new_full[name]})")
    return found or ["inputs changed"]
