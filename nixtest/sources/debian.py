"""`nixtest sources`: Debian source packages of the host set, fetched for their autopkgtest suites.

Each named source (with no names: every installed source package whose
``Testsuite:`` names ``autopkgtest``) is fetched with ``apt-get source
--download-only`` and unpacked with ``dpkg-source -x``, at the installed
version when the archive still has it.

apt runs with a private configuration: its own lists folder and cache, and
the machine's source lists — or, when they have no ``deb-src`` entry, a copy of
them with ``Types: deb`` made ``deb-src``.  Nothing under /etc/apt or
/var/lib/apt is written, so a normal user can run it.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from debian.deb822 import Deb822
from debian.debian_support import version_compare

from nixtest.errors import NixtestError

ETC_APT = Path("/etc/apt")


class SourcesError(NixtestError):
    """Sources that cannot be fetched at all (no apt, no archive in the machine's lists)."""


@dataclass
class Fetched:
    """What became of each source."""

    fetched: dict[str, Path] = field(default_factory=dict)
    #: source -> one line saying why it was not fetched
    failed: dict[str, str] = field(default_factory=dict)


def _machine_lists(etc: Path) -> tuple[list[Path], list[Path]]:
    """(one-line .list files, deb822 .sources files) of the machine, in apt's order."""
    one_line = [etc / "sources.list"] if (etc / "sources.list").is_file() else []
    parts = etc / "sources.list.d"
    found = sorted(parts.iterdir()) if parts.is_dir() else []
    one_line += [p for p in found if p.suffix == ".list" and p.is_file()]
    deb822 = [p for p in found if p.suffix == ".sources" and p.is_file()]
    return one_line, deb822


def _enabled(paragraph: Deb822) -> bool:
    return paragraph.get("Enabled", "yes").strip().lower() not in ("no", "false", "0")


def derive_deb_src(etc: Path = ETC_APT) -> tuple[str, str, bool]:
    """(one-line list text, deb822 text, whether the machine had deb-src entries of its own).

    With deb-src entries, the machine's lists are used as they are; without,
    every `deb` entry is copied as `deb-src`.
    """
    one_line, deb822 = _machine_lists(etc)
    lines: list[str] = []
    paragraphs: list[Deb822] = []
    for path in one_line:
        for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
            line = raw.split("#", 1)[0].strip()
            if line.startswith(("deb ", "deb-src ", "deb\t", "deb-src\t")):
                lines.append(line)
    for path in deb822:
        with open(path, encoding="utf-8", errors="replace") as f:
            for paragraph in Deb822.iter_paragraphs(f, use_apt_pkg=False):
                if _enabled(paragraph) and "Types" in paragraph:
                    paragraphs.append(paragraph)
    has_src = any(line.split()[0] == "deb-src" for line in lines) or any(
        "deb-src" in p["Types"].split() for p in paragraphs
    )
    if not has_src:
        lines = ["deb-src" + line[3:] for line in lines if line.split()[0] == "deb"]
        derived = []
        for paragraph in paragraphs:
            if "deb" in paragraph["Types"].split():
                copy = Deb822(paragraph)
                copy["Types"] = "deb-src"
                derived.append(copy)
        paragraphs = derived
    text822 = "\n".join(p.dump().rstrip("\n") + "\n" for p in paragraphs)
    return "".join(line + "\n" for line in lines), text822, has_src


class PrivateApt:
    """apt-get and apt-cache with their own state folder and source lists."""

    def __init__(self, root: Path, etc: Path = ETC_APT) -> None:
        self.root = root
        self.etc = etc
        self.lists = root / "lists"
        self.cache = root / "cache"
        self.downloads = root / "downloads"
        for folder in (self.lists / "partial", self.cache / "archives" / "partial", self.downloads):
            folder.mkdir(parents=True, exist_ok=True)
        one_line, text822, self.machine_has_src = derive_deb_src(etc)
        if not one_line and not text822:
            raise SourcesError(f"no apt sources in {etc}: nothing to fetch source packages from")
        (root / "sources.list").write_text(one_line, encoding="utf-8")
        parts = root / "sources.list.d"
        parts.mkdir(exist_ok=True)
        (parts / "nixtest.sources").write_text(text822, encoding="utf-8")

    def options(self) -> list[str]:
        options = {
            "Dir::Etc::sourcelist": str(self.root / "sources.list"),
            "Dir::Etc::sourceparts": str(self.root / "sources.list.d"),
            "Dir::State::Lists": str(self.lists),
            "Dir::Cache": str(self.cache),
            # the lock files are in our own folders; nobody else uses them
            "Debug::NoLocking": "1",
        }
        if os.geteuid() == 0:
            # _apt cannot write into our folders; downloading as root is what apt falls back to
            options["APT::Sandbox::User"] = "root"
        return [arg for key, value in options.items() for arg in ("-o", f"{key}={value}")]

    def run(self, tool: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                [tool, *self.options(), *args],
                capture_output=True,
                text=True,
                errors="replace",
                cwd=cwd,
                env={**os.environ, "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"},
                check=False,
            )
        except OSError as exc:
            raise SourcesError(f"cannot run {tool}: {exc.strerror or exc}") from exc

    def update(self) -> None:
        done = self.run("apt-get", "-q", "update")
        if done.returncode != 0:
            raise SourcesError(f"apt-get update failed: {_last_error(done.stderr + done.stdout)}")

    def showsrc(self, names: Iterable[str]) -> dict[str, list[Deb822]]:
        """source name -> its stanzas in the Sources indexes (every version the archive has)."""
        wanted = sorted(set(names))
        found: dict[str, list[Deb822]] = {}
        if not wanted:
            return found
        done = self.run("apt-cache", "showsrc", "--only-source", *wanted)
        for paragraph in Deb822.iter_paragraphs(done.stdout.splitlines(True), use_apt_pkg=False):
            name = paragraph.get("Package", "").strip()
            if name:
                found.setdefault(name, []).append(paragraph)
        return found


def _last_error(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # apt's "E: Failed to fetch URL  404  Not Found" says most; its "Err:" lines name only the file
    errors = [line for line in lines if line.startswith("E:")] or [line for line in lines if "Err:" in line]
    line = (errors or lines or ["no output"])[0]
    line = re.sub(r"\s*\[IP: [^]]*\]", "", line)
    return re.sub(r"\s+", " ", line)[:300]


def installed_sources(dpkg_query: str = "dpkg-query") -> dict[str, str]:
    """source package -> installed source version, from dpkg's database."""
    done = subprocess.run(
        [dpkg_query, "-W", "-f", "${source:Package}\\t${source:Version}\\t${db:Status-Abbrev}\\n"],
        capture_output=True,
        text=True,
        errors="replace",
        env={**os.environ, "LC_ALL": "C"},
        check=False,
    )
    if done.returncode != 0:
        raise SourcesError(f"{dpkg_query} -W failed: {_last_error(done.stderr)}")
    found: dict[str, str] = {}
    for line in done.stdout.splitlines():
        source, _, rest = line.partition("\t")
        version, _, status = rest.partition("\t")
        if source and version and status.startswith("ii"):
            found.setdefault(source, version)
    return found


def has_autopkgtest(stanza: Deb822) -> bool:
    """Whether `Testsuite:` names autopkgtest itself (a debian/tests/control, not autodep8's)."""
    return "autopkgtest" in re.split(r"[\s,]+", stanza.get("Testsuite", ""))


def _unpacked(into: Path, source: str, version: str) -> Path:
    upstream = version.split(":", 1)[-1].rsplit("-", 1)[0] if "-" in version else version.split(":", 1)[-1]
    return into / f"{source}-{upstream}"


def _say(line: str) -> None:
    print(line, flush=True)  # progress shows as it happens, also into a pipe


def fetch(
    names: list[str],
    into: Path,
    state: Path,
    *,
    progress: Callable[[str], None] | None = None,
    etc: Path = ETC_APT,
) -> Fetched:
    """Fetches and unpacks the named sources (none: every installed one with an autopkgtest suite)."""
    if progress is None:
        progress = _say
    for tool in ("apt-get", "apt-cache", "dpkg-source"):
        if shutil.which(tool) is None:
            hint = " (apt-get install dpkg-dev)" if tool == "dpkg-source" else ""
            raise SourcesError(f"{tool} is not on PATH{hint}")
    into.mkdir(parents=True, exist_ok=True)
    apt = PrivateApt(state / "apt", etc)
    where = (
        "the machine's deb-src lines" if apt.machine_has_src else "deb-src lines derived from the machine's"
    )
    progress(f"nixtest sources: updating a private apt index ({where})")
    apt.update()
    installed = installed_sources()
    wanted = list(dict.fromkeys(names)) if names else sorted(installed)
    index = apt.showsrc(wanted)
    result = Fetched()
    if not names:
        wanted = [n for n in wanted if any(has_autopkgtest(s) for s in index.get(n, []))]
        progress(f"nixtest sources: {len(wanted)} installed source packages have an autopkgtest suite")
    for number, source in enumerate(wanted, 1):
        prefix = f"[{number}/{len(wanted)}] {source}"
        stanzas = index.get(source, [])
        if not stanzas:
            result.failed[source] = "the archive has no such source package"
            progress(f"nixtest sources: {source}: not fetched: {result.failed[source]}")
            continue
        versions = [s.get("Version", "").strip() for s in stanzas]
        version = installed.get(source, "")
        note = ""
        if version not in versions:
            newest = max(versions, key=functools.cmp_to_key(version_compare))
            note = f" (installed {version} is not in the archive)" if version else " (not installed)"
            version = newest
        target = _unpacked(into, source, version)
        if (target / "debian" / "tests" / "control").is_file() or (target / "debian" / "control").is_file():
            result.fetched[source] = target
            progress(f"{prefix} {version}: already in {target}")
            continue
        problem = _fetch_one(apt, source, version, target)
        if problem:
            result.failed[source] = f"{version}: {problem}"
            progress(f"nixtest sources: {source}: not fetched: {result.failed[source]}")
        else:
            result.fetched[source] = target
            progress(f"{prefix} {version}{note}: {target}")
    return result


def _fetch_one(apt: PrivateApt, source: str, version: str, target: Path) -> str:
    """Downloads and unpacks one source; "" or one line saying what went wrong."""
    work = apt.downloads / f"{source}_{version.replace(':', '%3a')}"
    work.mkdir(parents=True, exist_ok=True)
    done = apt.run("apt-get", "-q", "source", "--download-only", f"{source}={version}", cwd=work)
    if done.returncode != 0:
        return _last_error(done.stderr + done.stdout)
    dscs = sorted(work.glob("*.dsc"))
    if not dscs:
        return "apt-get source left no .dsc"
    # unpacked beside the downloads: dpkg-source leaves the tarballs next to the tree it makes
    partial = work / "tree"
    shutil.rmtree(partial, ignore_errors=True)
    unpack = subprocess.run(
        ["dpkg-source", "--no-check", "-x", str(dscs[-1]), str(partial)],
        capture_output=True,
        text=True,
        errors="replace",
        env={**os.environ, "LC_ALL": "C"},
        check=False,
    )
    if unpack.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        return "dpkg-source -x failed: " + _last_error(unpack.stderr + unpack.stdout)
    shutil.move(str(partial), str(target))
    shutil.rmtree(work, ignore_errors=True)
    return ""
