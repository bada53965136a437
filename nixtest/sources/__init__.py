"""Where test definitions come from: `tests.yaml` folders and Debian autopkgtest suites.

`find_folders` names every folder under ``--tests`` by its package: a
`tests.yaml` folder by its own name, an autopkgtest suite by its source
package (``Source:`` of ``debian/control``).  `load_folder` reads either kind.
"""

from __future__ import annotations

from pathlib import Path

from nixtest.definitions import DEFINITIONS_FILE, Definition, load_package
from nixtest.sources.autopkgtest import is_suite, load_suite, source_name


def find_folders(tests_dir: Path) -> dict[str, Path]:
    """package name -> its folder, for both kinds; a tests.yaml folder wins a shared name."""
    if not tests_dir.is_dir():
        return {}
    found: dict[str, Path] = {}
    suites: dict[str, Path] = {}
    for folder in sorted(tests_dir.iterdir(), key=lambda p: p.name):
        if (folder / DEFINITIONS_FILE).is_file():
            found[folder.name] = folder
        elif folder.is_dir() and is_suite(folder):
            suites.setdefault(source_name(folder), folder)
    for name, folder in suites.items():
        found.setdefault(name, folder)
    return dict(sorted(found.items()))


def load_folder(folder: Path) -> list[Definition]:
    """The tests of a tests.yaml folder or of an autopkgtest suite."""
    if (folder / DEFINITIONS_FILE).is_file():
        return load_package(folder)
    return load_suite(folder)
