"""Building a profile cheaply: no walk of what was just written, no chmod per folder, side by side."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from nixtest import packagesets, profiles, progress
from nixtest.packagesets import DpkgSet, PrefixSet
from nixtest.profiles import MANIFEST, build_profile


@pytest.fixture
def pset(tmp_path: Path) -> PrefixSet:
    root = tmp_path / "prefixes"
    for name, files in {"a": ["bin/tool", "lib/liba.so", "share/doc/a/README"], "b": ["bin/tool"]}.items():
        for file in files:
            (root / name / file).parent.mkdir(parents=True, exist_ok=True)
            (root / name / file).write_text(file)
    (root / "set.yaml").write_text("a: a\nb: b\n")
    return PrefixSet(root / "set.yaml")


def folders_of(root: Path) -> list[str]:
    found: list[str] = []
    for folder, dirs, _ in os.walk(root):
        found.extend(os.path.relpath(os.path.join(folder, d), root) for d in dirs)
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(folder, d))]
    return sorted(found)


def test_the_tree_digest_comes_from_the_plan_not_a_walk(
    pset: PrefixSet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as patched:

        def refuse(*args: object, **kwargs: object) -> None:
            raise AssertionError("the build walked what it had just written")

        patched.setattr(os, "walk", refuse)
        profile = build_profile(pset, ["a", "b"], tmp_path / "state")
    manifest = json.loads((profile.path / MANIFEST).read_text())
    # the same hash as a walk of what is on disk
    assert manifest["tree"] == profiles._digest(profile.path)
    assert sorted(manifest["folders"]) == folders_of(profile.path)


@pytest.mark.dpkg
def test_the_digest_of_a_real_package_matches_its_tree(tmp_path: Path) -> None:
    """coreutils and python3: hundreds of links, folded folders, alternatives."""
    profile = build_profile(DpkgSet(), ["coreutils", "python3"], tmp_path / "state")
    manifest = json.loads((profile.path / MANIFEST).read_text())
    assert manifest["tree"] == profiles._digest(profile.path)
    assert sorted(manifest["folders"]) == folders_of(profile.path)


def test_folders_are_read_only_with_as_few_chmods_as_the_user_allows(
    pset: PrefixSet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Root may fill a folder made 0555 at once; any other user makes it 0755 and chmods it when full."""
    chmods: list[Any] = []
    real_chmod = os.chmod

    def counting(path: Any, mode: int, **kwargs: Any) -> None:
        chmods.append(path)
        real_chmod(path, mode, **kwargs)

    build_profile(pset, ["b"], tmp_path / "state")  # the state folder is made (and chmod-ed) first
    monkeypatch.setattr(os, "chmod", counting)
    profile = build_profile(pset, ["a", "b"], tmp_path / "state")
    folders = folders_of(profile.path)
    for folder in ["", *folders]:
        assert stat.S_IMODE(os.lstat(profile.path / folder).st_mode) == 0o555, folder
    if os.geteuid() == 0:
        assert chmods == [], "root needs no chmod per folder"
    else:
        assert sorted(chmods) == folders


def test_a_profile_is_complete_or_absent_while_it_is_built(
    pset: PrefixSet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build that fails half-way leaves nothing under the profile's name, and no build folder."""
    real_symlink = os.symlink
    made: list[str] = []

    def failing(target: Any, name: Any, *args: Any, **kwargs: Any) -> None:
        if made:
            raise OSError(28, "No space left on device")
        made.append(str(name))
        real_symlink(target, name, *args, **kwargs)

    monkeypatch.setattr(os, "symlink", failing)
    state = tmp_path / "state"
    with pytest.raises(profiles.ProfileError):
        build_profile(pset, ["a"], state)
    assert os.listdir(state / "profiles") == []


class FakeContext:
    """What `progress.build_profiles` uses of a run's context; `profile` waits for a second build."""

    def __init__(self, pset: PrefixSet, state: Path, parties: int) -> None:
        self.pset = pset
        self.state = state
        self.set_spec = pset.spec
        self.barrier = threading.Barrier(parties, timeout=10)
        self.built: list[tuple[str, ...]] = []

    def profile(self, packages: tuple[str, ...]) -> None:
        self.built.append(packages)
        self.barrier.wait()  # broken (an error) unless another build runs meanwhile


def test_a_cold_run_builds_its_profiles_side_by_side_and_says_them_in_order(
    pset: PrefixSet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wanted = [("a",), ("b",), ("a", "b"), ()]
    monkeypatch.setattr(progress, "profiles_of", lambda definitions: wanted)
    ctx = FakeContext(pset, tmp_path / "state", parties=2)
    said: list[str] = []
    count = progress.build_profiles([], ctx, lambda text, final: said.append(text))  # type: ignore[arg-type]
    assert count == 4
    assert sorted(ctx.built) == sorted(wanted)
    assert [line for line in said if " of 4: " in line] == [
        "nixtest: profile 1 of 4: a",
        "nixtest: profile 2 of 4: b",
        "nixtest: profile 3 of 4: a+b",
        "nixtest: profile 4 of 4: (empty)",
    ]
    assert said[-1].startswith("nixtest: 4 profiles ready in ")


def test_ctrl_c_while_profiles_are_built_drops_those_not_started(
    pset: PrefixSet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wanted = [(f"p{i}",) for i in range(40)]
    monkeypatch.setattr(progress, "profiles_of", lambda definitions: wanted)
    monkeypatch.setattr(progress, "profile_built", lambda pset, packages, state: False)

    class Slow(FakeContext):
        def profile(self, packages: tuple[str, ...]) -> None:
            self.built.append(packages)
            time.sleep(0.05)

    ctx = Slow(pset, tmp_path / "state", parties=1)

    def say(text: str, final: bool) -> None:
        if text.startswith("nixtest: profile 2 of"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        progress.build_profiles([], ctx, say)  # type: ignore[arg-type]
    time.sleep(0.2)
    assert len(ctx.built) < len(wanted)


@pytest.mark.dpkg
def test_a_dpkg_profile_is_planned_from_text_without_path_objects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pathlib's objects cost more than the rest of planning: DpkgSet gives its entries as text."""
    pset = DpkgSet()
    expected = [(str(inside), str(target)) for inside, target in pset.profile_entries("coreutils")]

    def refuse(name: str) -> None:
        raise AssertionError("planned from path objects")

    monkeypatch.setattr(pset, "profile_entries", refuse)
    assert list(pset.profile_texts("coreutils")) == expected
    profile = build_profile(pset, ["coreutils"], tmp_path / "state")
    assert os.readlink(profile.path / "bin" / "ls") == dict(expected)["bin/ls"]


@pytest.mark.parametrize("path", ["/usr/bin/ls", "/usr//bin/ls", "/usr/./bin/ls", "/usr/bin/", "//usr/bin/."])
def test_targets_as_text_are_what_path_objects_gave(path: str) -> None:
    assert packagesets._normal(path) == str(Path(path))
