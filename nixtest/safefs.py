"""Files and folders nixtest may trust: the rules OpenSSH and sudo use.

Standard library only.  When nixtest runs as root, a folder another user owns,
or can write to, is theirs: a symlink planted there would make root write
through it, a file swapped there would make root run it.  So:

- `check_folder`: a folder nixtest writes into (OUT, the state folder) must be
  owned by the running user and writable by no one else, and so must every
  folder above it, unless it is root's or a sticky folder such as /tmp;
- `open_fresh`: files are created anew (`O_EXCL`), never through a symlink
  (`O_NOFOLLOW`);
- `make_folders`: folders made below a trusted one are checked the same way;
- `remove_tree`: removes a test's folder without following a symlink out of it
  and without changing anything outside it, whatever modes the test left;
- `lock_folder`: one run at a time per folder.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from pathlib import Path

from nixtest.errors import NixtestError

#: the name of the lock file a run holds in OUT
LOCK_NAME = ".nixtest.lock"


class UntrustedPath(NixtestError):
    """A folder another user controls; the message is one line."""


def _owner_ok(info: os.stat_result, uid: int, *, root_ok: bool) -> bool:
    return info.st_uid == uid or (root_ok and info.st_uid == 0)


def check_folder(path: Path | str, what: str) -> None:
    """Refuses a folder that another user owns or can write to, or that lies below one.

    `path` need not exist: then its nearest existing ancestor is checked as
    the folder nixtest would create it in.
    """
    uid = os.geteuid()
    real = Path(os.path.realpath(path))
    own = True  # the folder itself: ours, and no one else's to write
    for folder in [real, *real.parents]:
        try:
            info = os.stat(folder)
        except FileNotFoundError:
            continue  # to be made by us
        except OSError as exc:
            raise UntrustedPath(f"{what} {path}: cannot check {folder}: {exc.strerror}") from None
        if own:
            if not stat.S_ISDIR(info.st_mode):
                raise UntrustedPath(f"{what} {path}: {folder} is not a folder")
            if folder != real:
                own = False  # an ancestor that exists: the checks of an ancestor apply
            elif not _owner_ok(info, uid, root_ok=False):
                raise UntrustedPath(
                    f"{what} {path} belongs to another user (uid {info.st_uid}); "
                    "nixtest writes only into folders of its own user"
                )
            elif info.st_mode & 0o022:
                raise UntrustedPath(
                    f"{what} {path} can be written by other users (mode {stat.S_IMODE(info.st_mode):o}); "
                    f"chmod go-w {path}"
                )
            else:
                own = False
                continue
        if not _owner_ok(info, uid, root_ok=True):
            raise UntrustedPath(
                f"{what} {path}: the folder {folder} above it belongs to another user (uid {info.st_uid})"
            )
        if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
            raise UntrustedPath(
                f"{what} {path}: the folder {folder} above it can be written by other users "
                f"(mode {stat.S_IMODE(info.st_mode):o})"
            )


def check_tree(path: Path | str) -> str | None:
    """Why the tree at `path` is not closed to other users, or None when it is.

    Every folder in it must be owned by the running user or root and writable
    by no one else; a symlink is only a leaf (who made it is who owns its folder).
    """
    uid = os.geteuid()
    for folder, dirs, _ in os.walk(path):
        info = os.lstat(folder)
        if not _owner_ok(info, uid, root_ok=True):
            return f"{folder} belongs to another user (uid {info.st_uid})"
        if info.st_mode & 0o022:
            return f"{folder} can be written by other users (mode {stat.S_IMODE(info.st_mode):o})"
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(folder, d))]
    return None


def make_folders(path: Path | str, mode: int = 0o755) -> Path:
    """`mkdir -p`, then checks that every folder made or found is the running user's, and no symlink."""
    path = Path(path)
    try:
        # a folder there already (a test's log folder, each test): one lstat, not makedirs'
        # stat, mkdir and stat before it
        info: os.stat_result | None = os.lstat(path)
    except OSError:
        info = None
    if info is None or not stat.S_ISDIR(info.st_mode):
        with contextlib.suppress(FileExistsError):
            os.makedirs(path, mode=mode, exist_ok=True)
        info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise UntrustedPath(f"{path} is not a folder of its own (a symlink or a file)")
    if info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise UntrustedPath(f"{path} belongs to another user or can be written by others")
    return path


def open_fresh(path: Path | str, mode: int = 0o644) -> int:
    """A new file at `path`, opened for writing: whatever was there is removed, no symlink is followed."""
    for _ in range(99):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
        except FileExistsError:
            # made again between the two calls, by another process doing the same:
            # pytest-xdist's `--dist each` runs a test in every worker at once
            continue
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)


def lock_folder(folder: Path | str, wait: bool = False) -> int | None:
    """Takes the run lock of `folder`: its fd (keep it open), or None when another run holds it."""
    path = os.path.join(folder, LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_dir(name: str, dir_fd: int | None) -> int:
    return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)


def _make_usable(name: str, dir_fd: int | None) -> None:
    """Gives the folder `name` (in `dir_fd`) mode 0700, never through a symlink.

    O_PATH opens a folder whatever its mode; chmod through /proc/self/fd then
    changes that very folder, not what a name may point to by then.
    """
    fd = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        os.chmod(f"/proc/self/fd/{fd}", 0o700)
    finally:
        os.close(fd)


def _clear(fd: int) -> None:
    """Removes everything inside the open folder `fd`."""
    for entry in os.listdir(fd):
        try:
            os.unlink(entry, dir_fd=fd)
            continue
        except FileNotFoundError:
            continue
        except IsADirectoryError:
            pass
        except PermissionError:
            if not os.path.isdir(f"/proc/self/fd/{fd}/{entry}"):
                raise
        _remove_in(entry, fd)


def _remove_in(name: str, parent: int | None) -> None:
    try:
        child = _open_dir(name, parent)
    except FileNotFoundError:
        return
    except PermissionError:
        _make_usable(name, parent)
        child = _open_dir(name, parent)
    try:
        try:
            _clear(child)
        except PermissionError:
            # a folder without write or search permission for us: its own mode, nothing else's
            _make_usable(name, parent)
            _clear(child)
    finally:
        os.close(child)
    with contextlib.suppress(FileNotFoundError):
        os.rmdir(name, dir_fd=parent)


def remove_tree(path: Path | str) -> None:
    """`rm -rf path` that never leaves the tree and changes nothing outside it.

    A test may leave folders of mode 000 (`chmod 000 .`), read-only files,
    symlinks to anywhere: only the modes of folders inside `path` (and of
    `path` itself) are changed, never of its parent, and no symlink is followed.
    """
    path = os.path.abspath(path)
    parent, name = os.path.split(path)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(info.st_mode):
        os.unlink(path)
        return
    # the parent is the caller's (a symlink to it is fine); below it, nothing is followed
    pfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _remove_in(name, pfd)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise
    finally:
        os.close(pfd)


#: inside a claimed folder: its owner holds the lock on the folder
CLAIM_MARK = ".nixtest-claimed"


def claim(folder: Path | str) -> int:
    """Marks a folder we just made as in use by this process: the fd of its lock, to keep open.

    A process killed by SIGKILL cannot clean up; the lock goes with it, and the
    next run (`sweep_unclaimed`) removes what it left.
    """
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(os.open(CLAIM_MARK, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600, dir_fd=fd))
    except BaseException:
        os.close(fd)
        raise
    return fd


def sweep_unclaimed(base: Path | str, prefix: str) -> list[str]:
    """Removes the folders `base/prefix*` of ours whose claiming process is gone."""
    removed: list[str] = []
    uid = os.geteuid()
    try:
        entries = [e for e in os.scandir(base) if e.name.startswith(prefix)]
    except OSError:
        return removed
    for entry in entries:
        try:
            info = entry.stat(follow_symlinks=False)
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid:
                continue
            fd = os.open(entry.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live run holds it
            try:
                os.stat(CLAIM_MARK, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # made a moment ago, not yet claimed: not ours to judge
            remove_tree(entry.path)
            removed.append(entry.path)
        except OSError:
            continue
        finally:
            os.close(fd)
    return removed
