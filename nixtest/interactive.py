"""What the commands `list`, `show`, `debug`, `shell` and `rerun` do, apart from click.

`debug` and `shell` prepare one test as a run would (its profiles and its
wrapper) and then replace nixtest with the wrapper, in the foreground.  `rerun`
finds what to run again in the per-`--out` run state that `nixtest run` keeps:
pytest's own cache (its last-failed list) and the options of the run.
"""

from __future__ import annotations

import hashlib
import json
import os
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nixtest.definitions import DEFINITIONS_FILE, BadTest, Definition, TestDef, display_path
from nixtest.errors import NixtestError, UsageError
from nixtest.sources import load_folder
from nixtest.sources.autopkgtest import is_suite
from nixtest.wrappers import seconds

# --------------------------------------------------------------------------- finding a test


def split_test_name(item: str) -> tuple[str, str]:
    """`PKG::TEST` as (package, test); a usage error for anything else."""
    package, sep, test = item.partition("::")
    if not package or not sep or not test or "/" in package:
        raise UsageError(f"not a PKG::TEST name: {item!r}")
    return package, test


def find_definition(tests_dir: Path, item: str) -> Definition:
    """The definition of `PKG::TEST` under `tests_dir` (valid or not); a usage error if there is none."""
    package, test = split_test_name(item)
    folder = tests_dir / package
    if not (folder / DEFINITIONS_FILE).is_file():
        from nixtest.sources import find_folders

        folder = find_folders(tests_dir).get(package, folder)
    if not (folder / DEFINITIONS_FILE).is_file() and not is_suite(folder):
        raise UsageError(f"no tests for package {package!r}: {folder / DEFINITIONS_FILE} does not exist")
    definitions = load_folder(folder)
    for definition in definitions:
        if definition.name == test:
            return definition
    whole = [d for d in definitions if isinstance(d, BadTest) and d.name == DEFINITIONS_FILE]
    if whole:
        raise UsageError(whole[0].error.message)
    names = ", ".join(d.name for d in definitions)
    raise UsageError(f"package {package!r} has no test {test!r}; its tests: {names}")


def wrapper_timeout(test: TestDef, override: float | None) -> float:
    """The timeout a run would give the test: its own, else `--timeout`, else the default."""
    if test.timeout_set or override is None:
        return test.timeout
    return override


# --------------------------------------------------------------------------- show


def show_lines(prepared: Any, environ: dict[str, str] | None = None) -> list[str]:
    """`nixtest show`: the resolved definition, profile, environment, working directory, wrapper.

    A secret is shown by its name and whether it is set, never by its value.
    """
    environ = dict(os.environ if environ is None else environ)
    test: TestDef = prepared.test
    plan = prepared.plan
    lines = [test.nodeid, "  definition:"]

    def row(label: str, value: object, indent: str = "    ") -> None:
        lines.append(f"{indent}{label + ':':<12} {value}")

    row("file", display_path(test.file))
    row("kind", {"classic": "classic nixtest script", "pytest": "pytest module"}.get(test.kind, test.kind))
    if test.script is not None:
        row("script", display_path(test.script))
    if test.run is not None:
        row("run", test.run)
        expect = test.expect
        row("expect", f"exit {expect.exit}")
        for stream in ("stdout", "stderr"):
            for pattern in getattr(expect, stream):
                row("", f"{stream} matches {pattern!r}")
    if test.imports:
        row("imports", " ".join(test.imports))
    # an autopkgtest's stanza: Depends as written and resolved, Restrictions...
    for name, value in getattr(prepared, "properties", {}).items():
        row(name, value)
    row("timeout", f"{seconds(test.timeout)} s" + (" (its own)" if test.timeout_set else " (the default)"))
    lines.append("  profile:")
    if test.autopkgtest is not None:
        row("packages", "the Depends closure and the essential packages (see `profile packages`)")
    else:
        row("packages", " ".join(test.profile))
    row("path", plan.profile)
    for warning in prepared.warnings:
        row("warning", warning)
    lines.append("  environment (cleared, then):")
    lines.append("    HOME=<working directory>")
    lines.append("    TMPDIR=<working directory>/.tmp")
    for key, value in plan.environment().items():
        lines.append(f"    {key}={value}")
    for secret in test.secrets:
        state = "set in your environment" if secret in environ else "NOT set in your environment"
        lines.append(f"    {secret}  (a secret: its value is read when the test runs; now {state})")
    lines.append("  working directory (fresh for every run):")
    if test.skel is not None:
        row("skel", f"{display_path(test.skel)}/ copied to be the working directory")
    for dest, src in test.sources.items():
        row("source", f"{dest} <- {display_path(src)} (copied, writable)")
    row("symlink", f"profile -> {plan.profile}")
    for link in test.symlinks:
        target = plan.links.get(link.name)
        what = f" (a profile of {' '.join(link.packages)})" if link.packages else ""
        row("symlink", f"{link.name} -> {target}{what}")
    lines.append("  wrapper:")
    row("path", prepared.wrapper)
    lines.append(f"    to reproduce: {prepared.wrapper}")
    if test.kind in ("classic", "pytest"):
        lines.append(f"        to debug: {prepared.wrapper} --ipdb")
    lines.append(f"      a shell in: {prepared.wrapper} --shell")
    return lines


# --------------------------------------------------------------------------- list


@dataclass
class Listing:
    """`nixtest list`: packages with tests, and packages of the set without any."""

    tested: dict[str, list[Definition]] = field(default_factory=dict)
    #: packages with tests that the set does not have (empty when the set was not read)
    not_in_set: set[str] = field(default_factory=set)
    untested: list[str] = field(default_factory=list)
    set_size: int | None = None
    set_error: str = ""


def make_listing(
    tests_dir: Path, packages: Iterable[str], names: Sequence[str] | None, set_error: str = ""
) -> Listing:
    """`names` is the set's `names()` (one call), or None when the set could not be read."""
    from nixtest.sources import find_folders

    folders = find_folders(tests_dir)
    wanted = list(dict.fromkeys(packages))
    in_set = set(names) if names is not None else None
    if wanted:
        unknown = [p for p in wanted if p not in folders and (in_set is None or p not in in_set)]
        if unknown:
            where = "" if in_set is None else " and not in the package set"
            raise UsageError(f"no tests for package(s){where}: {', '.join(unknown)}")
        selected = [p for p in wanted if p in folders]
    else:
        selected = list(folders)
    listing = Listing(set_error=set_error)
    for package in sorted(selected):
        listing.tested[package] = load_folder(folders[package])
    if names is not None and in_set is not None:
        listing.set_size = len(in_set)
        # an autopkgtest suite is named by its source package, which no set lists
        listing.not_in_set = {
            p for p in listing.tested if p not in in_set and (folders[p] / DEFINITIONS_FILE).is_file()
        }
        pool = wanted if wanted else names
        listing.untested = sorted({p for p in pool if p not in folders})
    return listing


def _describe(definition: Definition) -> str:
    if isinstance(definition, BadTest):
        return f"error: {definition.error.message}"
    if definition.script is not None:
        kind = "pytest module" if definition.kind == "pytest" else "classic script"
        return f"{kind} {definition.script.name}"
    if definition.run is not None:
        return f"run: {definition.run}"
    if definition.autopkgtest is not None:
        spec = definition.autopkgtest
        what = f"Test-Command: {spec.command}" if spec.command is not None else f"Tests: {spec.path}"
        return f"autopkgtest {what}"
    return f"imports: {' '.join(definition.imports)}"


def listing_lines(listing: Listing, set_spec: str, width: int = 100) -> list[str]:
    lines: list[str] = []
    n_tests = 0
    for package, definitions in listing.tested.items():
        note = "  (not in the package set)" if package in listing.not_in_set else ""
        count = len(definitions)
        lines.append(f"{package}  ({count} test{'s' if count != 1 else ''}){note}")
        name_width = max((len(d.name) for d in definitions), default=0)
        for definition in definitions:
            lines.append(f"  {definition.nodeid:<{len(package) + 2 + name_width}}  {_describe(definition)}")
        n_tests += count
    summary = f"{n_tests} test{'s' if n_tests != 1 else ''} in {len(listing.tested)} package(s)"
    if listing.set_size is None:
        if listing.set_error:
            lines.append(
                f"untested packages: unknown: the package set could not be read: {listing.set_error}"
            )
    else:
        header = (
            f"packages without tests: {len(listing.untested)} of {listing.set_size} "
            f"in the package set {set_spec}"
        )
        lines.append(header + (":" if listing.untested else ""))
        if listing.untested:
            lines += textwrap.wrap(
                " ".join(listing.untested),
                width=width,
                initial_indent="  ",
                subsequent_indent="  ",
                break_on_hyphens=False,
                break_long_words=False,
            )
        summary += f"; {len(listing.untested)} untested package(s) of {listing.set_size} in the set"
    lines.append(summary)
    return lines


# --------------------------------------------------------------------------- the run state, for rerun

RUN_FILE = "run.json"


def runs_dir(state: Path, out: Path) -> Path:
    """The run state of one output folder: `<state>/runs/<hash of the absolute OUT>`."""
    key = hashlib.sha256(os.path.abspath(out).encode("utf-8", "surrogateescape")).hexdigest()[:20]
    return Path(os.path.abspath(state)) / "runs" / key


def cache_dir(state: Path, out: Path) -> Path:
    """pytest's cache for runs into `out` (its last-failed list is what `rerun` runs)."""
    return runs_dir(state, out) / "pytest-cache"


@dataclass
class RunOptions:
    """The options of a `nixtest run`, as `rerun` repeats them."""

    out: str
    cwd: str
    selection: list[str]
    extra: list[str]
    set_spec: str
    tests_dir: str
    jobs: str = "1"
    keyword: str | None = None
    timeout: float | None = None
    verbose: int = 0


def save_run(state: Path, options: RunOptions) -> None:
    folder = runs_dir(state, Path(options.out))
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{RUN_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps(asdict(options), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, folder / RUN_FILE)


def load_run(state: Path, out: Path) -> RunOptions:
    path = runs_dir(state, out) / RUN_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return RunOptions(**data)
    except FileNotFoundError:
        raise UsageError(
            f"no run into {os.path.abspath(out)} is known (state folder {state}): nothing to rerun"
        ) from None
    except (OSError, ValueError, TypeError) as exc:
        raise NixtestError(f"{path}: cannot read the last run's options: {exc}") from exc


def last_failed(state: Path, out: Path) -> list[str]:
    """The pytest node ids that failed in the last run into `out`, from pytest's cache."""
    path = cache_dir(state, out) / "v" / "cache" / "lastfailed"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise NixtestError(f"{path}: cannot read pytest's last-failed list: {exc}") from exc
    return sorted(str(k) for k, v in data.items() if v) if isinstance(data, dict) else []


def test_names(nodeids: Iterable[str]) -> list[str]:
    """pytest node ids (`package_tests/hello::greet`) as nixtest names (`hello::greet`)."""
    names = []
    for nodeid in nodeids:
        path, sep, name = nodeid.partition("::")
        names.append(f"{os.path.basename(path.rstrip('/'))}{sep}{name}")
    return names
