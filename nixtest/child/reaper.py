"""The supervisor above each test: every process the test started ends with it.

A wrapper execs `python -I -m nixtest.child.reaper [options] -- NAME=VALUE... COMMAND...`
(as `env -i` takes them).  The reaper

- builds the test's environment from the assignments and from the secrets it
  is told to keep (`--keep NAME`, read from its own environment): a secret's
  value is never in an argv, not even briefly;
- is a child subreaper (`PR_SET_CHILD_SUBREAPER`): a process the test detaches
  (`setsid cmd &`, a double fork) is re-parented to it, not to init;
- dies with its parent (`PR_SET_PDEATHSIG`): when nixtest, or a pytest-xdist
  worker, is killed, even by SIGKILL, the reaper gets SIGTERM and stops the test;
- when the test's command ends, or on SIGTERM/SIGHUP, or at `--timeout`, sends
  SIGTERM to everything left below it, SIGKILL after a grace period, and says
  what it killed (on stderr, and as a `killed` record in `--result`).

It stays a separate, single-threaded process above the test: never inside
the pytest process, whose `subprocess` module reaps its own children.  A
zygote's child may call `supervise()` after fork as well.  Standard library only.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import time
from collections.abc import Iterable, Mapping, Sequence

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
#: seconds between SIGTERM and SIGKILL when the test's time is up (as `timeout -k 5`), or
#: when the reaper is told to stop; nixtest (execution.py) waits a little longer before it
#: kills the reaper's group
GRACE = 5.0
#: seconds leftover processes get between SIGTERM and SIGKILL once the test is over
LEFTOVER_GRACE = 1.0
#: exit code on --timeout, as timeout(1)
EXIT_TIMEOUT = 124
EXIT_USAGE = 4
#: signals the test's command gets with their default action, whatever the supervisor did with them
RESET_SIGNALS = (
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGALRM,
    signal.SIGPIPE,
    signal.SIGXFSZ,
)
#: what supervise() waits for besides its own stop signals
STOP_SIGNALS = {signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD}


class _Stop:
    """Why the test was ended early (a stop signal, or the timeout), and the exit code to give."""

    def __init__(self, why: str, code: int) -> None:
        self.why = why
        self.code = code

    def __str__(self) -> str:
        return self.why


def _prctl(option: int, value: int) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(option, value, 0, 0, 0)) == 0
    except (OSError, AttributeError):  # not Linux: supervision by process group only
        return False


def _proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state) of every process, from /proc."""
    table: dict[int, tuple[int, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        # the name (2nd field) may hold spaces and parentheses: split after the last ')'
        fields = data[data.rfind(b")") + 2 :].split()
        if len(fields) >= 2:
            table[int(entry)] = (int(fields[1]), fields[0].decode())
    return table


def descendants(root: int) -> list[int]:
    """Every live process below `root` (zombies left out), parents before children."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: list[int] = []
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop(0)
        if table[pid][1] != "Z":
            found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def describe(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            words = f.read().split(b"\0")
        text = " ".join(w.decode("utf-8", "replace") for w in words if w)
    except OSError:
        text = ""
    if len(text) > 120:
        text = text[:117] + "..."
    return f"{pid} ({text or '?'})"


def _reap() -> bool:
    """Collects every exited child (orphans re-parented to us included); whether any child is left.

    As the subreaper, every process left below us is our child or a child's
    descendant: with no child left, nothing is (and /proc need not be read).
    """
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True


def sweep(grace: float) -> list[str]:
    """Ends every process below this one: SIGTERM, then SIGKILL after `grace`. Returns what it found."""
    me = os.getpid()
    killed: dict[int, str] = {}
    deadline = time.monotonic() + grace
    sent_kill = False
    for _ in range(1000):  # a fork bomb is bounded too
        if not _reap():
            break
        left = descendants(me)
        if not left:
            break
        for pid in left:
            if pid not in killed:
                killed[pid] = describe(pid)
        sig = signal.SIGKILL if sent_kill or time.monotonic() >= deadline else signal.SIGTERM
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
                if sig == signal.SIGTERM:
                    os.kill(pid, signal.SIGCONT)  # a stopped process must wake to die
        sent_kill = sig == signal.SIGKILL
        time.sleep(0.02 if sent_kill else 0.05)
    _reap()
    return list(killed.values())


def environment(assignments: Sequence[str], keep: Iterable[str], source: Mapping[str, str]) -> dict[str, str]:
    """The test's environment: the assignments, and the kept names' values from `source`."""
    env: dict[str, str] = {}
    for word in assignments:
        name, _, value = word.partition("=")
        env[name] = value
    for name in keep:
        if name in source:
            env[name] = source[name]
    return env


def _record(result: str | None, killed: list[str]) -> None:
    if result and killed:
        import json  # only now: the reaper starts before every test

        with contextlib.suppress(OSError), open(result, "a", encoding="utf-8") as f:
            f.write(json.dumps({"type": "killed", "processes": killed}) + "\n")


def supervise(
    start: int,
    *,
    name: str = "",
    timeout: float = 0.0,
    result: str | None = None,
    stop_signals: Sequence[int] = (signal.SIGTERM, signal.SIGHUP),
    quiet: bool = False,
    keep_blocked: bool = False,
) -> int:
    """Waits for the test's process `start` (a child of ours), then ends all that is left.

    Returns the exit code to pass on: the test's; -N when a signal N killed it (as
    `subprocess` says it); 128+N when signal N stopped the reaper; 124 on timeout.
    `keep_blocked` leaves the stop signals blocked when it returns: one that came
    during the cleanup stays pending for the caller.
    """
    who = f"nixtest: {name}: " if name else "nixtest: "
    # The stop signals are blocked and taken with sigtimedwait, never by a handler
    # that raises: a SIGTERM that comes while the test is already over (nixtest
    # killing the group on Ctrl-C) would otherwise escape as a traceback into the
    # test's output.  SIGCHLD is blocked too, so that it is queued and wakes us.
    waited = {*stop_signals, signal.SIGCHLD}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, waited)
    deadline = time.monotonic() + timeout if timeout > 0 else None
    status: int | None = None
    stopped: _Stop | None = None
    # one that came before they were blocked (see prepare_light_spawn): its handler ran by now
    early = [signo for signo in _EARLY if signo in stop_signals]
    if early:
        stopped = _Stop(signal.Signals(early[0]).name, 128 + early[0])
        STOPPED.append(early[0])
    while status is None and stopped is None:
        try:
            pid, code = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == start:
            status = code
            continue
        if pid != 0:
            continue  # an orphan of the test's, re-parented to us
        if deadline is None:
            signo = signal.sigwaitinfo(waited).si_signo
        else:
            info = signal.sigtimedwait(waited, max(0.0, deadline - time.monotonic()))
            if info is None:
                stopped = _Stop(f"timed out after {timeout:g} seconds", EXIT_TIMEOUT)
                break
            signo = info.si_signo
        if signo != signal.SIGCHLD:
            stopped = _Stop(signal.Signals(signo).name, 128 + signo)
            STOPPED.append(signo)
            break
    # stopped (timeout, SIGTERM from nixtest's own timeout): the test gets the full grace
    killed = sweep(LEFTOVER_GRACE if stopped is None else GRACE)
    if not keep_blocked:
        # a stop signal that came during the cleanup has nothing left to stop: drop it
        for sig in stop_signals:
            signal.signal(sig, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    # else the caller (a supervisor of test after test) takes one that came meanwhile
    if status is None:
        # stopped early: the test's own process is among the killed
        with contextlib.suppress(ChildProcessError):
            _, status = os.waitpid(start, os.WNOHANG)
        killed = [k for k in killed if not k.startswith(f"{start} ")]
    if killed and not quiet:
        shown = ", ".join(killed[:20]) + (f" and {len(killed) - 20} more" if len(killed) > 20 else "")
        plural = "es" if len(killed) != 1 else ""
        sys.stderr.write(f"{who}killed {len(killed)} process{plural} the test left running: {shown}\n")
        sys.stderr.flush()
    _record(result, killed)
    if stopped is not None:
        if stopped.code != EXIT_TIMEOUT and not quiet:
            sys.stderr.write(f"{who}{stopped}: the test was stopped\n")
        return stopped.code
    if status is None:
        return 1
    return os.waitstatus_to_exitcode(status)


def become_reaper() -> None:
    """Makes this process the subreaper of what it starts, and ends it with its parent."""
    _prctl(PR_SET_CHILD_SUBREAPER, 1)


CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE, MS_SLAVE = 1, 32, 4096, 16384, 1 << 18, 1 << 19


def private_namespace() -> bool:
    """Moves this process into a mount namespace of its own (a slave of the host's); root only.

    Mounts made in it are this process's and its children's; mounts the host
    makes later still reach it.
    """
    if os.geteuid() != 0:
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(CLONE_NEWNS) != 0:
            return False
        return bool(libc.mount(None, b"/", None, MS_REC | MS_SLAVE, None) == 0)
    except (OSError, AttributeError):
        return False


def bind_read_only(path: str) -> bool:
    """Makes `path` (and what is mounted below it) read-only in this process's mount namespace."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        raw = os.fsencode(path)
        if libc.mount(raw, raw, None, MS_BIND | MS_REC, None) != 0:
            return False
        return bool(libc.mount(None, raw, None, MS_BIND | MS_REMOUNT | MS_RDONLY, None) == 0)
    except (OSError, AttributeError):
        return False


def read_only(paths: Sequence[str]) -> bool:
    """Makes `paths` read-only for this process and its children: a private mount namespace.

    Only root needs it (mode bits already stop anyone else) and only root can;
    when it cannot be done, the paths stay as they are (a profile's read-only
    modes, and its manifest check on the next run, remain).
    """
    if not paths or os.geteuid() != 0:
        return False
    if not private_namespace():
        return False
    return all(bind_read_only(path) for path in paths)


def spawn(argv: Sequence[str], env: Mapping[str, str], readonly: Sequence[str] = ()) -> int:
    """Starts the test's command as a child, with default signal handling and `env` only."""
    pid = os.fork()
    if pid == 0:
        try:
            # Python ignores SIGPIPE and SIGXFSZ, and an ignored signal stays ignored across
            # exec: the test's `yes | head -1` would complain of a broken pipe, not just end.
            for sig in RESET_SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # blocked by main()
            read_only([p for p in readonly if os.path.isdir(p)])
            # The test dies with the reaper, should the reaper be killed outright.
            _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            os.execvpe(argv[0], list(argv), dict(env))
        except OSError as exc:
            os._exit(cannot_run(argv[0], exc))
        except BaseException:
            os._exit(127)
    return pid


#: the commands spawn_light started, by pid, until `forget` (see there)
_STARTED: dict[int, object] = {}


def spawn_light(
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    cwd: str | None = None,
    stdin: int | None = None,
    session: bool = False,
) -> int:
    """`spawn` without running Python in a copy of this process, for the spawner's tests.

    `subprocess` starts the command from C (a vfork where it can): about
    0.5 ms where `spawn`'s fork, with Python running in the copy until it
    execs, takes 1.6 ms here (os.posix_spawn is as quick, but glibc leaves
    its two internal signals ignored in the command).  Nothing runs in the
    child to reset signals, so the caller sets this process up for it first
    (`prepare_light_spawn`); the caller is also in its read-only namespace
    already.  What the command does not get is a death signal of its own:
    the runner kills its group should the spawner above it be killed
    outright (nixtest.exec.zygote.SerialChild).  Raises OSError when the
    command cannot start.  `cwd`, `stdin` and a `session` of its own are set
    in the child, from C.
    """
    import subprocess  # imported by the spawner before it forks; the wrapper's path never needs it

    # restore_signals: SIGPIPE and SIGXFSZ back to their default in the command
    proc = subprocess.Popen(
        list(argv), env=dict(env), restore_signals=True, cwd=cwd, stdin=stdin, start_new_session=session
    )
    # kept: a Popen that goes away reaps its process if it has ended, before supervise() can
    _STARTED[proc.pid] = proc
    return proc.pid


def forget(pid: int) -> None:
    """Lets go of spawn_light's `pid`, which supervise() reaped (a supervisor of test after test)."""
    proc = _STARTED.pop(pid, None)
    if proc is not None:
        # said ended: going away, it does not wait for the pid (by now maybe another process's)
        proc.returncode = 0  # type: ignore[attr-defined]


#: stop signals that came before supervise() blocked them (prepare_light_spawn's handler)
_EARLY: list[int] = []
#: the stop signals that ended a supervise() of this process (a supervisor that serves
#: test after test stops serving then: nixtest.child.spawner.supervise_serially)
STOPPED: list[int] = []


def _early_stop(signum: int, frame: object) -> None:
    """A stop signal before supervise() blocks them: kept for it to act on as it starts."""
    _EARLY.append(signum)


def _ignore(signum: int, frame: object) -> None:
    """SIGINT, SIGQUIT: nothing for the supervisor to do (the test gets them at their default)."""


def prepare_light_spawn() -> None:
    """Signal handling for `spawn_light`: what the command finds is `spawn`'s.

    The command inherits the signal mask and every ignored signal: none may
    be blocked or ignored here when it starts.  A signal with a handler is at
    its default after exec, so the supervisor handles rather than blocks or
    ignores what it must survive: a stop signal is noted for supervise()
    (which blocks them as it starts; the server forked this process with them
    blocked, so none came unnoticed before), SIGINT and SIGQUIT do nothing to
    it, as on the wrapper's path.
    """
    for sig in RESET_SIGNALS:
        if sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _early_stop)
        elif sig in (signal.SIGINT, signal.SIGQUIT):
            signal.signal(sig, _ignore)
        elif sig not in (signal.SIGPIPE, signal.SIGXFSZ):  # those: restore_signals
            signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])  # only now: handled from here on


def cannot_run(program: str, exc: OSError) -> int:
    """Says that the test's command could not start; the exit code for it (as a shell's)."""
    os.write(2, f"nixtest: cannot run {program}: {exc.strerror}\n".encode())
    return 127 if isinstance(exc, FileNotFoundError) else 126


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """`sig` comes when the parent ends, also by SIGKILL (PR_SET_PDEATHSIG)."""
    _prctl(PR_SET_PDEATHSIG, sig)


def die_like(code: int) -> int:
    """The reaper ends as the test did: killed by the same signal, or with its exit code."""
    if code >= 0:
        return code
    sig = -code
    sys.stdout.flush()
    sys.stderr.flush()
    with contextlib.suppress(ValueError, OSError):
        signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
        os.kill(os.getpid(), sig)
    return 128 + sig


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    keep: list[str] = []
    name = ""
    timeout = 0.0
    result: str | None = None
    parent: int | None = None
    readonly: list[str] = []
    quiet = False
    while args and args[0] != "--":
        option = args.pop(0)
        if option == "--quiet":
            quiet = True  # nothing on stderr (autopkgtest fails a test that writes there)
            continue
        if not args:
            sys.stderr.write(f"nixtest.child.reaper: {option} needs a value\n")
            return EXIT_USAGE
        value = args.pop(0)
        if option == "--keep":
            keep.append(value)
        elif option == "--name":
            name = value
        elif option == "--timeout":
            timeout = float(value)
        elif option == "--result":
            result = value or None
        elif option == "--parent":
            parent = int(value)
        elif option == "--read-only":
            readonly.append(value)
        else:
            sys.stderr.write(f"nixtest.child.reaper: unknown option {option}\n")
            return EXIT_USAGE
    args = args[1:]
    assignments = []
    while args and "=" in args[0] and not args[0].startswith("="):
        assignments.append(args.pop(0))
    if not args:
        sys.stderr.write("nixtest.child.reaper: no command\n")
        return EXIT_USAGE
    # Ctrl-C on a terminal reaches the test (in the same foreground group): the
    # reaper waits for it to end, then cleans up.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGQUIT, signal.SIG_IGN)
    die_with_parent()
    if parent is not None and os.getppid() != parent:
        return 128 + signal.SIGTERM  # the parent died before we could watch it
    become_reaper()
    # from here on a stop signal waits for supervise() to take it (none is lost before)
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    env = environment(assignments, keep, os.environ)
    start = spawn(args, env, readonly)
    return die_like(supervise(start, name=name, timeout=timeout, result=result, quiet=quiet))


if __name__ == "__main__":
    sys.exit(main())
