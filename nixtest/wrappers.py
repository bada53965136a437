"""Wrapper scripts: `OUT/rerun/<package>/<test>`, one standalone POSIX shell script a test.

A wrapper recreates the test's environment and working directory and runs the
test; it names only files (the interpreter, the profile, the package's test
files) and needs no nixtest command or pytest session.  Every value in it is
shell-quoted, and a secret is read from the caller's environment when the
wrapper runs: its value is never written.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
import re
import shlex
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from nixtest import __version__
from nixtest.definitions import TestDef
from nixtest.profiles import profile_env
from nixtest.safefs import make_folders, open_fresh

#: exit codes of a wrapper (and of the driver it runs)
EXIT_PASSED, EXIT_FAILED, EXIT_ERROR, EXIT_USAGE, EXIT_SKIPPED = 0, 1, 3, 4, 5
#: an autopkgtest marked `flaky` that failed
EXIT_XFAILED = 6


@dataclass(frozen=True)
class WrapperPlan:
    """What a wrapper needs to know: the test, and where its parts are."""

    test: TestDef
    profile: Path
    python: str
    #: working-directory symlinks: name -> target (a profile, or a path)
    links: Mapping[str, Path] = field(default_factory=dict)
    #: an autopkgtest's $AUTOPKGTEST_ARTIFACTS in nixtest's own run (OUT/artifacts/<source>/<test>)
    artifacts: Path | None = None

    @property
    def driven(self) -> bool:
        """Whether the test runs through the Python driver (a plain `run:` needs none)."""
        if self.test.kind == "autopkgtest":
            return False
        return not (self.test.kind == "run" and not self.test.expect.has_patterns)

    def environment(self) -> dict[str, str]:
        """The test's environment, without HOME/TMPDIR and without secrets."""
        env = profile_env(self.profile)
        env.update(self.test.environment)
        return env

    def driver_environment(self, workdir: str, secrets: Mapping[str, str]) -> dict[str, str]:
        """The driver's environment in nixtest's own run, as the wrapper's `env -i` gives it.

        `secrets`: those of the test's secrets set in the caller's environment.
        """
        env = {"HOME": workdir, "TMPDIR": f"{workdir}/.tmp"}
        env.update(self.environment())
        libraries = env.pop("LD_LIBRARY_PATH", None)
        env.update((name, secrets[name]) for name in self.test.secrets if name in secrets)
        if libraries:
            env["NIXTEST_LD_LIBRARY_PATH"] = libraries
        return env

    def command_environment(self, workdir: str, secrets: Mapping[str, str]) -> dict[str, str]:
        """A `run:` test's command's environment in nixtest's own run, as the wrapper's supervisor
        builds it: its assignments in their order (a driven test's LD_LIBRARY_PATH last), then
        the secrets set in the caller's environment (`secrets`)."""
        env = {"HOME": workdir, "TMPDIR": f"{workdir}/.tmp"}
        env.update(self.environment())
        if self.driven:
            libraries = env.pop("LD_LIBRARY_PATH", None)
            if libraries:
                env["LD_LIBRARY_PATH"] = libraries
        env.update((name, secrets[name]) for name in self.test.secrets if name in secrets)
        return env

    def command(self) -> list[str]:
        """What a `run:` test's supervisor starts: its line, run by /bin/sh."""
        assert self.test.run is not None
        return ["/bin/sh", "-c", self.test.run]

    def read_only(self) -> list[Path]:
        """The profiles the test's supervisor makes read-only to it (to root too): its own and
        the sibling profiles it links to."""
        others = [p for p in self.links.values() if p != self.profile and p.parent == self.profile.parent]
        return list(dict.fromkeys([self.profile, *others]))

    def driver_arguments(self, result: str) -> list[str]:
        """`nixtest.driver`'s arguments in nixtest's own run (which times the test itself)."""
        return ["--spec", json.dumps(self.spec()), "--result", result, "--timeout", "0"]

    def spec(self) -> dict[str, object]:
        t = self.test
        return {
            "package": t.package,
            "test": t.name,
            "kind": t.kind,
            "script": str(t.script) if t.script else None,
            "run": t.run,
            "imports": list(t.imports),
            "expect": {
                "exit": t.expect.exit,
                "stdout": list(t.expect.stdout),
                "stderr": list(t.expect.stderr),
            },
            "secrets": list(t.secrets),
            "profile": str(self.profile),
            "timeout": t.timeout,
        }


@functools.lru_cache(maxsize=16)
def reaper_lines(python: str) -> tuple[str, ...]:
    """Sets `nt_reaper`: how `"$nt_python" -I $nt_reaper` starts the supervisor.

    Its file with -S (no site module: half an interpreter's start-up) when it
    is this interpreter's and its path needs no quoting; else the module.
    Known once per interpreter: two realpath calls a wrapper were 0.1 ms.
    """
    from nixtest.child import reaper

    script = os.path.abspath(reaper.__file__)
    same = os.path.realpath(python) == os.path.realpath(sys.executable)
    if same and re.fullmatch(r"[A-Za-z0-9_./+-]+", script):
        return (f"nt_reaper='-S {script}'",)
    return ("nt_reaper='-m nixtest.child.reaper'",)


def wrapper_path(out: Path, package: str, test: str) -> Path:
    # one Path made from the joined text, not one a part (pathlib parses each)
    return Path(os.path.join(out, "rerun", package, test))


def q(value: str | os.PathLike[str]) -> str:
    return shlex.quote(os.fspath(value))


def seconds(value: float) -> str:
    """A number of seconds as the wrapper's `--timeout` takes it: digits and a point, no exponent."""
    return f"{value:f}".rstrip("0").rstrip(".") or "0"


def _block(*lines: str) -> str:
    """Lines of a wrapper that are the same in every wrapper, joined once."""
    return "\n".join(lines)


_HELP = _block(
    "# It recreates the test's environment and working directory and runs the test.",
    "#   --keep           keep the working directory and print its path",
    "#   --workdir DIR    use DIR (new or empty) as the working directory",
    "#   --shell          prepare everything, then start a shell there instead of the test",
    "#   --ipdb           run in the foreground; open ipdb where the test fails",
)
_TOOLS = _block(
    "",
    "# The wrapper's own tools; the test gets its profile's PATH.",
    "PATH=/usr/bin:/bin",
    "export PATH",
    "umask 022",
)
_OPTIONS = _block(
    "",
    "nt_usage() {",
    "    printf 'usage: %s [--keep] [--workdir DIR] [--shell] [--ipdb] [--timeout S]\\n' \"$0\"",
    "}",
    "nt_keep=0 nt_mode=run nt_workdir= nt_result=",
    'while [ "$#" -gt 0 ]; do',
    '    case "$1" in',
    "        --keep) nt_keep=1 ;;",
    "        --shell) nt_mode=shell ;;",
    "        --ipdb) nt_mode=ipdb ;;",
    "        --prepare) nt_mode=prepare ;;  # nixtest's own: the working directory only",
    "        --workdir|--result|--timeout)",
    '            if [ "$#" -lt 2 ]; then printf \'%s: %s needs a value\\n\' "$0" "$1" >&2; exit 4; fi',
    '            case "$1" in',
    "                --workdir) nt_workdir=$2 ;; --result) nt_result=$2 ;; *) nt_timeout=$2 ;;",
    "            esac",
    "            shift ;;",
    "        --workdir=*) nt_workdir=${1#--workdir=} ;;",
    "        --result=*) nt_result=${1#--result=} ;;",
    "        --timeout=*) nt_timeout=${1#--timeout=} ;;",
    "        -h|--help) nt_usage; exit 0 ;;",
    '        *) printf \'%s: unknown option: %s\\n\' "$0" "$1" >&2; nt_usage >&2; exit 4 ;;',
    "    esac",
    "    shift",
    "done",
    'case "$nt_timeout" in',
    "    ''|.|*[!0-9.]*|*.*.*)",
    '        printf \'%s: --timeout takes a number of seconds, got %s\\n\' "$0" "$nt_timeout" >&2',
    "        exit 4 ;;",
    "esac",
    "# A run of nixtest's (--result) is timed by nixtest, which kills the whole process group.",
    'if [ -n "$nt_result" ]; then nt_timeout=0; fi',
)
#: a test whose commands run in processes of their own has no Python frame of the test's
_NO_IPDB = {
    kind: _block(
        'if [ "$nt_mode" = ipdb ]; then',
        f"    printf 'nixtest: %s is {article}: test: "
        "it has no Python frame to debug; "
        '%s --shell opens a shell in its environment\\n\' "$nt_name" "$0" >&2',
        "    exit 4",
        "fi",
    )
    for kind, article in (("run", "a run"), ("imports", "an imports"), ("autopkgtest", "an autopkgtest"))
}
_TRUSTED = _block(
    "",
    "nt_trusted() {",
    "    nt_me=$(id -u) nt_d=$1 nt_self=1",
    "    while :; do",
    '        set -- $(ls -ldn -- "$nt_d")',
    '        case "$nt_self:$3" in',
    '            1:"$nt_me"|0:"$nt_me"|0:0) ;;',
    "            *) printf '%s: --workdir %s: %s belongs to another user (uid %s)\\n' "
    '"$0" "$nt_workdir" "$nt_d" "$3" >&2; return 1 ;;',
    "        esac",
    '        case "$1" in',
    "            ?????w*|????????w*)",
    '                case "$nt_self:$1" in 0:?????????[tT]*) ;; *)',
    "                    printf '%s: --workdir %s: %s can be written by other users\\n' "
    '"$0" "$nt_workdir" "$nt_d" >&2; return 1 ;;',
    "                esac ;;",
    "        esac",
    '        if [ "$nt_d" = / ]; then return 0; fi',
    "        nt_d=${nt_d%/*} nt_self=0",
    '        if [ -z "$nt_d" ]; then nt_d=/; fi',
    "    done",
    "}",
    "# A new working directory of its own.",
    "nt_runner=0",
    'if [ -n "$nt_workdir" ] && [ -n "$nt_result" ]; then',
    "    # nixtest's own run: it made this empty folder (and .tmp) and removes it afterwards",
    "    nt_wd=$nt_workdir nt_runner=1",
    'elif [ -n "$nt_workdir" ]; then',
    '    mkdir -p -- "$nt_workdir" || exit 3',
    '    nt_wd=$(cd -- "$nt_workdir" && pwd -P) || exit 3',
    "    # as sudo and OpenSSH do: no folder another user owns or can write to, nor below one",
    '    nt_trusted "$nt_wd" || exit 4',
    '    if [ -n "$(ls -A -- "$nt_wd")" ]; then',
    '        printf \'%s: --workdir %s is not empty\\n\' "$0" "$nt_workdir" >&2; exit 4',
    "    fi",
    "else",
)
_CLEANUP = _block(
    "fi",
    'if [ ! -d "$nt_wd/.tmp" ]; then mkdir -- "$nt_wd/.tmp" || { rm -rf -- "$nt_wd"; exit 3; }; fi',
    "nt_cleanup() {",
    '    if [ "$nt_runner" = 1 ]; then',
    "        :  # the runner removes the folder it made",
    '    elif [ "$nt_keep" = 1 ]; then',
    "        printf 'nixtest: working directory kept: %s\\n' \"$nt_wd\" >&2",
    "    else",
    "        # a test may leave read-only folders behind; only then is chmod worth a process",
    '        rm -rf -- "$nt_wd" 2>/dev/null || { chmod -R u+w -- "$nt_wd"; rm -rf -- "$nt_wd"; }',
    "    fi",
    "}",
    "nt_fail() {",
    '    printf \'nixtest: %s: could not prepare the working directory: %s\\n\' "$nt_name" "$1" >&2',
    "    nt_cleanup; exit 3",
    "}",
    "trap 'nt_cleanup; exit 130' INT",
    "trap 'nt_cleanup; exit 143' TERM",
    "trap 'nt_cleanup; exit 129' HUP",
)
_PROFILE_LINK = _block(
    # nixtest's own run makes this link itself (runner.profile_link): a process less a test
    'if [ "$nt_runner" = 0 ] || [ ! -L "$nt_wd/profile" ]; then',
    '    ln -s -- "$nt_profile" "$nt_wd/profile" || nt_fail profile',
    "fi",
)
_SUPERVISOR = _block(
    'cd -- "$nt_wd" || nt_fail cd',
    # nixtest's own run of a Python-driven test: its zygote starts the driver (nixtest.child.zygote)
    'if [ "$nt_mode" = prepare ] && [ "$nt_runner" = 1 ]; then exit 0; fi',
    "",
    "# The test's environment: cleared, then the profile, the test's variables, its secrets.",
)
_SUPERVISOR_NOTE = _block(
    "# The supervisor (nixtest.child.reaper) clears the environment as `env -i` does, takes the",
    "# secrets from ours by name (no value is ever in an argv), and ends every process the",
    "# test leaves behind.  It dies with its parent: with nixtest, or with this script.",
    'if [ "$nt_runner" = 1 ]; then nt_parent=$PPID; else nt_parent=$$; fi',
    "nt_timer=0",
)
_SHELL_END = _block(
    "    # bash reads no rc file (the host's /etc/bash.bashrc): the test reads none either",
    '    if [ "${nt_shell##*/}" = bash ]; then set -- "$@" --norc; fi',
    '    "$@" -i',
    "    nt_status=$?",
)
_DRIVER_END = _block(
    '    if [ -n "$nt_result" ]; then set -- "$@" --result "$nt_result"; fi',
    '    if [ "$nt_mode" = ipdb ]; then set -- "$@" --ipdb; fi',
    '    set -- "$@" --timeout "$nt_timeout"',
    '    if [ "$nt_runner" = 1 ]; then exec "$@"; fi  # nothing is left to do after it',
    '    "$@"',
    "    nt_status=$?",
)
_RUN_TIMED = _block(
    "    nt_rc=$?",
    '    if [ "$nt_timer" != 0 ] && [ "$nt_rc" -eq 124 ]; then',
    '        printf \'nixtest: %s timed out after %s seconds\\n\' "$nt_name" "$nt_timer" >&2',
    "    fi",
)
_END = _block("fi", "nt_cleanup", 'exit "$nt_status"', "")


@functools.lru_cache(maxsize=64)
def _quoted(value: str) -> str:
    """`q` of a value many wrappers of a run share (the interpreter, a profile's shells)."""
    return shlex.quote(value)


def render(plan: WrapperPlan) -> str:
    """The wrapper script's text.

    The parts every wrapper shares are joined once (`_block`): the text is the
    same as line by line, made in about half the time.
    """
    t = plan.test
    name = f"{t.package}::{t.name}"
    profile = os.fspath(plan.profile)
    timeout = seconds(t.timeout)
    lines = [
        "#!/bin/sh",
        f"# nixtest wrapper for {name} (written by nixtest {__version__}).",
        _HELP,
        f"#   --timeout S      stop the test after S seconds (default {timeout}; 0: never)",
    ]
    if t.secrets:
        lines.append("# Secrets, read from your environment when it runs: " + " ".join(t.secrets))
    lines += [
        _TOOLS,
        f"nt_name={q(name)}",
        f"nt_profile={q(profile)}",
        f"nt_python={_quoted(plan.python)}",
        # the test's supervisor (nixtest.child.reaper): standard library only, so started
        # without the site module (half an interpreter's start-up) when its file is known
        *reaper_lines(plan.python),
        "nt_shell=/bin/sh",
        f"nt_timeout={timeout}",
    ]
    for shell in ("sh", "bash"):
        quoted = _quoted(f"{profile}/bin/{shell}")
        lines.append(f"if [ -x {quoted} ]; then nt_shell={quoted}; fi")
    lines.append(_OPTIONS)
    if t.kind in _NO_IPDB:
        lines.append(_NO_IPDB[t.kind])
    for secret in t.secrets:
        lines.append(
            f'if [ -z "${{{secret}+x}}" ]; then printf \'nixtest: %s: the secret %s is not set '
            f'in your environment\\n\' "$nt_name" {secret} >&2; fi'
        )
    lines += [
        _TRUSTED,
        f'    nt_wd=$(mktemp -d "${{TMPDIR:-/tmp}}/"{q(f"nixtest-{t.package}-{t.name}.XXXXXX")}) || exit 3',
        _CLEANUP,
    ]
    if t.kind == "autopkgtest":
        return "\n".join(lines + _autopkgtest_lines(plan))
    if t.skel is not None:
        lines.append(f'cp -R -- {q(t.skel)}/. "$nt_wd/" || nt_fail skel')
    for dest, src in t.sources.items():
        target = f'"$nt_wd"/{q(dest)}'
        if src.is_dir():
            lines.append(
                f"mkdir -p -- {target} && cp -R -- {q(src)}/. {target}/ || nt_fail {q('sources.' + dest)}"
            )
        else:
            parent = f'"$nt_wd"/{q(os.path.dirname(dest))}' if os.path.dirname(dest) else '"$nt_wd"'
            lines.append(f"mkdir -p -- {parent} && cp -- {q(src)} {target} || nt_fail {q('sources.' + dest)}")
    if t.skel is not None or t.sources:
        lines.append('chmod -R u+w -- "$nt_wd" || nt_fail chmod')
        lines.append('ln -s -- "$nt_profile" "$nt_wd/profile" || nt_fail profile')
    else:
        lines.append(_PROFILE_LINK)
    for link, link_target in plan.links.items():
        if os.path.dirname(link):
            lines.append(
                f'mkdir -p -- "$nt_wd"/{q(os.path.dirname(link))} || nt_fail {q("symlinks." + link)}'
            )
        lines.append(f'ln -s -- {q(link_target)} "$nt_wd"/{q(link)} || nt_fail {q("symlinks." + link)}')
    lines.append(_SUPERVISOR)

    env = plan.environment()
    assigns = ['HOME="$nt_wd"', 'TMPDIR="$nt_wd/.tmp"']
    libraries = ""
    driven = plan.driven
    for key, value in env.items():
        if key == "LD_LIBRARY_PATH" and driven:
            # The driver hands it on to the test's commands: its own
            # interpreter must not load the profile's libraries.  A shell gets it as it is.
            libraries = value
            continue
        assigns.append(q(f"{key}={value}"))
    keep = "".join(f" --keep {s}" for s in t.secrets)
    # the profiles are shared by every test and run: read-only to the test, also to root
    profiles = ['"$nt_profile"'] + [q(p) for p in plan.read_only()[1:]]
    keep += "".join(f" --read-only {p}" for p in profiles)
    timed = "run" if t.kind == "run" and not driven else "none"
    lines += [
        _SUPERVISOR_NOTE,
        f'if [ {timed} = run ] && [ "$nt_mode" = run ]; then nt_timer=$nt_timeout; fi',
        'set -- "$nt_python" -I $nt_reaper --parent "$nt_parent" --name "$nt_name" \\',
        f'    --timeout "$nt_timer" --result "$nt_result"{keep} -- \\',
        " \\\n".join(f"    {a}" for a in assigns),
        'if [ "$nt_mode" = shell ]; then',
    ]
    if libraries:
        lines.append(f'    set -- "$@" {q("LD_LIBRARY_PATH=" + libraries)}')
    lines += [
        "    # The terminal's TERM is passed on to an interactive shell or debugger.",
        f'    set -- "$@" ${{TERM+"TERM=$TERM"}} PS1={q("[nixtest " + name + "] $ ")} "$nt_shell"',
        _SHELL_END,
        "else",
    ]
    command = " ".join(q(word) for word in plan.command()) if t.run is not None else ""
    if t.run is not None:
        # nixtest's own run: the command is all that runs, and nixtest checks its exit
        # code and its `expect` patterns on the output it captured (nixtest.child.expect)
        lines += [
            '    if [ "$nt_runner" = 1 ]; then',
            '        printf \'{"type": "exec"}\\n\' >> "$nt_result"',
            *([f'        set -- "$@" {q("LD_LIBRARY_PATH=" + libraries)}'] if libraries else []),
            f'        exec "$@" {command}',
            "    fi",
        ]
    if driven:
        lines += [
            *([f'    set -- "$@" {q("NIXTEST_LD_LIBRARY_PATH=" + libraries)}'] if libraries else []),
            '    if [ "$nt_mode" = ipdb ]; then set -- "$@" ${TERM+"TERM=$TERM"}; fi',
            # the same arguments as WrapperPlan.driver_arguments
            f'    set -- "$@" "$nt_python" -I -m nixtest.driver --spec {q(json.dumps(plan.spec()))}',
            _DRIVER_END,
        ]
    else:
        assert t.run is not None
        lines += [
            "    # Timed by the supervisor (--timeout): SIGTERM to all the test started, SIGKILL 5 s later.",
            f'    "$@" {command}',
            _RUN_TIMED,
            f'    if [ "$nt_rc" -eq {t.expect.exit} ]; then',
            "        nt_status=0",
            "    else",
            f"        printf 'nixtest: %s failed: the command exited %s, expected {t.expect.exit}\\n' "
            '"$nt_name" "$nt_rc" >&2',
            "        nt_status=1",
            "    fi",
        ]
    lines.append(_END)
    return "\n".join(lines)


def write_wrapper(plan: WrapperPlan, out: Path) -> Path:
    """Writes the wrapper atomically, executable by anyone who can read it.

    A warm run writes the same wrappers again: one that is already there, the
    same bytes, a regular file of ours with mode 755, is left be (open, fstat,
    read, close).  Otherwise a new file is made beside it (one open, write,
    fchmod) and renamed over it.
    """
    path = wrapper_path(out, plan.test.package, plan.test.name)
    data = render(plan).encode("utf-8")
    if _same_file(path, data):
        return path
    # a folder of our own, no symlink: the wrapper is what a later run (maybe root's) executes
    make_folders(path.parent)
    tmp = path.parent / f".{plan.test.name}.{os.getpid()}.{next(_TEMPORARY)}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o755)
    except FileExistsError:  # left by a killed run of the same process id
        fd = open_fresh(tmp, 0o755)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, 0o755)  # whatever the umask
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


#: the temporary files' names in this process: unique without mkstemp's random tries
_TEMPORARY = itertools.count()


def _same_file(path: Path, data: bytes) -> bool:
    """Whether `path` is a regular file of ours, mode 755, holding exactly `data` (no symlink followed)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        info = os.fstat(fd)
        if (
            not stat.S_ISREG(info.st_mode)
            or stat.S_IMODE(info.st_mode) != 0o755
            or info.st_uid != os.geteuid()
            or info.st_size != len(data)
        ):
            return False
        return os.read(fd, len(data) + 1) == data
    except OSError:
        return False
    finally:
        os.close(fd)


def _json_string_filter() -> str:
    """A pipe turning text into the inside of a JSON string: printable ASCII, escaped."""
    return "LC_ALL=C tr -cd ' -~' | sed 's/[\\\\\"]/\\\\&/g'"


def _autopkgtest_lines(plan: WrapperPlan) -> list[str]:
    """The rest of an autopkgtest's wrapper: its tree, its environment, autopkgtest's rules."""
    t = plan.test
    spec = t.autopkgtest
    assert spec is not None
    restrictions = set(spec.restrictions)
    env = profile_env(plan.profile)
    artifacts = plan.artifacts
    lines = [
        "",
        "# As autopkgtest runs it: in a fresh writable copy of the source tree,",
        "# with a fresh empty $AUTOPKGTEST_TMP and a folder for $AUTOPKGTEST_ARTIFACTS.",
        f"nt_tree={q(spec.tree)}",
        'mkdir -- "$nt_wd/src" "$nt_wd/tmp" || nt_fail mkdir',
        'cp -R -- "$nt_tree"/. "$nt_wd/src"/ || nt_fail "copy of the source tree"',
        'chmod -R u+w -- "$nt_wd/src" || nt_fail chmod',
        'ln -s -- "$nt_profile" "$nt_wd/profile" || nt_fail profile',
        # nixtest's own run puts them where the reports list them; a rerun keeps to its folder
        'nt_artifacts="$nt_wd/artifacts"',
    ]
    if artifacts is not None:
        lines.append(f'if [ "$nt_runner" = 1 ]; then nt_artifacts={q(artifacts)}; fi')
    lines += [
        'mkdir -p -- "$nt_artifacts" || nt_fail artifacts',
        'cd -- "$nt_wd/src" || nt_fail cd',
        "",
        "# The end: one line for nixtest's own run (a JSON record), or for the person rerunning it.",
        "nt_end() {",
        '    if [ "$nt_runner" = 1 ]; then',
        f"        nt_msg=$(printf '%s' \"$2\" | {_json_string_filter()})",
        '        printf \'{"type": "end", "message": "%s"}\\n\' "$nt_msg" >> "$nt_result"',
        '    elif [ -n "$2" ]; then',
        '        printf \'nixtest: %s %s: %s\\n\' "$nt_name" "$3" "$2" >&2',
        "    fi",
        '    if [ "$nt_keep" = 1 ] && [ "$nt_runner" != 1 ]; then',
        "        printf 'nixtest: artifacts in %s\\n' \"$nt_artifacts\" >&2",
        "    fi",
        "    nt_cleanup",
        '    exit "$1"',
        "}",
    ]
    if "needs-root" in restrictions:
        lines += [
            "# needs-root: it runs only as root",
            'if [ "$nt_mode" = run ] && [ "$(id -u)" != 0 ]; then',
            f"    nt_end {EXIT_SKIPPED} 'restriction needs-root: it runs only as root' skipped",
            "fi",
        ]
    assigns = [
        'HOME="$nt_wd"',
        'TMPDIR="$nt_wd/.tmp"',
        'USER="$(id -un 2>/dev/null || id -u)"',
        'AUTOPKGTEST_TMP="$nt_wd/tmp"',
        'ADTTMP="$nt_wd/tmp"',
        'AUTOPKGTEST_ARTIFACTS="$nt_artifacts"',
        'ADT_ARTIFACTS="$nt_artifacts"',
        "DEBIAN_FRONTEND=noninteractive",
        "LANG=C.UTF-8",
        *(q(f"{key}={value}") for key, value in env.items()),
    ]
    lines += [
        "",
        "# The test's environment: cleared, then autopkgtest's variables and the profile's.",
        "# Its supervisor (nixtest.child.reaper) clears it as `env -i` does, times the test and",
        "# ends every process the test leaves behind.",
        'set -- "$nt_python" -I $nt_reaper --name "$nt_name" --result "$nt_result" \\',
        '    --timeout "$nt_timeout" --read-only "$nt_profile" --quiet -- \\',
        *[f"    {a} \\" for a in assigns],
    ]
    lines[-1] = lines[-1][:-2]
    if spec.command is not None:
        # "It will be run under bash -e" (README.package-tests.rst): the profile's bash
        # (an essential package of a dpkg set), else the machine's for a set without it
        bash = plan.profile / "bin" / "bash"
        if not os.path.exists(bash):
            bash = Path("/bin/bash")
        lines.append(f'set -- "$@" {q(bash)} -e -c {q(spec.command)}')
    else:
        assert spec.path is not None
        lines += [
            f'chmod +x -- "$nt_wd/src"/{q(spec.path)} || nt_fail chmod',
            f'set -- "$@" "$nt_wd/src"/{q(spec.path)}',
        ]
    # --shell: the environment above, in the copy of the tree, a shell instead of the test
    lines += [
        'if [ "$nt_mode" = shell ]; then',
        '    set -- "$nt_python" -I $nt_reaper --name "$nt_name" -- '
        f'{" ".join(assigns)} ${{TERM+"TERM=$TERM"}} '
        f"PS1={q('[nixtest ' + t.nodeid + '] $ ')}",
        '    if [ -x "$nt_profile/bin/bash" ]; then set -- "$@" "$nt_profile/bin/bash" --norc -i; '
        'else set -- "$@" /bin/sh -i; fi',
        '    "$@"',
        "    nt_status=$?",
        "    nt_cleanup",
        '    exit "$nt_status"',
        "fi",
    ]
    first_stderr = (
        "nt_first=$(head -n 1 -- \"$nt_wd/.stderr\" | LC_ALL=C tr -cd ' -~' | cut -c 1-200 "
        "| sed 's/[ \t]*$//')"
    )
    lines += [
        "",
        "# Its stderr is kept apart as well: autopkgtest fails a test that wrote to it.",
        "# Timed by the supervisor (--timeout above): 124 when the time was up.",
        "nt_timer=",
        'if [ "$nt_timeout" != 0 ]; then nt_timer=$nt_timeout; fi',
        ': > "$nt_wd/.stderr"',
        '{ { "$@" 3>&-; echo "$?" > "$nt_wd/.rc"; } 2>&1 >&3 3>&- | tee -- "$nt_wd/.stderr" >&2; } 3>&1',
        'read -r nt_rc < "$nt_wd/.rc" || nt_rc=255',
        'if [ -n "$nt_timer" ] && [ "$nt_rc" -eq 124 ]; then',
        f'    nt_end {EXIT_FAILED} "timed out after $nt_timer seconds" failed',
        "fi",
    ]
    if "skippable" in restrictions:
        lines += [
            'if [ "$nt_rc" -eq 77 ]; then',
            f"    nt_end {EXIT_SKIPPED} 'exit status 77 and marked as skippable' skipped",
            "fi",
        ]
    if "flaky" in restrictions:
        lines += [
            'if [ "$nt_rc" -ne 0 ]; then',
            f'    nt_end {EXIT_XFAILED} "non-zero exit status $nt_rc (flaky: not counted as a failure)" '
            "xfailed",
            "fi",
        ]
    lines += [
        'if [ "$nt_rc" -ne 0 ]; then',
        f'    nt_end {EXIT_FAILED} "non-zero exit status $nt_rc" failed',
        "fi",
    ]
    if "allow-stderr" not in restrictions:
        lines += [
            'if [ -s "$nt_wd/.stderr" ]; then',
            f"    {first_stderr}",
            f"    nt_end {EXIT_XFAILED if 'flaky' in restrictions else EXIT_FAILED} "
            f'"stderr: $nt_first" {"xfailed" if "flaky" in restrictions else "failed"}',
            "fi",
        ]
    lines += [f"nt_end {EXIT_PASSED} '' passed", ""]
    return lines
