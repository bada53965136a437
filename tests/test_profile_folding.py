"""Profiles link a whole directory where that shows exactly the same files (profiles._fold)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nixtest.packagesets import DpkgSet, PrefixSet
from nixtest.profiles import FOLD_MIN, build_profile


def files_under(root: Path) -> dict[str, str]:
    """Every file seen through `root`, following directory links: relative path -> content."""
    found = {}
    for folder, _, names in os.walk(root, followlinks=True):
        for name in names:
            path = Path(folder, name)
            if path.name != ".nixtest-profile.json":
                found[str(path.relative_to(root))] = path.read_text()
    return found


def make_set(tmp_path: Path, extra: dict[str, str] | None = None) -> PrefixSet:
    root = tmp_path / "prefixes"
    data = root / "e" / "share" / "e-data"
    for n in range(FOLD_MIN + 4):
        (data / "sub").mkdir(parents=True, exist_ok=True)
        (data / f"f{n}.txt").write_text(f"file {n}\n")
        (data / "sub" / f"g{n}.txt").write_text(f"sub {n}\n")
    (root / "e" / "bin").mkdir()
    (root / "e" / "bin" / "e-tool").write_text("#!/bin/sh\n")
    (root / "f" / "share" / "other").mkdir(parents=True)
    (root / "f" / "share" / "other" / "x").write_text("x\n")
    (root / "set.yaml").write_text("e: e\nf: f\n")
    return PrefixSet(root / "set.yaml")


def test_a_directory_only_one_package_fills_is_one_link(tmp_path: Path) -> None:
    pset = make_set(tmp_path)
    profile = build_profile(pset, ["e", "f"], tmp_path / "state")
    real = tmp_path / "prefixes" / "e" / "share" / "e-data"
    link = profile.path / "share" / "e-data"
    assert link.is_symlink() and os.readlink(link) == str(real)
    # top-level folders stay real folders, whatever fills them
    for top in ("bin", "share"):
        assert (profile.path / top).is_dir() and not (profile.path / top).is_symlink()
    assert (profile.path / "share" / "other" / "x").is_symlink()
    expected = {f"share/e-data/{k}": v for k, v in files_under(real).items()}
    seen = {k: v for k, v in files_under(profile.path).items() if k.startswith("share/e-data/")}
    assert seen == expected


@pytest.mark.parametrize("what", ["a file", "an empty folder"])
def test_a_directory_holding_more_than_the_package_lists_is_not_linked(tmp_path: Path, what: str) -> None:
    pset = make_set(tmp_path)
    real = tmp_path / "prefixes" / "e" / "share" / "e-data"
    # the set's listing is taken before the real folder changes
    entries = list(pset.profile_entries("e"))
    pset.profile_entries = lambda name: iter(entries)  # type: ignore[method-assign]
    if what == "a file":
        (real / "sub" / "not-in-the-package").write_text("stray\n")
    else:
        (real / "empty").mkdir()
    profile = build_profile(pset, ["e"], tmp_path / "state")
    assert not (profile.path / "share" / "e-data").is_symlink()
    assert (profile.path / "share" / "e-data" / "f0.txt").is_symlink()
    if what == "a file":
        # the folder with the stray file is not linked; its sibling leaves are
        assert not (profile.path / "share" / "e-data" / "sub").is_symlink()
        assert not (profile.path / "share" / "e-data" / "sub" / "not-in-the-package").exists()


def test_python_byte_code_caches_do_not_stop_a_link(tmp_path: Path) -> None:
    pset = make_set(tmp_path)
    entries = list(pset.profile_entries("e"))
    pset.profile_entries = lambda name: iter(entries)  # type: ignore[method-assign]
    cache = tmp_path / "prefixes" / "e" / "share" / "e-data" / "__pycache__"
    cache.mkdir()
    (cache / "f0.cpython-311.pyc").write_bytes(b"\0")
    profile = build_profile(pset, ["e"], tmp_path / "state")
    assert (profile.path / "share" / "e-data").is_symlink()


@pytest.mark.dpkg
def test_a_real_package_shows_the_same_files_with_fewer_links(tmp_path: Path) -> None:
    pset = DpkgSet()
    # the biggest of a few common packages: its profile must show every file it lists
    name = max(
        (
            n
            for n in ("perl-modules-5.36", "python3.11", "libpython3.11-stdlib", "git", "coreutils")
            if pset.has(n)
        ),
        key=lambda n: len(list(pset.profile_entries(n))),
    )
    entries = dict(pset.profile_entries(name))
    profile = build_profile(pset, [name], tmp_path / "state")
    for inside, target in entries.items():
        seen = profile.path / inside
        assert os.path.lexists(seen), inside
        assert os.path.realpath(seen) == os.path.realpath(target), inside
    links = sum(1 for _, _, files in os.walk(profile.path) for _ in files)
    assert links < len(entries), f"{name}: no folder was linked whole"


def test_a_directory_holding_only_folders_is_linked_at_its_top(tmp_path: Path) -> None:
    """The leaves are levels below it, with levels of folders alone between."""
    root = tmp_path / "prefixes"
    real = root / "e" / "share" / "e-data"
    for n in range(FOLD_MIN):
        deep = real / "only" / "folders" / f"d{n % 2}"
        deep.mkdir(parents=True, exist_ok=True)
        (deep / f"f{n}.txt").write_text(f"file {n}\n")
    (root / "set.yaml").write_text("e: e\n")
    profile = build_profile(PrefixSet(root / "set.yaml"), ["e"], tmp_path / "state")
    link = profile.path / "share" / "e-data"
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert files_under(link) == files_under(real)
