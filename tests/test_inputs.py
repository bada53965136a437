"""The input key's pieces made once per run: closures, the definition's plain data, the key's text."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path
from typing import Any

import pytest

from nixtest.definitions import Autopkgtest, Expect, Symlink
from nixtest.definitions import TestDef as Def
from nixtest.errors import UnknownPackage
from nixtest.packagesets import DpkgSet, load_set
from nixtest.run import inputs
from nixtest.run.inputs import closure, definition_parts, inputs_of


class GraphSet:
    """A package set that is only a dependency graph; a dependency may be missing from it."""

    spec = "graph"

    def __init__(self, depends: dict[str, list[str]]) -> None:
        self.depends = depends

    def has(self, name: str) -> bool:
        return name in self.depends

    def dependencies(self, name: str) -> list[str]:
        return sorted(self.depends[name])

    def version(self, name: str) -> str:
        return f"{name}-1"


def random_graph(seed: int, size: int = 60) -> dict[str, list[str]]:
    """Packages with cycles of all lengths (a package depending on itself too) and shared parts."""
    rng = random.Random(seed)
    names = [f"p{i:02}" for i in range(size)]
    return {name: rng.sample(names, rng.choice([0, 1, 1, 2, 3, 5])) for name in names}


@pytest.mark.parametrize("seed", range(20))
def test_each_closure_is_the_walk_of_its_roots(seed: int) -> None:
    graph = random_graph(seed)
    pset = GraphSet(graph)
    rng = random.Random(seed)
    order = list(graph)
    rng.shuffle(order)  # closures met in any order reuse the ones made before
    for name in order:
        assert inputs._closure_of(pset, {name}) == closure(pset, {name}), name
    for _ in range(20):
        roots = set(rng.sample(order, rng.randint(1, 4)))
        assert inputs._closure_of(pset, roots) == closure(pset, roots), roots


def test_the_shared_closure_of_a_cycle_holds_what_each_member_reaches() -> None:
    # a -> b -> c -> a is one cycle; c also reaches d, and d reaches e
    pset = GraphSet({"a": ["b"], "b": ["c"], "c": ["a", "d"], "d": ["e"], "e": [], "f": ["a"]})
    assert inputs._closure_of(pset, {"b"}) == ["a", "b", "c", "d", "e"]
    assert inputs._closure_of(pset, {"f"}) == ["a", "b", "c", "d", "e", "f"]
    assert inputs._closure_of(pset, {"d"}) == ["d", "e"]
    known = inputs._known(pset).reached
    assert known["a"] is known["b"] is known["c"]


def test_a_package_missing_from_the_closure_is_named_as_the_walk_names_it() -> None:
    graph = {"a": ["b", "x"], "b": ["c", "y"], "c": ["a"], "d": ["c"], "z": []}
    for roots in ({"a"}, {"b"}, {"d"}, {"d", "z"}, {"nothere"}, {"z", "nothere"}):
        with pytest.raises(UnknownPackage) as walked:
            closure(GraphSet(graph), roots)
        with pytest.raises(UnknownPackage) as made:
            inputs._closure_of(GraphSet(graph), roots)
        assert made.value.name == walked.value.name, roots
    # what was complete before the missing package stays right
    pset = GraphSet(graph)
    with pytest.raises(UnknownPackage):
        inputs._closure_of(pset, {"d"})
    assert inputs._closure_of(pset, {"z"}) == ["z"]


@pytest.mark.dpkg
def test_every_installed_package_has_the_closure_the_walk_finds() -> None:
    pset = load_set("host")
    assert isinstance(pset, DpkgSet)
    for name in pset.names():
        assert inputs._closure_of(pset, {name}) == closure(pset, {name}), name


def _plain_as_before(value: Any, base: Path) -> Any:
    """`definition_parts`' values as the first input keys made them (`fields` and isinstance)."""
    if isinstance(value, Path):
        try:
            return str(value.relative_to(base))
        except ValueError:
            return str(value)
    if isinstance(value, dict):
        return {str(k): _plain_as_before(v, base) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_as_before(v, base) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: _plain_as_before(getattr(value, f.name), base) for f in dataclasses.fields(value)}
    return value


def _parts_as_before(test: Def) -> dict[str, Any]:
    skipped = ("file", "environment", "timeout", "timeout_set")
    return {
        f.name: _plain_as_before(getattr(test, f.name), test.package_dir)
        for f in dataclasses.fields(test)
        if f.name not in skipped
    }


def test_the_definition_part_is_what_it_always_was(tmp_path: Path) -> None:
    base = tmp_path / "pkg"
    file = base / "tests.yaml"
    tests = [
        Def(package="pkg", name="a", file=file, kind="run", run="true", profile=("pkg",)),
        Def(
            package="pkg",
            name="b",
            file=file,
            kind="classic",
            script=base / "sub" / "x.py",
            expect=Expect(exit=3, stdout=("^a$", "é")),
            environment={"A": "1"},
            secrets=("TOKEN",),
            profile=("pkg", "other"),
            skel=base,
            sources={"dev": base / "dev", "up": tmp_path / "elsewhere", "odd": base.parent / "pkgx" / "f"},
            symlinks=(Symlink("p", packages=("a", "b")), Symlink("q", path=Path("/etc/hosts"))),
            timeout=3.5,
            timeout_set=True,
        ),
        Def(
            package="src",
            name="command1",
            file=base / "debian" / "tests" / "control",
            kind="autopkgtest",
            imports=("zlib", "ssl"),
            autopkgtest=Autopkgtest(tree=base, stanza=2, command="make check", depends=(("a", "b|c"),)),
        ),
    ]
    for test in tests:
        made = definition_parts(test)
        assert made == _parts_as_before(test)
        assert json.dumps(made, sort_keys=True) == json.dumps(_parts_as_before(test), sort_keys=True)
    assert definition_parts(tests[1])["sources"] == {
        "dev": "dev",
        "up": str(tmp_path / "elsewhere"),
        "odd": str(base.parent / "pkgx" / "f"),
    }


def test_the_key_is_the_digest_of_every_part_but_shown(tmp_path: Path) -> None:
    pset = GraphSet({"pkg": ["dep"], "dep": [], "ünï": []})
    for test in (
        Def(package="pkg", name="a", file=tmp_path / "pkg" / "tests.yaml", kind="run", run="true"),
        Def(
            package="pkg",
            name="b",
            file=tmp_path / "pkg" / "tests.yaml",
            kind="classic",
            script=tmp_path / "pkg" / "tests.yaml",
            environment={"A": 'quote " and é'},
            profile=("ünï",),
            timeout=1e-7,
            timeout_set=True,
        ),
    ):
        made = inputs_of(test, pset)
        assert made.key == inputs._digest({k: v for k, v in made.parts.items() if k != "shown"})
