"""`nixtest jobset`: a release.nix with one Hydra job per package test.

The job ``<package>.<test>`` is a derivation whose build runs
``nixtest run PKG::TEST --set nix:FILE --tests DIR --out $out``, so that ``$out``
is a Hydra-ready OUT folder (junit.xml, log.xml, log.html, nix-support/,
rerun/<package>/<test>).  The build succeeds whenever nixtest could run the
test; a failed test leaves ``nix-support/failed``, which Hydra shows as
"failed with output".

A package name that is an attribute path (``tools.sed``) keeps its path: the
job is ``tools.sed.<test>`` (see `job_paths`), as Hydra and ``nix-env -qaP``
show it and ``nix-build release.nix -A tools.sed.substitute`` builds it.

Nothing inside a job's build calls Nix: the job's inputs are the packages and
the profiles its test needs, built by Nix from the same expressions
``nixtest run`` uses (`nixtest.nix.NIX_LIB`), and handed to nixtest in
``$NIXTEST_NIX_PREBUILT``.  The wrapper ``$out/rerun/<package>/<test>``
names those store paths, so Nix keeps them as long as the job's output.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nixtest import __version__
from nixtest.definitions import DEFAULT_TIMEOUT, TestDef, find_packages, load_package
from nixtest.errors import UsageError
from nixtest.nix import (
    NIX_LIB,
    PREBUILT_ENV,
    NixSet,
    attr_path,
    nix_string,
    profile_label,
    resolve_file,
    store_name,
)

__all__ = ["Job", "default_nixtest", "find_jobs", "nix_attr", "nix_path", "render_jobset", "jobset_for"]

#: seconds a Hydra job may take beyond its test's own timeout (setting up, reports)
TIMEOUT_SLACK = 300

_NIX_KEYWORDS = {"if", "then", "else", "assert", "with", "let", "in", "rec", "inherit", "or"}
_BARE_ATTR = re.compile(r"^[A-Za-z_][A-Za-z0-9_'-]*$")
_PATH_CHARS = re.compile(r"^[A-Za-z0-9._+/-]+$")


@dataclass
class Job:
    """One package test, as a job: what it runs and which packages and profiles it needs."""

    package: str
    test: str
    #: the argument of `nixtest run`
    selection: str
    #: every package the test names (its own first), each a profile of its own or of several
    packages: list[str] = field(default_factory=list)
    #: each profile the test needs: sorted, distinct package names
    profiles: list[tuple[str, ...]] = field(default_factory=list)
    timeout: float = DEFAULT_TIMEOUT


def nix_attr(name: str) -> str:
    """An attribute name as written in Nix: bare when it can be, else quoted."""
    if _BARE_ATTR.match(name) and name not in _NIX_KEYWORDS:
        return name
    return nix_string(name)


def nix_path(path: Path, base: Path | None = None) -> str:
    """A Nix path literal for `path`: relative to `base` (the release.nix's folder) when given."""
    absolute = os.path.abspath(path)
    if base is not None:
        rel = os.path.relpath(absolute, os.path.abspath(base))
        text = rel if rel == ".." or rel.startswith("../") else "./" + rel
        if _PATH_CHARS.match(text) and not text.endswith("/"):
            return text
        return f"./. + {nix_string('/' + rel)}"
    if _PATH_CHARS.match(absolute) and absolute != "/":
        return absolute
    return f"/. + {nix_string(absolute)}"


def default_nixtest() -> str:
    """The nixtest command next to this interpreter (a venv's bin/), else the one on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "nixtest")
    if os.access(beside, os.X_OK):
        return beside
    return shutil.which("nixtest") or "nixtest"


def find_jobs(tests_dir: Path, packages: Sequence[str] = ()) -> list[Job]:
    """The jobs of every test of `packages` (all when none) in `tests_dir`."""
    if not tests_dir.is_dir():
        raise UsageError(f"no test definitions: {tests_dir} is not a folder (see --tests)")
    folders = find_packages(tests_dir)
    if packages:
        missing = sorted(set(packages) - {f.name for f in folders})
        if missing:
            raise UsageError(f"no tests for package(s): {', '.join(missing)} in {tests_dir}")
        folders = [f for f in folders if f.name in set(packages)]
    jobs = []
    for folder in folders:
        for definition in load_package(folder):
            job = Job(definition.package, definition.name, f"{definition.package}::{definition.name}")
            job.packages = [definition.package]
            if isinstance(definition, TestDef):
                wanted = [definition.profile] + [s.packages for s in definition.symlinks if s.packages]
                for names in wanted:
                    profile = tuple(sorted(set(names)))
                    if profile not in job.profiles:
                        job.profiles.append(profile)
                    job.packages += [n for n in profile if n not in job.packages]
                job.timeout = definition.timeout
            jobs.append(job)
    return jobs


_BUILDER = r"""
export PATH=/usr/bin:/bin HOME="$TMPDIR" NIXTEST_STATE="$TMPDIR/nixtest-state"
"$nixtestCommand" run "$nixtestSelection" --set "$nixtestSet" --tests "$nixtestTests" --out "$out"
status=$?
if [ "$status" -gt 1 ]; then
  echo "release.nix: nixtest exited with status $status: it could not run $nixtestSelection" >&2
  exit "$status"
fi
if [ ! -e "$out/nix-support/hydra-build-products" ]; then
  echo "release.nix: nixtest wrote no reports into $out" >&2
  exit 1
fi
"""


def _indent(text: str, spaces: int) -> str:
    pad = " " * spaces
    return "\n".join(pad + line if line.strip() else "" for line in text.strip("\n").splitlines())


def _nix_list(items: Sequence[str]) -> str:
    return "[ " + " ".join(nix_string(i) for i in items) + " ]" if items else "[ ]"


def _render_job(name: str, job: Job) -> str:
    packages = " ".join(f"{nix_attr(p)} = {_nix_list(attr_path(p))};" for p in job.packages)
    profiles = " ".join(
        f"{{ label = {nix_string(profile_label(p))}; packages = {_nix_list(p)}; }}" for p in job.profiles
    )
    timeout = int(math.ceil(job.timeout)) + TIMEOUT_SLACK
    return (
        f"{nix_attr(name)} = job {{\n"
        f"  name = {nix_string(store_name('nixtest-' + job.package + '-' + job.test))};\n"
        f"  selection = {nix_string(job.selection)};\n"
        f"  packages = {{ {packages} }};\n"
        f"  profiles = [ {profiles} ];\n"
        f"  timeout = {timeout};\n"
        f"}};"
    )


def job_paths(jobs: Sequence[Job]) -> list[tuple[str, ...]]:
    """Each job's attribute path in the jobset: the package's attribute path, then the test.

    ``tools.sed`` + ``substitute`` -> ``("tools", "sed", "substitute")``, so that
    ``nix-build -A tools.sed.substitute``, ``nix-env -qaP`` and Hydra all see the
    job as ``tools.sed.substitute``.  Where that would make one job's path the
    prefix of another's (a package ``tools`` with a test ``sed``, and a package
    ``tools.sed``), or the name is no attribute path (``a..b``), the package is
    one quoted attribute instead: ``"tools.sed".substitute``.
    """
    nested = {job.package: tuple(attr_path(job.package)) for job in jobs}
    for package, path in list(nested.items()):
        if not all(path):
            nested[package] = (package,)
    paths = [(*nested[j.package], j.test) for j in jobs]
    taken = set(paths)
    clashing = {
        job.package for job, path in zip(jobs, paths) if any(path[:i] in taken for i in range(1, len(path)))
    }
    return [(j.package, j.test) if j.package in clashing else p for j, p in zip(jobs, paths)]


def _render_tree(tree: dict[str, object]) -> str:
    parts = []
    for name, node in tree.items():
        if isinstance(node, Job):
            parts.append(_render_job(name, node))
        else:
            assert isinstance(node, dict)
            inner = _indent(_render_tree(node), 2)
            parts.append(f"{nix_attr(name)} = {{\n  recurseForDerivations = true;\n{inner}\n}};")
    return "\n".join(parts)


def render_jobset(
    jobs: Sequence[Job],
    set_file: Path,
    tests_dir: Path,
    nixtest: str,
    base: Path | None = None,
    command: str = "nixtest jobset",
) -> str:
    """The release.nix text.  With `base`, its default paths are relative to that folder."""
    tree: dict[str, object] = {}
    paths = job_paths(jobs)
    for job, path in zip(jobs, paths):
        node = tree
        for name in path[:-1]:
            child = node.setdefault(name, {})
            assert isinstance(child, dict)
            node = child
        node[path[-1]] = job
    body = _render_tree(tree)
    example_attr = ".".join(nix_attr(n) for n in paths[0]) if paths else "PKG.TEST"
    lib = _indent(NIX_LIB, 4)
    return f"""\
# A Hydra jobset, written by `{command}` (nixtest {__version__}).
#
# One job per package test, attribute <package>.<test>: the package's attribute
# path, then the test (tools.sed.substitute for the test substitute of tools.sed).
# A job's output is nixtest's OUT folder: junit.xml, log.xml, log.html,
# nix-support/hydra-build-products, rerun/<package>/<test>, and
# nix-support/failed when the test failed.  The build itself succeeds
# whenever nixtest could run the test, as Hydra expects ("failed with output").
#
#   nix-build release.nix -A {example_attr}
#   nix-build release.nix --arg nixtest 'import ./nixtest.nix'   # nixtest as a derivation
#
# The builds use the machine's /bin/sh and the nixtest command named below,
# so they need `sandbox = false`.
{{ nixtest ? {nix_string(nixtest)}  # the nixtest command, or a derivation with bin/nixtest
, packageSet ? {nix_path(set_file, base)}  # FILE of --set nix:FILE
, tests ? {nix_path(tests_dir, base)}  # the test definitions (--tests)
, system ? builtins.currentSystem
}}:

let
  value = import packageSet;
  pkgs = if builtins.isFunction value then value {{ }} else value;
  lib = (
{lib}
  ) pkgs;

  nixtestCommand = if builtins.isAttrs nixtest then "${{nixtest}}/bin/nixtest" else toString nixtest;
  nixtestSet = "nix:" + toString packageSet;
  # The test definitions, in the store (the wrappers name them), without Python's caches.
  nixtestTests =
    if !builtins.isPath tests then tests
    else builtins.path {{
      name = "nixtest-package-tests";
      path = tests;
      filter = path: type:
        let base = baseNameOf path; in
        !(builtins.elem base [ "__pycache__" ".pytest_cache" ]) && builtins.match ".*[.]py[co]" base == null;
    }};

  # One job: nixtest runs `selection`; Nix has built the packages and profiles it needs.
  job = {{ name, selection, packages, profiles, timeout }}:
    let
      present =
        builtins.filter (p: lib.isPackage (builtins.getAttr p packages)) (builtins.attrNames packages);
      info = p:
        let drv = lib.get (builtins.getAttr p packages); in {{
          inherit (drv) name;
          version = (builtins.parseDrvName drv.name).version;
          outputs = map toString (lib.installed drv);
        }};
      # A profile naming a package the set lacks is left out: nixtest reports the error.
      buildable = builtins.filter (p: builtins.all (n: builtins.elem n present) p.packages) profiles;
      prebuilt = {{
        set = nixtestSet;
        packages = builtins.listToAttrs (map (p: {{ name = p; value = info p; }}) present);
        profiles = builtins.listToAttrs (map (p: {{
          name = builtins.concatStringsSep "+" p.packages;
          value = toString (lib.profile p.label (map (n: builtins.getAttr n packages) p.packages));
        }}) buildable);
      }};
    in
    derivation {{
      inherit name system nixtestCommand nixtestSet nixtestTests;
      nixtestSelection = selection;
      {PREBUILT_ENV} = builtins.toJSON prebuilt;
      builder = "/bin/sh";
      args = [ "-c" ''
{_indent(_BUILDER, 8)}
      '' ];
    }} // {{
      meta = {{
        description = "nixtest ${{selection}}";
        inherit timeout;
      }};
    }};
in
{{
{_indent(body, 2)}
}}
"""


def jobset_for(
    set_spec: str,
    tests_dir: Path,
    packages: Sequence[str] = (),
    nixtest: str | None = None,
    output: Path | None = None,
    warn: list[str] | None = None,
) -> str:
    """The release.nix for ``--set nix:FILE`` and ``--tests DIR``; `warn` collects warnings.

    The set is evaluated once (a bad FILE is an error naming it); a tested
    package the set does not have is a warning: its jobs report the error.
    """
    scheme, _, rest = set_spec.partition(":")
    if scheme != "nix" or not rest:
        raise UsageError(f"nixtest jobset needs --set nix:FILE (a Nix package set), not {set_spec!r}")
    set_file = resolve_file(rest)
    jobs = find_jobs(tests_dir, packages)
    pset = NixSet(set_file, set_spec)
    pset.names()  # evaluates FILE: PackageSetError if it does not
    for package in dict.fromkeys(p for j in jobs for p in j.packages):
        if not pset.has(package) and warn is not None:
            warn.append(f"package {package!r} is not in {set_spec}: its jobs will report an error")
    base = output.parent if output is not None else None
    shown = "nixtest jobset" + "".join(f" {p}" for p in packages)
    return render_jobset(jobs, set_file, tests_dir, nixtest or default_nixtest(), base=base, command=shown)
