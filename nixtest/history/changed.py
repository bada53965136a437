"""`nixtest list --changed`: which tests a run would run, and why, without running anything.

No profile is built and no wrapper written: only the input keys are computed
and looked up, as `nixtest.runner.execute` would.
"""

from __future__ import annotations

from pathlib import Path

from nixtest.definitions import BadTest, find_packages, load_package
from nixtest.errors import NixtestError, UsageError
from nixtest.history import database_path
from nixtest.history.cache import HistoryCache
from nixtest.history.store import HistoryStore
from nixtest.packagesets import load_set
from nixtest.run.inputs import inputs_of


def changed_lines(
    tests_dir: Path, packages: tuple[str, ...], set_spec: str, state: Path, timeout: float | None
) -> list[str]:
    if not tests_dir.is_dir():
        raise UsageError(f"no test definitions: {tests_dir} is not a folder (see --tests)")
    folders = find_packages(tests_dir)
    if packages:
        wanted = set(packages)
        unknown = sorted(wanted - {f.name for f in folders})
        if unknown:
            raise UsageError(f"no tests for package(s): {', '.join(unknown)}")
        folders = [f for f in folders if f.name in wanted]
    pset = load_set(set_spec)
    path = database_path(state)
    cache = HistoryCache(HistoryStore(path), set_spec) if path.exists() else None
    lines: list[str] = []
    total = 0
    for folder in folders:
        for definition in load_package(folder):
            total += 1
            if isinstance(definition, BadTest):
                lines.append(f"{definition.nodeid}: cannot be read: {definition.error.message}")
                continue
            try:
                inputs = inputs_of(definition, pset, timeout)
            except NixtestError as exc:
                lines.append(f"{definition.nodeid}: cannot be prepared: {exc.message}")
                continue
            except OSError as exc:
                lines.append(f"{definition.nodeid}: cannot be prepared: {exc}")
                continue
            if cache is None:
                lines.append(f"{definition.nodeid}: no result yet")
                continue
            answer = cache.lookup(definition, inputs)
            if answer.result is None:
                lines.append(f"{definition.nodeid}: {answer.reason}")
    lines.append(f"{len(lines)} of {total} tests would run; {total - len(lines)} would come from the cache")
    return lines
