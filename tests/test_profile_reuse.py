"""Reusing a profile: cheap (no walk of its links), yet any change to it is noticed and rebuilt.

`profiles._read` compares each folder's inode and change time with what the
build recorded, and lists the root.  Each test here changes a built profile
the way a test or another user could, and checks that the next
`build_profile` builds it again rather than reusing it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nixtest import profiles
from nixtest.packagesets import PrefixSet
from nixtest.profiles import BUILD_PREFIX, MANIFEST, Profile, build_profile


def make_file(path: Path, text: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def pset(tmp_path: Path) -> PrefixSet:
    """Package a: bin/tool, lib/liba.so and share/doc/a/{README,NEWS} (folders two levels down)."""
    root = tmp_path / "prefixes"
    make_file(root / "a" / "bin" / "tool", "#!/bin/sh\n")
    make_file(root / "a" / "lib" / "liba.so")
    make_file(root / "a" / "share" / "doc" / "a" / "README")
    make_file(root / "a" / "share" / "doc" / "a" / "NEWS")
    make_file(root / "b" / "bin" / "other")
    yaml_file = root / "set.yaml"
    yaml_file.write_text("a: a\nb: b\n")
    return PrefixSet(yaml_file)


@pytest.fixture
def built(pset: PrefixSet, tmp_path: Path) -> Profile:
    return build_profile(pset, ["a"], tmp_path / "state")


def inode(path: Path) -> tuple[int, int]:
    """The folder's inode and change time: a rebuilt root may get the inode just freed."""
    info = os.lstat(path)
    return info.st_ino, info.st_ctime_ns


@contextlib.contextmanager
def writable(folder: Path) -> Iterator[None]:
    """Lets us change `folder` of a read-only profile: root may as it is; others chmod it and back."""
    if os.geteuid() == 0:
        yield
        return
    os.chmod(folder, 0o755)
    try:
        yield
    finally:
        os.chmod(folder, 0o555)


def rebuilt(pset: PrefixSet, before: Profile, state: Path) -> bool:
    """Whether `build_profile` built the profile again (a new root folder) rather than reusing it."""
    root = inode(before.path)
    again = build_profile(pset, ["a"], state)
    assert again.path == before.path
    # whatever was done to it, the profile in place is the one the set gives
    assert os.readlink(again.path / "share" / "doc" / "a" / "README") == str(
        Path(str(pset.prefix("a"))) / "share" / "doc" / "a" / "README"
    )
    assert sorted(os.listdir(again.path / "share" / "doc" / "a")) == ["NEWS", "README"]
    return inode(again.path) != root


def test_an_untouched_profile_is_reused_without_walking_it(
    pset: PrefixSet, built: Profile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reuse reads the manifest, lists the root and stats each folder: no walk, no link read below it."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("reusing a profile walked its tree")

    monkeypatch.setattr(os, "walk", refuse)
    real_readlink = os.readlink

    def readlink(path: object, *, dir_fd: int | None = None) -> str:
        assert dir_fd is not None and "/" not in str(path), f"read the link {path}"
        return real_readlink(path, dir_fd=dir_fd)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "readlink", readlink)
    root = inode(built.path)
    assert build_profile(pset, ["a"], tmp_path / "state") == built
    assert inode(built.path) == root


def test_a_removed_link_is_noticed(pset: PrefixSet, built: Profile, tmp_path: Path) -> None:
    folder = built.path / "share" / "doc" / "a"
    with writable(folder):
        (folder / "README").unlink()
    assert rebuilt(pset, built, tmp_path / "state")


def test_an_added_file_is_noticed(pset: PrefixSet, built: Profile, tmp_path: Path) -> None:
    folder = built.path / "share" / "doc" / "a"
    with writable(folder):
        (folder / "planted").write_text("x")
    assert rebuilt(pset, built, tmp_path / "state")
    assert not (built.path / "share" / "doc" / "a" / "planted").exists()


def test_a_retargeted_link_is_noticed(pset: PrefixSet, built: Profile, tmp_path: Path) -> None:
    folder = built.path / "share" / "doc" / "a"
    with writable(folder):
        (folder / "README").unlink()
        (folder / "README").symlink_to("/etc/hostname")
    assert rebuilt(pset, built, tmp_path / "state")


def test_a_link_replaced_by_rename_is_noticed(pset: PrefixSet, built: Profile, tmp_path: Path) -> None:
    folder = built.path / "share" / "doc" / "a"
    with writable(folder):
        os.symlink("/etc/hostname", folder / "new")
        os.rename(folder / "new", folder / "NEWS")
    assert rebuilt(pset, built, tmp_path / "state")


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda root: (root / "extra").write_text(""), id="file-added"),
        pytest.param(lambda root: (root / "bin" / "tool").rename(root / "tool"), id="link-moved-up"),
        pytest.param(lambda root: os.symlink("/usr", root / "usr"), id="link-added"),
        pytest.param(lambda root: os.mkdir(root / "etc"), id="folder-added"),
    ],
)
def test_a_change_in_the_root_is_noticed(
    change: Callable[[Path], None], pset: PrefixSet, built: Profile, tmp_path: Path
) -> None:
    """The root's change time is not recorded (its manifest and the rename change it): its listing is."""
    with writable(built.path), writable(built.path / "bin"):
        change(built.path)
    assert rebuilt(pset, built, tmp_path / "state")


def test_a_top_level_link_retargeted_is_noticed(tmp_path: Path) -> None:
    # no set gives top-level links today, but a profile may hold them: record one by hand
    make_file(tmp_path / "p" / "README")
    make_file(tmp_path / "p" / "bin" / "x")
    (tmp_path / "set.yaml").write_text("p: p\n")
    top = PrefixSet(tmp_path / "set.yaml")
    state = tmp_path / "state"
    profile = build_profile(top, ["p"], state)
    data = json.loads((profile.path / MANIFEST).read_text())
    data["links"]["README"] = str(tmp_path / "p" / "README")
    with writable(profile.path):
        os.symlink(str(tmp_path / "p" / "bin" / "x"), profile.path / "README")
        (profile.path / MANIFEST).write_text(json.dumps(data))
    root = inode(profile.path)
    build_profile(top, ["p"], state)
    assert inode(profile.path) != root


def test_a_folder_replaced_by_a_copy_is_noticed(pset: PrefixSet, built: Profile, tmp_path: Path) -> None:
    """The same names and links, another folder: its inode and change time differ."""
    share = built.path / "share"
    copy = tmp_path / "copy"
    shutil.copytree(share / "doc", copy, symlinks=True)
    with writable(share):
        os.rename(share / "doc", tmp_path / "old-doc")
        os.rename(copy, share / "doc")
    assert rebuilt(pset, built, tmp_path / "state")


def test_a_chmod_even_undone_is_noticed(pset: PrefixSet, built: Profile, tmp_path: Path) -> None:
    """Open to others' writes for a moment, then closed again: what was done meanwhile is unknown."""
    folder = built.path / "share" / "doc"
    os.chmod(folder, 0o777)
    os.chmod(folder, 0o555)
    assert stat.S_IMODE(os.lstat(folder).st_mode) == 0o555
    assert rebuilt(pset, built, tmp_path / "state")


@pytest.mark.root
def test_a_folder_given_to_another_user_is_noticed(pset: PrefixSet, built: Profile, tmp_path: Path) -> None:
    subprocess.run(["chown", "-h", "nobody", str(built.path / "share" / "doc" / "a")], check=True)
    assert rebuilt(pset, built, tmp_path / "state")
    assert os.lstat(built.path / "share" / "doc" / "a").st_uid == os.geteuid()


@pytest.mark.parametrize("mode", [0o666, 0o646])
def test_a_manifest_open_to_others_is_not_trusted(
    mode: int, pset: PrefixSet, built: Profile, tmp_path: Path
) -> None:
    """Whoever may write the manifest may record a tampered tree's folders in it."""
    os.chmod(built.path / MANIFEST, mode)
    assert rebuilt(pset, built, tmp_path / "state")


@pytest.mark.root
def test_a_manifest_of_another_user_is_not_trusted(pset: PrefixSet, built: Profile, tmp_path: Path) -> None:
    subprocess.run(["chown", "nobody", str(built.path / MANIFEST)], check=True)
    assert rebuilt(pset, built, tmp_path / "state")


def test_a_manifest_without_folder_records_is_rebuilt(
    pset: PrefixSet, built: Profile, tmp_path: Path
) -> None:
    """An older nixtest's profile (a tree digest only) is built again with the records."""
    data = json.loads((built.path / MANIFEST).read_text())
    del data["folders"]
    (built.path / MANIFEST).write_text(json.dumps(data))
    assert rebuilt(pset, built, tmp_path / "state")
    assert "folders" in json.loads((built.path / MANIFEST).read_text())


def test_whole_second_change_times_fall_back_to_the_walk(
    pset: PrefixSet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where change times are whole seconds, a change in the build's second would not show: walk instead."""
    monkeypatch.setattr(profiles, "_fine_times", lambda stamps: False)
    state = tmp_path / "state"
    profile = build_profile(pset, ["a"], state)
    data = json.loads((profile.path / MANIFEST).read_text())
    assert data["check"] == "walk"
    root = inode(profile.path)
    assert build_profile(pset, ["a"], state) == profile and inode(profile.path) == root
    # a retargeted link whose folder's change time is made to look unchanged
    # (as a whole-second clock would): the walk still sees it
    folder = profile.path / "share" / "doc" / "a"
    with writable(folder):
        (folder / "README").unlink()
        (folder / "README").symlink_to("/etc/hostname")
    data["folders"]["share/doc/a"] = list(inode(folder))
    with writable(profile.path):
        (profile.path / MANIFEST).unlink()
        (profile.path / MANIFEST).write_text(json.dumps(data))
    assert rebuilt(pset, profile, state)


def test_the_profiles_folder_is_swept_once_per_process(
    pset: PrefixSet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Listing the folder of every profile once per test made a run quadratic in its tests."""
    swept: list[str] = []
    real = profiles.sweep_unclaimed

    def counting(base: Path, prefix: str) -> list[str]:
        swept.append(str(base))
        return real(base, prefix)

    monkeypatch.setattr(profiles, "sweep_unclaimed", counting)
    state = tmp_path / "state"
    for names in (["a"], ["b"], ["a", "b"], ["a"], ["b"]):
        build_profile(pset, names, state)
    assert swept == [str(state / "profiles")]
    build_profile(pset, ["a"], tmp_path / "other-state")
    assert swept == [str(state / "profiles"), str(tmp_path / "other-state" / "profiles")]


def test_a_dead_build_is_still_swept_by_the_next_process(pset: PrefixSet, tmp_path: Path) -> None:
    state = tmp_path / "state"
    build_profile(pset, ["a"], state)
    dead = state / "profiles" / f"{BUILD_PREFIX}dead-1234"
    script = (
        "import os, sys\n"
        "from nixtest.safefs import claim\n"
        f"os.mkdir({str(dead)!r}); claim({str(dead)!r})\n"  # the lock goes with the process
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    assert dead.is_dir()
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from nixtest.packagesets import PrefixSet\n"
        "from nixtest.profiles import build_profile\n"
        f"build_profile(PrefixSet({str(pset_file(pset))!r}), ['b'], Path({str(state)!r}))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert not dead.exists()


def pset_file(pset: PrefixSet) -> Path:
    return Path(pset.spec.split(":", 1)[1])
