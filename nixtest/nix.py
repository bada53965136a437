"""The ``nix:FILE`` package set: packages are attribute paths of a Nix expression.

FILE (or ``DIR/default.nix``) evaluates to an attribute set of derivations, or
to a function of defaulted arguments returning one.  Everything comes from the
real Nix commands:

* the listing is one ``nix-env -qaP --json -f FILE`` per run (nested sets are
  listed where they say ``recurseForDerivations = true``, as nixpkgs'
  ``recurseIntoAttrs`` does); an unlisted attribute path that is a derivation
  (``python3Packages.numpy``) is a package too, looked up on its own;
* versions are Nix's (parsed from the derivation's name, as ``nix-env`` does);
* a package's outputs (``meta.outputsToInstall``, else its default output) are
  built by ``nix-build`` only when a profile needs them, with a GC root under
  ``STATE/gcroots/``;
* dependencies are the set's packages among ``nix-store -q --references`` of
  those outputs;
* a profile is a Nix user environment built by ``builtin:buildenv`` (what
  ``nix-env -i`` builds, with its ``manifest.nix``): a store path, rooted by
  ``STATE/profiles/<its store name>``.  Packages win file collisions by
  ``meta.priority``, then in sorted order, like every nixtest profile.

Inside a job of a release.nix that ``nixtest jobset`` wrote, the job hands
nixtest everything already built (`PREBUILT_ENV`): no Nix command runs inside
the build, so nothing writes to the store from within it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from nixtest.errors import PackageSetError, ProfileError, UnknownPackage
from nixtest.profiles import Profile, default_state_dir

__all__ = [
    "NIX_LIB",
    "PREBUILT_ENV",
    "NixSet",
    "load_nix_set",
    "nix_error",
    "nix_string",
    "profile_label",
    "resolve_file",
    "store_name",
]

#: Set by a jobset's build: JSON of the packages and profiles Nix built for the job.
PREBUILT_ENV = "NIXTEST_NIX_PREBUILT"

# nixtest's Nix helpers, a function of the package set.  The same text is used
# by `nixtest run` and written into every release.nix, so that a profile built
# locally and the one a Hydra job gets are the same derivation, the same store path.
NIX_LIB = r"""
# nixtest's Nix helpers (nixtest/nix.py, NIX_LIB).
pkgs:
rec {
  # The value at an attribute path (a list of names); `find` gives null when it is missing.
  get = path: builtins.foldl' (set: name: builtins.getAttr name set) pkgs path;
  find = path: builtins.foldl'
    (set: name: if set != null && builtins.isAttrs set && builtins.hasAttr name set
                then builtins.getAttr name set else null)
    pkgs path;
  isPackage = path:
    let found = builtins.tryEval (let v = find path; in
          builtins.isAttrs v && (v.type or "") == "derivation");
    in found.success && found.value;
  # The outputs a profile gets, as nix-env -i installs them.
  outputsOf = drv: drv.meta.outputsToInstall or [ (drv.outputName or "out") ];
  installed = drv: map (output: builtins.getAttr output drv) (outputsOf drv);
  priorityOf = drv:
    let p = drv.meta.priority or 5; in if builtins.isInt p then p else 5;
  # A user environment, as nix-env builds it, of the packages at `paths` (in
  # nixtest's sorted order).  A collision goes to the package with the lower
  # meta.priority, then to the one that comes first.
  profile = name: paths:
    let
      drvs = map get paths;
      n = builtins.length drvs + 1;
      str = s: builtins.toJSON (builtins.unsafeDiscardStringContext (toString s));
      entry = i: drv:
        [ "true" (toString (priorityOf drv * n + i)) (toString (builtins.length (outputsOf drv))) ]
        ++ installed drv;
      manifestEntry = drv:
        let outputs = outputsOf drv; in
        "{ meta = { }; name = ${str drv.name}; "
        + "outPath = ${str (builtins.getAttr (builtins.head outputs) drv).outPath}; "
        + "outputs = [ ${builtins.concatStringsSep " " (map str outputs)} ]; "
        + builtins.concatStringsSep ""
            (map (o: "${str o} = { outPath = ${str (builtins.getAttr o drv).outPath}; }; ") outputs)
        + "system = ${str (drv.system or "unknown")}; type = \"derivation\"; }";
    in
    derivation {
      name = "nixtest-profile-${name}";
      system = "builtin";
      builder = "builtin:buildenv";
      derivations = builtins.genList (i: entry i (builtins.elemAt drvs i)) (builtins.length drvs);
      manifest = builtins.toFile "env-manifest.nix"
        "[ ${builtins.concatStringsSep " " (map manifestEntry drvs)} ]";
      preferLocalBuild = true;
      allowSubstitutes = false;
    };
}
"""

# What `nix-build -E` runs: FILE imported (called when a function) and one request.
_EXPR_HEAD = f"""
{{ file, request }}:
let
  value = import (/. + file);
  pkgs = if builtins.isFunction value then value {{ }} else value;
  r = builtins.fromJSON request;
  nixtest = ({NIX_LIB}) pkgs;
in
"""
_PACKAGE_EXPR = _EXPR_HEAD + "nixtest.installed (nixtest.get r.attr)\n"
_PROFILE_EXPR = _EXPR_HEAD + "nixtest.profile r.name r.packages\n"

_STORE_NAME_BAD = re.compile(r"[^A-Za-z0-9+._?=-]")


def store_name(text: str, limit: int = 180) -> str:
    """`text` as a valid Nix store path name: other characters become ``_``."""
    name = _STORE_NAME_BAD.sub("_", text)[:limit]
    return "_" + name[1:] if name.startswith(".") else name or "_"


def profile_label(names: Sequence[str]) -> str:
    """The readable part of a profile's store name: its packages joined by ``+``, bounded."""
    label = "+".join(store_name(n) for n in names) or "empty"
    if len(label) > 64:
        label = label[:56].rstrip("+") + f"+{len(names)}pkgs"
    return label


def nix_string(text: str) -> str:
    """`text` as a Nix string literal."""
    escaped = (
        text.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("${", "\\${")
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
    )
    return f'"{escaped}"'


def attr_path(name: str) -> list[str]:
    """A package name as the attribute path it is: ``tools.sed`` -> ``["tools", "sed"]``."""
    return name.split(".")


# Nix's own lines around a build's log
_NIX_STATUS = re.compile(r"^(building '|these |this |  /nix/store/|warning: |copying |error: )")


def nix_error(stderr: str) -> str:
    """Nix's error output as one line: the error, where it is, and a failed build's last log line."""
    lines = [line.rstrip() for line in stderr.splitlines()]
    first = next((i for i, line in enumerate(lines) if line.startswith("error:")), None)
    if first is None:
        shown = [line.strip() for line in lines if line.strip()]
        return shown[-1] if shown else "no error message"
    message = lines[first][len("error:") :].strip().rstrip(";")
    rest = lines[first + 1 :]
    for line in rest:
        where = re.match(r"\s*at (\S.*):$", line)
        if where and not line.strip().startswith("at «"):
            message += f" (at {where.group(1)})"
            break
    drv = re.search(r"builder for '(/[^']+\.drv)'", message)
    log = [line.strip()[1:].strip() for line in rest if line.strip().startswith(">")]
    if drv and not log:
        # Without a terminal, Nix printed the build's log before the error instead.
        log = [line.strip() for line in lines[:first] if line.strip() and not _NIX_STATUS.match(line)]
    if log:
        message += f"; last log line: {log[-1]}"
    if drv:
        message += f"; full log: nix-store -l {drv.group(1)}"
    return message.rstrip(";")


def resolve_file(rest: str) -> Path:
    """The Nix file a ``nix:`` spec names: FILE, or ``DIR/default.nix``."""
    path = Path(os.path.abspath(os.path.expanduser(rest)))
    if path.is_dir():
        path = path / "default.nix"
    if not path.is_file():
        raise PackageSetError(f"{path}: no such Nix file (expected nix:FILE, or nix:DIR with a default.nix)")
    return path


def _mkdirs(path: Path) -> None:
    """`mkdir -p`, giving the folders it creates mode 0755 whatever the umask."""
    missing: list[Path] = []
    p = path
    while not p.exists() and p.parent != p:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            continue
        os.chmod(d, 0o755)


def _walk(root: str, follow: bool) -> Iterator[tuple[str, str]]:
    """``(path relative to root, absolute path)`` of every non-directory below `root`.

    With `follow`, a symlink to a directory is entered, as buildenv merges it.
    """
    seen: set[str] = set()

    def walk(directory: str, rel: str) -> Iterator[tuple[str, str]]:
        real = os.path.realpath(directory)
        if real in seen:  # a symlink loop
            return
        seen.add(real)
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            inner = f"{rel}/{entry.name}" if rel else entry.name
            try:
                is_dir = entry.is_dir(follow_symlinks=follow)
            except OSError:
                is_dir = False
            if is_dir:
                yield from walk(entry.path, inner)
            else:
                yield inner, entry.path
        seen.discard(real)

    if os.path.isdir(root):
        yield from walk(root, "")


class _Info:
    __slots__ = ("name", "version")

    def __init__(self, name: str, version: str) -> None:
        self.name = name
        self.version = version


class NixSet:
    """The derivations of a Nix expression (spec ``nix:FILE``), built by the real Nix."""

    def __init__(
        self,
        file: Path | str,
        spec: str | None = None,
        *,
        prebuilt: dict[str, Any] | None = None,
        state_dir: Path | None = None,
    ) -> None:
        self.file = Path(os.path.abspath(file))
        self.spec = spec if spec is not None else f"nix:{file}"
        self.identity = f"nix:{self.file}"
        #: where GC roots go; set by the profile step, else the default state folder
        self.state_dir = state_dir
        self._prebuilt = prebuilt
        self._listing: dict[str, _Info] | None = None
        self._looked_up: dict[str, _Info | None] = {}
        self._outputs: dict[str, list[Path]] = {}
        self._index: dict[str, str] | None = None
        #: inside a jobset's build: the profiles release.nix built, by "+"-joined package names
        self._profiles: dict[str, Path] = {}
        if prebuilt is not None:
            self._read_prebuilt(prebuilt)

    # -- running Nix ----------------------------------------------------------

    def _nix(
        self, args: list[str], what: str, error: type[PackageSetError | ProfileError] = PackageSetError
    ) -> str:
        try:
            proc = subprocess.run(args, capture_output=True, text=True, errors="replace", check=False)
        except FileNotFoundError:
            raise error(
                f"{self.spec}: {what}: {args[0]} not found on PATH (install Nix, e.g. Debian's nix-bin)"
            ) from None
        except OSError as exc:
            raise error(f"{self.spec}: {what}: cannot run {args[0]}: {exc}") from exc
        if proc.returncode != 0:
            raise error(f"{self.file}: {what}: {nix_error(proc.stderr)}")
        return proc.stdout

    def _request_args(self, request: dict[str, Any]) -> list[str]:
        return ["--argstr", "file", str(self.file), "--argstr", "request", json.dumps(request)]

    # -- the listing ------------------------------------------------------------

    def _read_prebuilt(self, data: dict[str, Any]) -> None:
        try:
            listing = {}
            for name, entry in data["packages"].items():
                listing[name] = _Info(str(entry["name"]), str(entry["version"]))
                self._outputs[name] = [Path(p) for p in entry["outputs"]]
            self._profiles = {str(k): Path(v) for k, v in data["profiles"].items()}
        except (KeyError, TypeError, AttributeError) as exc:
            raise PackageSetError(
                f"{self.spec}: ${PREBUILT_ENV} is not what nixtest jobset writes: {exc}"
            ) from None
        self._listing = listing

    def _list(self) -> dict[str, _Info]:
        if self._listing is None:
            out = self._nix(["nix-env", "-qaP", "--json", "-f", str(self.file)], "listing its packages")
            self._listing = self._parse_listing(out)
        return self._listing

    def _parse_listing(self, out: str) -> dict[str, _Info]:
        try:
            data = json.loads(out or "{}")
        except ValueError as exc:
            raise PackageSetError(f"{self.file}: nix-env -qaP --json gave no JSON: {exc}") from None
        if not isinstance(data, dict):
            raise PackageSetError(f"{self.file}: nix-env -qaP --json gave no mapping")
        return {
            str(attr): _Info(str(info.get("name", "")), str(info.get("version", "")))
            for attr, info in data.items()
            if isinstance(info, dict)
        }

    def _lookup(self, name: str) -> _Info | None:
        """A package the listing does not show: any attribute path that is a derivation."""
        if name in self._looked_up:
            return self._looked_up[name]
        found: _Info | None = None
        if self._prebuilt is None and name and all(attr_path(name)):
            args = ["nix-env", "-qaP", "--json", "-f", str(self.file), "-A", name]
            proc = subprocess.run(args, capture_output=True, text=True, errors="replace", check=False)
            if proc.returncode == 0:
                found = self._parse_listing(proc.stdout).get(name)
            elif not re.search(r"not found|does not evaluate to a derivation", proc.stderr):
                raise PackageSetError(
                    f"{self.file}: package {name!r} does not evaluate: {nix_error(proc.stderr)}"
                )
        self._looked_up[name] = found
        return found

    def _get(self, name: str) -> _Info:
        info = self._list().get(name) or self._lookup(name)
        if info is None:
            raise UnknownPackage(name, self.spec)
        return info

    # -- PackageSet -----------------------------------------------------------------

    def names(self) -> list[str]:
        found = set(self._list()) | {n for n, i in self._looked_up.items() if i is not None}
        return sorted(found)

    def has(self, name: str) -> bool:
        return name in self._list() or self._lookup(name) is not None

    def version(self, name: str) -> str:
        return self._get(name).version

    #: a store path's hash covers everything it was built from: no walk of dependencies needed
    identity_covers_dependencies = True

    def package_identity(self, name: str) -> tuple[str, str]:
        """The package's output store paths, from evaluation alone when the listing has them."""
        self._get(name)
        paths = sorted(path for path, attr in self._out_index().items() if attr == name)
        if not paths:
            paths = sorted(str(p) for p in self.outputs(name))  # a looked-up attribute: built
        text = " ".join(paths)
        return text, text

    def derivation_name(self, name: str) -> str:
        """The derivation's name, e.g. ``hello-2.12``."""
        return self._get(name).name

    def _roots(self) -> Path:
        state = self.state_dir if self.state_dir is not None else default_state_dir()
        digest = hashlib.sha256(str(self.file).encode("utf-8", "surrogateescape")).hexdigest()[:16]
        return Path(os.path.abspath(state)) / "gcroots" / f"{digest}-{store_name(self.file.name)}"

    def outputs(self, name: str) -> list[Path]:
        """The package's installed outputs, built by nix-build (once a run) with a GC root."""
        if name not in self._outputs:
            self._get(name)
            if self._prebuilt is not None:
                raise ProfileError(f"{self.spec}: package {name!r} was not built for this job by release.nix")
            root = self._roots() / store_name(name)
            try:
                _mkdirs(root.parent)
            except OSError as exc:
                raise ProfileError(f"cannot create GC roots in {root.parent}: {exc}") from exc
            args = ["nix-build", "-E", _PACKAGE_EXPR, *self._request_args({"attr": attr_path(name)})]
            out = self._nix([*args, "-o", str(root)], f"building package {name!r}", ProfileError)
            self._outputs[name] = [Path(line) for line in out.splitlines() if line.startswith("/")]
        return self._outputs[name]

    def _out_index(self) -> dict[str, str]:
        """Every known output path -> the first package name giving it."""
        if self._index is None:
            index: dict[str, str] = {}
            if self._prebuilt is None:
                args = ["nix-env", "-qaP", "--json", "--out-path", "-f", str(self.file)]
                data = json.loads(self._nix(args, "listing its output paths") or "{}")
                for attr in sorted(data):
                    for path in (data[attr].get("outputs") or {}).values():
                        if isinstance(path, str):
                            index.setdefault(path, attr)
            self._index = index
        index = dict(self._index)
        for attr in sorted(self._outputs):  # packages built since, listed or looked up
            for path in self._outputs[attr]:
                index.setdefault(str(path), attr)
        return index

    def dependencies(self, name: str) -> list[str]:
        """The set's packages that the package's outputs refer to (nix-store -q --references)."""
        outputs = [str(p) for p in self.outputs(name)]
        if not outputs:
            return []
        try:
            refs = self._nix(
                ["nix-store", "-q", "--references", *outputs], f"querying the references of {name!r}"
            )
        except PackageSetError:
            if self._prebuilt is not None:
                return []  # inside a build the store may not be ours to query
            raise
        index = self._out_index()
        found = {index[r] for r in refs.split() if r in index}
        found.discard(name)
        return sorted(found)

    def files(self, name: str) -> list[Path]:
        result = []
        for output in self.outputs(name):
            if os.path.isdir(output):
                result += [Path(p) for _, p in _walk(str(output), follow=False)]
            elif os.path.lexists(output):
                result.append(output)
        return result

    def profile_entries(self, name: str) -> Iterator[tuple[PurePosixPath, Path]]:
        for output in self.outputs(name):
            for rel, path in _walk(str(output), follow=False):
                yield PurePosixPath(rel), Path(path)

    # -- profiles -----------------------------------------------------------------

    def build_profile(self, packages: Sequence[str], state_dir: Path) -> Profile:
        """The Nix profile of `packages`: a store path, rooted by ``state_dir/profiles/<its name>``.

        Nix replaces what nixtest does for other sets: the store path's hash
        addresses its content, Nix builds it completely or not at all, and its
        ``manifest.nix`` (``nix-env -p P -q``) says what it holds.
        """
        names = sorted(set(packages))
        self.state_dir = Path(os.path.abspath(state_dir))
        if self._prebuilt is not None:
            key = "+".join(names)
            path = self._profiles.get(key)
            if path is None:
                raise ProfileError(
                    f"{self.spec}: the profile {key!r} was not built for this job: run nixtest jobset again"
                )
        else:
            for name in names:
                self.outputs(name)  # each package built and rooted on its own
            request = {"name": profile_label(names), "packages": [attr_path(n) for n in names]}
            args = ["nix-instantiate", "-E", _PROFILE_EXPR, *self._request_args(request)]
            what = f"the profile of {'+'.join(names)}"
            drv = self._nix(args, what, ProfileError).split()[-1]
            out = self._nix(["nix-store", "-q", "--outputs", drv], what, ProfileError).split()[0]
            root = self.state_dir / "profiles" / os.path.basename(out)
            try:
                _mkdirs(root.parent)
            except OSError as exc:
                raise ProfileError(f"cannot create a profile in {root.parent}: {exc}") from exc
            self._nix(["nix-store", "-r", drv, "--add-root", str(root)], what, ProfileError)
            path = Path(out)
        return Profile(path, tuple(names), tuple(self._collisions(names, path)))

    def _collisions(self, names: list[str], profile: Path) -> list[str]:
        """A line for each file two packages give the profile, naming the one it kept."""
        if len(names) < 2:
            return []
        given: dict[str, list[tuple[str, str]]] = {}
        for name in names:
            for output in self._outputs.get(name, []):
                for rel, path in _walk(str(output), follow=True):
                    given.setdefault(rel, []).append((name, os.path.realpath(path)))
        lines = []
        for rel, providers in sorted(given.items()):
            if len({real for _, real in providers}) < 2:
                continue
            kept = os.path.realpath(profile / rel)
            owner = next((n for n, real in providers if real == kept), providers[0][0])
            for other in dict.fromkeys(n for n, real in providers if real != kept and n != owner):
                lines.append(f"{rel}: provided by {owner} and {other}; kept {owner}'s ({kept})")
        return lines


def load_nix_set(spec: str, rest: str) -> NixSet:
    """The factory behind ``--set nix:FILE`` (see `nixtest.packagesets.SCHEMES`)."""
    if not rest:
        raise PackageSetError(f"package set {spec!r}: expected nix:FILE, a Nix expression")
    raw = os.environ.get(PREBUILT_ENV)
    if raw:
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise PackageSetError(f"{spec}: ${PREBUILT_ENV} is not JSON: {exc}") from None
        if isinstance(data, dict) and data.get("set") == spec:
            return NixSet(rest, spec, prebuilt=data)
    return NixSet(resolve_file(rest), spec)
