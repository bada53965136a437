"""Profiles: one directory merging the files of a list of packages, as Nix's buildEnv.

A profile holds real directories and, at the leaves, symlinks to the packages'
files.  It is content-addressed (`profile_key`): the same packages at the same
versions from the same set give the same directory under the state directory,
built once and reused by every later run, test and wrapper.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import json
import os
import re
import stat
import tempfile
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from nixtest.errors import ProfileError, UnknownPackage
from nixtest.packagesets import PackageSet
from nixtest.safefs import CLAIM_MARK, check_tree, claim, remove_tree, sweep_unclaimed

__all__ = [
    "MANIFEST",
    "Profile",
    "build_profile",
    "profile_built",
    "default_state_dir",
    "profile_env",
    "profile_key",
]

#: The file inside every profile recording what it was built from.
MANIFEST = ".nixtest-profile.json"

# Bumped whenever the layout of a profile changes, so that old profiles are not
# reused for new code.
_FORMAT = 2

#: leaves a directory must have for `_fold` to look at it: below that, checking the
#: real directory (a shared one like /usr/share/doc, often) costs more than the links
FOLD_MIN = 16

_DIR_MODE = 0o755
_READ_ONLY = _DIR_MODE & ~0o222
#: a profile being built: `<profiles>/.build-<key>-XXXX`, renamed into place when complete
BUILD_PREFIX = ".build-"
_FILE_MODE = 0o644


def default_state_dir() -> Path:
    """Where nixtest keeps profiles between runs.

    ``$NIXTEST_STATE``; else, for root, ``/var/cache/nixtest`` (root's home is
    private, and wrappers must run as any user); else
    ``$XDG_CACHE_HOME/nixtest``; else ``~/.cache/nixtest``.
    """
    explicit = os.environ.get("NIXTEST_STATE")
    if explicit:
        return Path(os.path.abspath(os.path.expanduser(explicit)))
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/cache/nixtest")
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):  # the XDG spec says to ignore a relative value
        return Path(xdg) / "nixtest"
    return Path.home() / ".cache" / "nixtest"


@dataclass(frozen=True)
class Profile:
    """A built profile."""

    path: Path
    packages: tuple[str, ...]
    #: one line each: "bin/foo: provided by a and b; kept a's (/usr/bin/foo)"
    collisions: tuple[str, ...] = ()


def _key(identity: str, versions: dict[str, str]) -> str:
    data = json.dumps([_FORMAT, identity, sorted(versions.items())], separators=(",", ":"))
    return hashlib.sha256(data.encode("utf-8", "surrogateescape")).hexdigest()


def _versions(pset: PackageSet, packages: Iterable[str]) -> dict[str, str]:
    """Sorted, de-duplicated names -> versions; `UnknownPackage` for a name not in the set."""
    versions: dict[str, str] = {}
    for name in sorted(set(packages)):
        if not pset.has(name):
            raise UnknownPackage(name, pset.spec)
        versions[name] = pset.version(name)
    return versions


def profile_key(pset: PackageSet, packages: Iterable[str]) -> str:
    """SHA-256 hex of the set's identity and the sorted (name, version) pairs."""
    return _key(pset.identity, _versions(pset, packages))


def _dir_name(key: str, names: Sequence[str]) -> str:
    """``<key[:32]>-<names joined by +>``, readable in a listing but bounded in length."""
    label = "+".join(re.sub(r"[^A-Za-z0-9._+-]", "_", n) for n in names) or "empty"
    if len(label) > 64:
        label = label[:56].rstrip("+") + f"+{len(names)}pkgs"
    return f"{key[:32]}-{label}"


def profile_env(profile_path: Path | str) -> dict[str, str]:
    """The environment variables a profile gives a test (see DESIGN "Profiles")."""
    p = os.path.abspath(os.fspath(profile_path))
    return {
        "PATH": f"{p}/bin",
        "LD_LIBRARY_PATH": f"{p}/lib",
        "PKG_CONFIG_PATH": f"{p}/lib/pkgconfig",
        "NIX_LDFLAGS": f"-L {p}/lib",
        "NIX_CFLAGS_COMPILE": f"-I {p}/include",
    }


def _same_file(a: str, b: str) -> bool:
    return a == b or os.path.realpath(a) == os.path.realpath(b)


def _plan(pset: PackageSet, names: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """Decide every leaf of the profile: (profile path -> target, collision lines).

    Packages are taken in sorted order and the first one to give a path keeps it.
    Paths are handled as text: pathlib's objects cost several times the work
    of a profile's hundreds of thousands of entries.
    """
    chosen: dict[str, tuple[str, str]] = {}
    collisions: list[str] = []
    # a set may give its entries as text already (DpkgSet.profile_texts)
    texts = getattr(pset, "profile_texts", None)
    for name in names:
        if callable(texts):
            entries: Iterable[tuple[str, str]] = texts(name)
        else:
            entries = ((str(inside), str(target)) for inside, target in pset.profile_entries(name))
        for inside, target in entries:
            if inside.startswith("/") or inside == "." or ".." in inside.split("/"):
                raise ProfileError(f"package {name!r} of {pset.spec!r} gives a bad profile path {inside!r}")
            if inside.partition("/")[0] == MANIFEST:
                continue
            if not target.startswith("/"):
                raise ProfileError(f"package {name!r} of {pset.spec!r} gives a relative target {target!r}")
            kept = chosen.get(inside)
            if kept is None:
                chosen[inside] = (name, target)
            elif not _same_file(kept[1], target):
                owner, kept_target = kept
                who = f"{owner} twice" if owner == name else f"{owner} and {name}"
                collisions.append(f"{inside}: provided by {who}; kept {owner}'s ({kept_target})")

    # A leaf where another package needs a directory: keep the directory, so
    # that no package loses a whole subtree to one file.
    dir_owner: dict[str, str] = {}
    for inside, (name, _) in chosen.items():
        cut = inside.rfind("/")
        while cut > 0 and inside[:cut] not in dir_owner:  # its parents have an owner already
            dir_owner[inside[:cut]] = name
            cut = inside.rfind("/", 0, cut)
    for inside in [p for p in chosen if p in dir_owner]:
        name, target = chosen.pop(inside)
        collisions.append(
            f"{inside}: a directory in {dir_owner[inside]} and a file in {name} ({target});"
            " kept the directory"
        )
    leaves = {inside: target for inside, (_, target) in chosen.items()}
    return _fold(leaves), sorted(collisions)


def _fold(leaves: dict[str, str]) -> dict[str, str]:
    """Links whole directories where that shows exactly the same files, as Nix's buildEnv does.

    A profile directory below the top level (`lib/google-cloud-sdk`, not
    `lib`) whose every leaf is the same relative path in one real directory,
    which holds nothing else (checked on disk; `__pycache__` aside), becomes one symlink to that
    directory.  A host package with 45,000 files then costs a few symlinks
    instead of 45,000; what the profile shows is the same.
    """
    if len(leaves) < 2:
        return leaves
    # Each directory below the top level -> the real directory it would link to
    # ("" when there is none) and how many leaves it holds.  Worked out from each
    # leaf's own folder up, a level at a time, not from every leaf up to the top:
    # that walk was a third of planning a host's profiles.
    real: dict[str, str] = {}
    count: dict[str, int] = {}
    by_depth: dict[int, list[str]] = {}

    def vote(directory: str, rest: str, source: str, held: int) -> None:
        """`directory` holds `held` leaves as `rest` (``/name``), which is `source` on disk."""
        candidate = source[: -len(rest)] if source.endswith(rest) and len(source) > len(rest) else ""
        kept = real.get(directory)
        if kept is None:
            real[directory] = candidate
            count[directory] = held
            by_depth.setdefault(directory.count("/"), []).append(directory)
        else:
            if kept != candidate:
                real[directory] = ""
            count[directory] += held

    for inside, target in leaves.items():
        cut = inside.rfind("/")
        if inside.find("/", 0, cut) >= 0:  # not in a top-level directory (bin, lib...): those stay real
            vote(inside[:cut], inside[cut:], target, 1)
    for depth in range(max(by_depth, default=0), 1, -1):  # a level adds only to shallower ones
        for directory in by_depth.get(depth, ()):
            cut = directory.rfind("/")
            if directory.find("/", 0, cut) >= 0:
                vote(directory[:cut], directory[cut:], real[directory], count[directory])
    # Shallowest first: below a directory linked whole there is nothing more to decide.
    ordered: list[str] = []
    folded: dict[str, str] = {}
    spans: list[tuple[int, int]] = []
    for depth in sorted(by_depth):
        for directory in by_depth[depth]:
            source = real[directory]
            if not source or count[directory] < FOLD_MIN or _inside_any(directory, folded):
                continue
            if not ordered:
                ordered = sorted(leaves)
            prefix = directory + "/"
            start = bisect.bisect_left(ordered, prefix)
            end = bisect.bisect_left(ordered, prefix[:-1] + "0")  # "0" follows "/"
            if _holds_exactly(source, {name[len(prefix) :] for name in ordered[start:end]}):
                folded[directory] = str(PurePosixPath(source))
                spans.append((start, end))
    if not folded:
        return leaves
    done = {name for start, end in spans for name in ordered[start:end]}
    result = {name: target for name, target in leaves.items() if name not in done}
    result.update(folded)
    return result


def _inside_any(directory: str, folded: dict[str, str]) -> bool:
    """Whether a parent of `directory` is linked whole already."""
    cut = directory.rfind("/")
    while cut > 0:
        if directory[:cut] in folded:
            return True
        cut = directory.rfind("/", 0, cut)
    return False


def _holds_exactly(real: str, wanted: set[str]) -> bool:
    """Whether `real` holds exactly the non-directories `wanted` (relative paths), and no empty folder.

    `__pycache__` folders do not count: Python made them from the package's files.
    """
    found = 0
    pending = [""]
    while pending:
        rel = pending.pop()
        try:
            with os.scandir(os.path.join(real, rel) if rel else real) as entries:
                empty = True
                for entry in entries:
                    empty = False
                    name = f"{rel}/{entry.name}" if rel else entry.name
                    if entry.is_dir(follow_symlinks=False):
                        # byte code that Debian's postinst (py3compile) made from the package's files
                        if entry.name != "__pycache__":
                            pending.append(name)
                    elif name in wanted:
                        found += 1
                    else:
                        return False
        except OSError:
            return False
        if empty:
            return False
    return found == len(wanted)


def _make_dirs(path: Path) -> None:
    """`mkdir -p` giving every directory it creates mode 0755 whatever the umask."""
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            d.mkdir()
            os.chmod(d, _DIR_MODE)


def _digest(root: Path) -> str:
    """SHA-256 of the profile's tree: every folder and symlink, with its target.

    The manifest keeps it (`tree_digest`, from the plan); where folders' change
    times are whole seconds, a profile that no longer matches it (a test
    removed `profile/bin/ls`, someone added a file) is rebuilt, not reused.
    """
    entries: list[str] = []
    for folder, dirs, files in os.walk(root):
        rel = os.path.relpath(folder, root)
        for name in sorted(dirs + files):
            if rel == "." and name in (MANIFEST, CLAIM_MARK):
                continue
            path = os.path.join(folder, name)
            inside = os.path.normpath(os.path.join(rel, name))
            if os.path.islink(path):
                entries.append(f"l {inside} {os.readlink(path)}")
            elif os.path.isdir(path):
                entries.append(f"d {inside}")
            else:
                entries.append(f"f {inside}")
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(folder, d))]
    return _hash_entries(entries)


def _hash_entries(entries: list[str]) -> str:
    """SHA-256 of a tree's entries (`d PATH`, `l PATH TARGET`, `f PATH`), whatever their order."""
    data = "\0".join(sorted(entries)).encode("utf-8", "surrogateescape")
    return hashlib.sha256(data).hexdigest()


def _fine_times(stamps: dict[str, list[int]]) -> bool:
    """Whether the folders' change times tell one change from the next (not whole seconds).

    On a filesystem that keeps whole seconds, a change made in the second the
    profile was built would leave its folder's change time as recorded.
    """
    return not stamps or any(ctime % 1_000_000_000 for _, ctime in stamps.values())


def _folders(leaves: Iterable[str]) -> list[str]:
    """Every folder the leaves need, parents first."""
    folders: set[str] = set()
    for inside in leaves:
        cut = inside.rfind("/")
        while cut > 0 and inside[:cut] not in folders:  # its parents are in already
            folders.add(inside[:cut])
            cut = inside.rfind("/", 0, cut)
    return sorted(folders)  # "a" before "a/b"


def tree_digest(folders: Iterable[str], leaves: dict[str, str]) -> str:
    """SHA-256 of a profile's tree as planned: what `_digest` gives once it is written."""
    entries = [f"d {folder}" for folder in folders]
    entries.extend(f"l {inside} {target}" for inside, target in leaves.items())
    return _hash_entries(entries)


#: whether this process may add entries to a folder of mode 0555 (root's
#: CAP_DAC_OVERRIDE): then folders are made read-only at once, no chmod each
_write_read_only: bool | None = None


def _can_write_read_only(fd: int) -> bool:
    global _write_read_only
    if _write_read_only is None:
        probe = ".nixtest-probe"
        os.mkdir(probe, 0o500, dir_fd=fd)
        try:
            os.mkdir(f"{probe}/x", dir_fd=fd)
            os.rmdir(f"{probe}/x", dir_fd=fd)
            _write_read_only = True
        except PermissionError:
            _write_read_only = False
        finally:
            os.rmdir(probe, dir_fd=fd)
    return _write_read_only


def _write(root: Path, leaves: dict[str, str], manifest: dict[str, object]) -> None:
    """Fill the empty directory `root` with the profile's tree and its manifest.

    Paths are relative to the root's descriptor: no walk from / for each of a
    profile's hundreds of entries.  The manifest records each folder's inode
    and change time once the folder is complete (read-only): `_read` compares
    them instead of reading the tree.
    """
    folders = _folders(leaves)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        # read-only to everyone, its owner (and the tests it runs) included: a
        # test cannot remove what every later run reuses
        at_once = bool(folders) and _can_write_read_only(fd)
        for folder in folders:
            os.mkdir(folder, _READ_ONLY if at_once else _DIR_MODE, dir_fd=fd)
        for inside, target in leaves.items():
            os.symlink(target, inside, dir_fd=fd)
        # Taken last: nothing below the root changes after this.  (The root's
        # own change time is not kept: writing the manifest and the rename
        # change it; `_read` lists the root instead.)
        stamps: dict[str, list[int]] = {}
        for folder in folders:
            info = os.stat(folder, dir_fd=fd, follow_symlinks=False)
            if stat.S_IMODE(info.st_mode) != _READ_ONLY:  # not made so, or the umask took bits
                os.chmod(folder, _READ_ONLY, dir_fd=fd)
                info = os.stat(folder, dir_fd=fd, follow_symlinks=False)
            stamps[folder] = [info.st_ino, info.st_ctime_ns]
        manifest = dict(
            manifest,
            tree=tree_digest(folders, leaves),
            folders=stamps,
            links={inside: target for inside, target in leaves.items() if "/" not in inside},
            check="ctime" if _fine_times(stamps) else "walk",
        )
        text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
        out = os.open(
            MANIFEST, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd
        )
        with os.fdopen(out, "w", encoding="utf-8") as f:
            os.fchmod(out, _FILE_MODE)  # whatever the umask
            f.write(text)
        # the build is complete: no longer a leftover for `sweep_unclaimed` to take
        with contextlib.suppress(FileNotFoundError):
            os.unlink(CLAIM_MARK, dir_fd=fd)
        os.fchmod(fd, _READ_ONLY)  # mkdtemp made it 0700
    finally:
        os.close(fd)


def _closed(info: os.stat_result, uid: int) -> bool:
    """Owned by us or root, and no one else may write to it."""
    return info.st_uid in (uid, 0) and not info.st_mode & 0o022


def _load_manifest(root: int, path: Path, uid: int) -> dict[str, object]:
    fd = os.open(MANIFEST, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=root)
    with os.fdopen(fd, encoding="utf-8") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or not _closed(info, uid):
            raise ValueError(f"{path / MANIFEST} is not closed to other users")
        data = json.loads(f.read())
    if not isinstance(data, dict):
        raise ValueError(f"{path / MANIFEST} is not a manifest")
    return data


def _check_root(root: int, path: Path, folders: dict[str, object], links: dict[str, object]) -> None:
    """The root folder holds exactly the folders, links and manifest recorded; ValueError if not.

    The root's own change time cannot be recorded in the manifest it holds, so
    its few entries are listed and each link read.
    """
    expected = {name for name in folders if "/" not in name} | set(links)
    seen: set[str] = set()
    with os.scandir(root) as entries:
        for entry in entries:
            name = entry.name
            if name == MANIFEST:
                continue  # opened and checked by `_load_manifest`
            if entry.is_symlink():
                same = links.get(name) == os.readlink(name, dir_fd=root)
            else:
                same = entry.is_dir(follow_symlinks=False) and name in folders
            if not same:
                raise ValueError(f"{path / name} is not what the profile was built with")
            seen.add(name)
    if seen != expected:
        raise ValueError(f"{path} lacks {sorted(expected - seen)[0]}")


def _read(path: Path, names: Sequence[str]) -> Profile:
    """The profile at `path`, from its manifest; ValueError/OSError if it is not one to use.

    Not one to use: not owned by us (or root), open to other users' writes, or
    no longer the tree its manifest describes.  Any change below the root (an
    entry added, removed or replaced, a chmod, a chown) changes the change time
    of the folder it is in, which no user can set back: so one `stat` per
    folder, compared with what the build recorded, stands for a walk of every
    link (see docs/security.md, "Profiles").
    """
    uid = os.geteuid()
    root = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if not _closed(os.fstat(root), uid):
            raise ValueError(f"{path} is not closed to other users")
        data = _load_manifest(root, path, uid)
        if data.get("packages") != list(names):
            raise ValueError(f"{path / MANIFEST} does not describe packages {list(names)}")
        folders, links = data.get("folders"), data.get("links")
        if not isinstance(folders, dict) or not isinstance(links, dict):
            raise ValueError(f"{path / MANIFEST} records no folders (an older nixtest's)")
        if data.get("check") != "ctime":
            # change times in whole seconds: read the whole tree, as before they were kept
            untrusted = check_tree(path)
            if untrusted is not None:
                raise ValueError(f"{path} is not closed to other users: {untrusted}")
            if data.get("tree") != _digest(path):
                raise ValueError(f"{path} no longer matches its manifest")
        else:
            _check_root(root, path, folders, links)
            for folder, recorded in folders.items():
                info = os.stat(folder, dir_fd=root, follow_symlinks=False)
                if (
                    not stat.S_ISDIR(info.st_mode)
                    or [info.st_ino, info.st_ctime_ns] != recorded
                    or not _closed(info, uid)
                ):
                    raise ValueError(f"{path / folder} changed since the profile was built")
    finally:
        os.close(root)
    collisions = data.get("collisions", [])
    if not isinstance(collisions, list):
        raise ValueError(f"{path / MANIFEST}: bad collisions")
    return Profile(path, tuple(names), tuple(str(c) for c in collisions))


def _discard(path: Path) -> None:
    with contextlib.suppress(OSError):
        remove_tree(path)  # a profile's folders are read-only


def profile_built(pset: PackageSet, packages: Sequence[str], state_dir: Path) -> bool | None:
    """Whether the profile of `packages` is in the state folder already; None when we cannot tell.

    Cheap (no file of the packages is read): it tells a cold run's progress
    which profiles are new.  None for a set that builds its own profiles (Nix):
    only building says whether the store has it.
    """
    if callable(getattr(pset, "build_profile", None)):
        return None
    versions = _versions(pset, packages)
    final = (
        Path(os.path.abspath(state_dir))
        / "profiles"
        / _dir_name(_key(pset.identity, versions), list(versions))
    )
    return os.path.lexists(final)


#: (process, profiles folder) already swept
_swept: set[tuple[int, str]] = set()
_swept_lock = threading.Lock()


def _sweep_once(profiles: Path) -> None:
    """Removes what builds killed outright (SIGKILL) left in `profiles`, once per process.

    Once per test, listing the folder of every profile made a run of N tests
    cost N * N entries read.  A build killed later in this run is found by the next run.
    """
    key = (os.getpid(), str(profiles))
    with _swept_lock:
        if key in _swept:
            return
        _swept.add(key)
    sweep_unclaimed(profiles, BUILD_PREFIX)


def build_profile(pset: PackageSet, packages: Sequence[str], state_dir: Path) -> Profile:
    """The profile of `packages` under ``state_dir/profiles/``, built if not there yet.

    An existing profile is reused as is.  A new one is built in a temporary
    directory next to its final place and renamed into it, so that a profile
    directory is always complete; when another process renames its own first,
    ours is dropped and theirs used.
    """
    versions = _versions(pset, packages)  # UnknownPackage before anything is written
    names = list(versions)

    # -- hook: a set that builds its own profiles (nix:FILE, nixtest.nix.NixSet) --
    # `pset.build_profile(names, state_dir)` returns the Profile.  A Nix profile
    # is a store path: its hash replaces our content addressing, Nix builds it
    # whole or not at all (no rename needed), its manifest.nix replaces ours,
    # and the set roots it under state_dir/profiles/ itself.
    own_builder = getattr(pset, "build_profile", None)
    if callable(own_builder):
        profile = own_builder(names, Path(os.path.abspath(state_dir)))
        if not isinstance(profile, Profile):
            raise ProfileError(f"the package set {pset.spec!r} built no profile for {names}")
        return profile
    # -- end of hook --

    key = _key(pset.identity, versions)
    profiles = Path(os.path.abspath(state_dir)) / "profiles"
    final = profiles / _dir_name(key, names)

    _sweep_once(profiles)
    if os.path.lexists(final):
        try:
            return _read(final, names)
        except (OSError, ValueError):
            # Not made by us (we rename only complete profiles): move it out of
            # the way and build afresh.  Renaming first keeps a concurrent
            # reader from seeing a half-deleted tree.
            aside = profiles / f".broken-{os.getpid()}-{key[:12]}"
            try:
                os.rename(final, aside)
            except OSError as exc:
                # Gone already is fine: another process moved it away first.
                if os.path.lexists(final):
                    raise ProfileError(
                        f"{final} is not a nixtest profile and cannot be replaced: {exc}"
                    ) from exc
            finally:
                _discard(aside)

    leaves, collisions = _plan(pset, names)
    manifest: dict[str, object] = {
        "format": _FORMAT,
        "identity": pset.identity,
        "set": pset.spec,
        "packages": names,
        "versions": versions,
        "collisions": collisions,
    }
    try:
        _make_dirs(profiles)
        tmp = Path(tempfile.mkdtemp(prefix=f"{BUILD_PREFIX}{key[:12]}-", dir=profiles))
        lock = claim(tmp)
    except OSError as exc:
        raise ProfileError(f"cannot create a profile in {profiles}: {exc}") from exc
    try:
        _write(tmp, leaves, manifest)
        os.rename(tmp, final)
    except OSError as exc:
        _discard(tmp)
        if os.path.lexists(final):
            # Lost the race: another process renamed the same profile into place.
            try:
                return _read(final, names)
            except (OSError, ValueError):
                pass
        raise ProfileError(f"cannot build profile {final}: {exc}") from exc
    except BaseException:
        _discard(tmp)
        raise
    finally:
        os.close(lock)
    return Profile(final, tuple(names), tuple(collisions))
