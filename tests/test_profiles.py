"""Profiles: content addressing, reuse, collisions, atomic creation, real dpkg packages."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from nixtest import packagesets
from nixtest.errors import UnknownPackage
from nixtest.packagesets import DpkgSet, PrefixSet
from nixtest.profiles import (
    MANIFEST,
    Profile,
    build_profile,
    default_state_dir,
    profile_env,
    profile_key,
)


def make_file(path: Path, text: str = "", mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def tool(prefix: Path, name: str, says: str) -> Path:
    return make_file(prefix / "bin" / name, f"#!/bin/sh\necho {says}\n", 0o755)


@pytest.fixture
def prefixes(tmp_path: Path) -> PrefixSet:
    """Packages a and b both have bin/tool; c has bin/c-only; d's bin/tool is a's."""
    root = tmp_path / "prefixes"
    tool(root / "a", "tool", "from-a")
    make_file(root / "a" / "lib" / "liba.so")
    tool(root / "b", "tool", "from-b")
    make_file(root / "b" / "lib" / "libb.so")
    tool(root / "c", "c-only", "from-c")
    (root / "d" / "bin").mkdir(parents=True)
    (root / "d" / "bin" / "tool").symlink_to(root / "a" / "bin" / "tool")
    yaml_file = root / "set.yaml"
    yaml_file.write_text("a: a\nb: b\nc: {prefix: c, version: '2.0'}\nd: d\n")
    return PrefixSet(yaml_file)


def read_manifest(profile: Profile) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((profile.path / MANIFEST).read_text())
    return data


# ---------------------------------------------------------------------------
# the state directory and the environment


def test_state_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("NIXTEST_STATE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert default_state_dir() == tmp_path / "home" / ".cache" / "nixtest"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert default_state_dir() == tmp_path / "home" / ".cache" / "nixtest"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_state_dir() == tmp_path / "xdg" / "nixtest"
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert default_state_dir() == Path("/var/cache/nixtest")
    monkeypatch.setenv("NIXTEST_STATE", str(tmp_path / "state"))
    assert default_state_dir() == tmp_path / "state"
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert default_state_dir() == tmp_path / "state"


def test_profile_env() -> None:
    assert profile_env("/p/x") == {
        "PATH": "/p/x/bin",
        "LD_LIBRARY_PATH": "/p/x/lib",
        "PKG_CONFIG_PATH": "/p/x/lib/pkgconfig",
        "NIX_LDFLAGS": "-L /p/x/lib",
        "NIX_CFLAGS_COMPILE": "-I /p/x/include",
    }
    assert profile_env(Path("/p/x")) == profile_env("/p/x")


# ---------------------------------------------------------------------------
# content addressing and reuse


def test_same_packages_same_directory(prefixes: PrefixSet, tmp_path: Path) -> None:
    state = tmp_path / "state"
    ac = build_profile(prefixes, ["a", "c"], state)
    assert build_profile(prefixes, ["c", "a", "c"], state).path == ac.path
    assert ac.packages == ("a", "c")
    assert ac.path.parent == state / "profiles"
    assert ac.path.name == profile_key(prefixes, ["a", "c"])[:32] + "-a+c"
    assert profile_key(prefixes, ["c", "a"]) == profile_key(prefixes, ["a", "c"])
    assert len(profile_key(prefixes, ["a"])) == 64
    others = {
        build_profile(prefixes, ["a"], state).path,
        build_profile(prefixes, ["c"], state).path,
        build_profile(prefixes, ["a", "b"], state).path,
    }
    assert len(others) == 3 and ac.path not in others
    assert sorted(p.name for p in (state / "profiles").iterdir()) == sorted(
        [ac.path.name, *(p.name for p in others)]
    )


def test_version_is_part_of_the_key(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    first = tmp_path / "one.yaml"
    first.write_text("c: {prefix: c, version: '1'}\n")
    second = tmp_path / "two.yaml"
    second.write_text("c: {prefix: c, version: '2'}\n")

    one, two = PrefixSet(first), PrefixSet(second)
    # Only the version differs between the two: same identity, same prefix.
    one.identity = two.identity = "prefix:same"
    assert profile_key(one, ["c"]) != profile_key(two, ["c"])
    state = tmp_path / "state"
    assert build_profile(one, ["c"], state).path != build_profile(two, ["c"], state).path


def test_profile_contents(prefixes: PrefixSet, tmp_path: Path) -> None:
    profile = build_profile(prefixes, ["a", "c"], tmp_path / "state")
    assert profile.path.is_absolute()
    assert profile.collisions == ()
    root = tmp_path / "prefixes"
    link = profile.path / "bin" / "tool"
    assert link.is_symlink() and os.readlink(link) == str(root / "a" / "bin" / "tool")
    assert os.readlink(profile.path / "bin" / "c-only") == str(root / "c" / "bin" / "c-only")
    assert os.readlink(profile.path / "lib" / "liba.so") == str(root / "a" / "lib" / "liba.so")
    for d in (profile.path, profile.path / "bin", profile.path / "lib"):
        assert not d.is_symlink() and d.is_dir()
    env = {**profile_env(profile.path), "HOME": str(tmp_path)}
    out = subprocess.run(["tool"], env=env, capture_output=True, text=True, check=True)
    assert out.stdout == "from-a\n"
    manifest = read_manifest(profile)
    assert manifest["packages"] == ["a", "c"]
    assert manifest["versions"] == {"a": "", "c": "2.0"}


def test_reuse_does_not_read_the_set_again(
    prefixes: PrefixSet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    first = build_profile(prefixes, ["a", "b"], state)
    assert first.collisions

    def refuse(name: str) -> Iterator[tuple[PurePosixPath, Path]]:
        raise AssertionError("a reused profile must not list files again")

    monkeypatch.setattr(prefixes, "profile_entries", refuse)
    again = build_profile(prefixes, ["b", "a"], state)
    assert again == first  # collisions included, read back from the manifest


@pytest.mark.dpkg
def test_reuse_of_a_dpkg_profile_runs_only_the_version_query(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    built = build_profile(DpkgSet(), ["hello", "coreutils"], state)
    calls: list[list[str]] = []
    real_run = subprocess.run

    def counting_run(args: list[str], **kwargs: Any) -> Any:
        calls.append(list(args))
        return real_run(args, **kwargs)

    monkeypatch.setattr(packagesets.subprocess, "run", counting_run)
    assert build_profile(DpkgSet(), ["coreutils", "hello"], state) == built
    assert [c[:2] for c in calls] == [["dpkg-query", "-W"]]


def test_broken_directory_is_replaced(prefixes: PrefixSet, tmp_path: Path) -> None:
    state = tmp_path / "state"
    profile = build_profile(prefixes, ["c"], state)
    shutil.rmtree(profile.path)
    profile.path.mkdir()
    (profile.path / "junk").write_text("")
    again = build_profile(prefixes, ["c"], state)
    assert again.path == profile.path
    assert (again.path / MANIFEST).is_file()
    assert not (again.path / "junk").exists()
    assert (again.path / "bin" / "c-only").is_symlink()
    assert [p.name for p in (state / "profiles").iterdir()] == [profile.path.name]


def test_unknown_package_writes_nothing(prefixes: PrefixSet, tmp_path: Path) -> None:
    state = tmp_path / "state"
    with pytest.raises(UnknownPackage) as info:
        build_profile(prefixes, ["a", "zz"], state)
    assert info.value.name == "zz"
    assert not state.exists()


def test_world_readable_whatever_the_umask(prefixes: PrefixSet, tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        profile = build_profile(prefixes, ["a", "c"], tmp_path / "state")
    finally:
        os.umask(old)
    for d in (tmp_path / "state", tmp_path / "state" / "profiles"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o755, d
    # a profile is read-only, to its owner too: the tests it runs cannot change it
    assert stat.S_IMODE(profile.path.stat().st_mode) == 0o555
    for dirpath, dirnames, _ in os.walk(profile.path):
        for name in dirnames:
            assert stat.S_IMODE(os.lstat(Path(dirpath, name)).st_mode) == 0o555
    assert stat.S_IMODE((profile.path / MANIFEST).stat().st_mode) == 0o644


def test_long_names_are_shortened(tmp_path: Path) -> None:
    names = [f"package-with-a-long-name-{i}" for i in range(12)]
    for name in names:
        (tmp_path / name).mkdir()
    yaml_file = tmp_path / "set.yaml"
    yaml_file.write_text("".join(f"{n}: {n}\n" for n in names))
    profile = build_profile(PrefixSet(yaml_file), names, tmp_path / "state")
    assert len(profile.path.name) <= 32 + 1 + 64
    assert profile.path.name.startswith(profile_key(PrefixSet(yaml_file), names)[:32] + "-")
    assert profile.packages == tuple(sorted(names))


# ---------------------------------------------------------------------------
# collisions


def test_collision_keeps_the_first_package(prefixes: PrefixSet, tmp_path: Path) -> None:
    root = tmp_path / "prefixes"
    profile = build_profile(prefixes, ["b", "a"], tmp_path / "state")
    assert profile.collisions == (f"bin/tool: provided by a and b; kept a's ({root / 'a' / 'bin' / 'tool'})",)
    assert os.readlink(profile.path / "bin" / "tool") == str(root / "a" / "bin" / "tool")
    assert (profile.path / "lib" / "libb.so").is_symlink()  # the rest of b is there
    assert read_manifest(profile)["collisions"] == list(profile.collisions)


def test_same_file_twice_is_no_collision(prefixes: PrefixSet, tmp_path: Path) -> None:
    # d's bin/tool is a symlink to a's: the same file.
    profile = build_profile(prefixes, ["a", "d"], tmp_path / "state")
    assert profile.collisions == ()
    assert (profile.path / "bin" / "tool").resolve() == (tmp_path / "prefixes" / "a" / "bin" / "tool")


def test_directory_beats_a_file(tmp_path: Path) -> None:
    make_file(tmp_path / "x" / "share" / "thing" / "inside.txt", "x")
    make_file(tmp_path / "y" / "share" / "thing", "y")
    yaml_file = tmp_path / "set.yaml"
    yaml_file.write_text("x: x\ny: y\n")
    profile = build_profile(PrefixSet(yaml_file), ["y", "x"], tmp_path / "state")
    thing = profile.path / "share" / "thing"
    assert thing.is_dir() and not thing.is_symlink()
    assert (thing / "inside.txt").read_text() == "x"
    assert len(profile.collisions) == 1
    line = profile.collisions[0]
    assert line.startswith("share/thing: ")
    assert "x" in line and "y" in line and "kept the directory" in line


# ---------------------------------------------------------------------------
# real dpkg packages


@pytest.mark.dpkg
def test_hello_profile_is_isolated(tmp_path: Path) -> None:
    profile = build_profile(DpkgSet(), ["hello"], tmp_path / "state")
    bin_dir = profile.path / "bin"
    assert (bin_dir / "hello").is_symlink()
    assert not os.path.lexists(bin_dir / "ls")
    assert sorted(os.listdir(bin_dir)) == ["hello"]
    env = {**profile_env(profile.path), "LANG": "C"}
    out = subprocess.run(["hello"], env=env, capture_output=True, text=True, check=True)
    assert out.stdout == "Hello, world!\n"
    assert shutil.which("ls", path=env["PATH"]) is None


@pytest.mark.dpkg
def test_python3_profile_imports_sqlite3(tmp_path: Path) -> None:
    profile = build_profile(DpkgSet(), ["python3"], tmp_path / "state")
    python = profile.path / "bin" / "python3"
    assert python.is_symlink()
    env = profile_env(profile.path)
    out = subprocess.run(
        [str(python), "-c", "import sqlite3, sys; print(sqlite3.sqlite_version)"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith("3.")


@pytest.mark.dpkg
def test_dpkg_profile_of_several_packages(tmp_path: Path) -> None:
    pset = DpkgSet()
    profile = build_profile(pset, ["hello", "coreutils", "sqlite3"], tmp_path / "state")
    for program in ("hello", "ls", "sqlite3"):
        assert (profile.path / "bin" / program).exists(), program
    assert not os.path.lexists(profile.path / "bin" / "bash")
    assert read_manifest(profile)["versions"]["hello"] == pset.version("hello")


# ---------------------------------------------------------------------------
# two processes building the same profile at once


def test_losing_the_race_uses_the_winners_profile(
    prefixes: PrefixSet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    real_rename = os.rename
    winner: dict[str, Any] = {}

    def rename(src: Any, dst: Any) -> None:
        # Just before our rename, "another process" builds and renames the same profile.
        if not winner:
            winner["busy"] = True
            winner["profile"] = build_profile(prefixes, ["a", "b"], state)
            winner["inode"] = os.stat(winner["profile"].path).st_ino
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    ours = build_profile(prefixes, ["a", "b"], state)
    assert ours == winner["profile"]
    assert os.stat(ours.path).st_ino == winner["inode"]  # theirs kept, not replaced
    assert [p.name for p in (state / "profiles").iterdir()] == [ours.path.name]


class MeetingSet(PrefixSet):
    """Makes both builders list their files only once both have decided to build."""

    def __init__(self, file: Path, barrier: Any) -> None:
        super().__init__(file)
        self.barrier = barrier

    def profile_entries(self, name: str) -> Iterator[tuple[PurePosixPath, Path]]:
        self.barrier.wait(timeout=30)
        yield from super().profile_entries(name)


def _build_in_child(yaml_file: Path, state: Path, barrier: Any, results: Any) -> None:
    try:
        profile = build_profile(MeetingSet(yaml_file, barrier), ["a", "b"], state)
    except Exception as exc:  # reported to the parent, which fails the test with it
        results.put(("error", [repr(exc), "no inode"]))
    else:
        # The directory's inode: the winner's must never be replaced by the loser's.
        inode = os.stat(profile.path).st_ino
        results.put((str(profile.path), [*profile.collisions, f"inode {inode}"]))


def test_concurrent_builds_end_with_one_profile(prefixes: PrefixSet, tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    # Each process waits once per package: two packages, so two meetings.
    barrier = ctx.Barrier(2)
    results = ctx.Queue()
    state = tmp_path / "state"
    workers = [
        ctx.Process(target=_build_in_child, args=(prefixes.file, state, barrier, results)) for _ in range(2)
    ]
    for w in workers:
        w.start()
    outcomes = [results.get(timeout=60) for _ in workers]
    for w in workers:
        w.join(timeout=60)
        assert w.exitcode == 0
    assert all(path != "error" for path, _ in outcomes), outcomes
    paths = {path for path, _ in outcomes}
    assert len(paths) == 1
    path = Path(paths.pop())
    # One profile, no leftover temporary directory from the loser.
    assert [p.name for p in (state / "profiles").iterdir()] == [path.name]
    # Same collisions and the same directory, never replaced once in place.
    assert outcomes[0][1] == outcomes[1][1], outcomes
    assert outcomes[0][1][-1] == f"inode {os.stat(path).st_ino}"
    assert len(outcomes[0][1]) == 2 and outcomes[0][1][0].startswith("bin/tool: ")
    assert json.loads((path / MANIFEST).read_text())["packages"] == ["a", "b"]
    assert (path / "bin" / "tool").is_symlink()
    assert (path / "lib" / "libb.so").is_symlink()
