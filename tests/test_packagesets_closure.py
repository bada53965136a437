"""The dependency closure, essential packages, dpkg -S and alternatives of the dpkg set."""

from __future__ import annotations

import os
import shutil

import pytest

from nixtest.packagesets import DpkgSet, PrefixSet, dependency_closure, essential_packages, load_set

pytestmark = pytest.mark.dpkg


def test_closure_follows_depends_transitively() -> None:
    pset = load_set("host")
    closure = dependency_closure(pset, ["coreutils"])
    assert "coreutils" in closure and "libc6" in closure
    # libc6's own dependencies come along: the closure is transitive
    for name in pset.dependencies("libc6"):
        assert name in closure
    assert closure == sorted(closure)
    for name in closure:
        assert set(pset.dependencies(name)) <= set(closure)


def test_essential_packages_are_dpkgs() -> None:
    pset = load_set("host")
    essential = essential_packages(pset)
    assert {"bash", "coreutils", "dpkg"} <= set(essential)
    assert "hello" not in essential
    # a set without the notion has none
    assert essential_packages(PrefixSet.__new__(PrefixSet)) == []


@pytest.mark.tools("awk")
def test_owner_and_alternatives() -> None:
    pset = load_set("host")
    assert isinstance(pset, DpkgSet)
    awk = shutil.which("awk", path="/usr/bin:/bin")
    assert awk is not None
    chosen = os.path.realpath(awk)
    owner = pset.owner(awk)
    assert owner is not None and chosen in {str(p) for p in pset.files(owner)}
    # /usr/bin/awk is no file of any package: update-alternatives made it, and the profile has it
    entries = {str(inside): str(target) for inside, target in pset.profile_entries(owner)}
    assert entries.get("bin/awk") == chosen
    assert pset.owner("/no/such/file") is None
