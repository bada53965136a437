"""Package sets: dpkg (the real database of this machine), PATH and YAML prefixes."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from nixtest import packagesets
from nixtest.errors import PackageSetError, UnknownPackage
from nixtest.packagesets import (
    DpkgSet,
    PackageSet,
    PathSet,
    PrefixSet,
    debian_profile_path,
    load_set,
    parse_dpkg_listfiles,
)


def dpkg_field(package: str, field: str) -> str:
    """Ask dpkg-query directly, to check our answers against."""
    return subprocess.run(
        ["dpkg-query", "-W", "-f", "${" + field + "}", package],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


class CountingRun:
    """Stands in for subprocess.run in nixtest.packagesets, counting calls."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.real = subprocess.run

    def __call__(self, args: list[str], **kwargs: Any) -> Any:
        self.calls.append(list(args))
        return self.real(args, **kwargs)


@pytest.fixture
def counting_run(monkeypatch: pytest.MonkeyPatch) -> CountingRun:
    counter = CountingRun()
    monkeypatch.setattr(packagesets.subprocess, "run", counter)
    return counter


# ---------------------------------------------------------------------------
# dpkg, for real


@pytest.mark.dpkg
def test_dpkg_names_version_has() -> None:
    pset = DpkgSet()
    names = pset.names()
    assert names == sorted(names)
    assert len(names) == len(set(names))
    for name in ("hello", "coreutils", "bash", "python3", "sqlite3"):
        assert name in names
        assert pset.has(name)
        assert pset.version(name) == dpkg_field(name, "Version")
    assert not pset.has("no-such-package-nixtest")
    # Names are bare, even for Multi-Arch: same packages (libc6:amd64).
    assert "libc6" in names
    assert not any(":" in n for n in names)


@pytest.mark.dpkg
def test_dpkg_identity_names_native_arch() -> None:
    arch = subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert DpkgSet().identity == f"host:dpkg:{arch}"


@pytest.mark.dpkg
def test_dpkg_unknown_package() -> None:
    pset = DpkgSet()
    for method in (pset.version, pset.dependencies, pset.files, pset.outputs):
        with pytest.raises(UnknownPackage) as info:
            method("no-such-package-nixtest")
        assert info.value.name == "no-such-package-nixtest"
        assert "'host'" in str(info.value)
    with pytest.raises(UnknownPackage):
        list(pset.profile_entries("no-such-package-nixtest"))


@pytest.mark.dpkg
def test_dpkg_one_query_for_everything(counting_run: CountingRun) -> None:
    pset = DpkgSet()
    for name in pset.names():
        assert pset.has(name)
        pset.version(name)
        pset.dependencies(name)
    assert pset.identity.startswith("host:dpkg:")
    assert len(counting_run.calls) == 1
    assert counting_run.calls[0][:2] == ["dpkg-query", "-W"]


@pytest.mark.dpkg
def test_dpkg_dependencies() -> None:
    pset = DpkgSet()
    assert "libc6" in pset.dependencies("hello")
    python3 = pset.dependencies("python3")
    assert "python3-minimal" in python3  # a Pre-Depends
    assert "python3.11" in python3 or any(d.startswith("python3.") for d in python3)
    assert "libc6" in pset.dependencies("coreutils")  # coreutils has only Pre-Depends
    for name in ("hello", "python3", "coreutils", "bash", "sqlite3"):
        deps = pset.dependencies(name)
        assert deps == sorted(set(deps))
        assert name not in deps
        for dep in deps:
            assert pset.has(dep), (name, dep)  # no version constraints, no :any
            assert not any(c in dep for c in " (:|")


@pytest.mark.dpkg
def test_dpkg_files(counting_run: CountingRun) -> None:
    pset = DpkgSet()
    files = pset.files("hello")
    assert Path("/usr/bin/hello") in files
    for f in files:
        assert f.is_absolute()
        assert not f.is_dir() or f.is_symlink()
    assert pset.files("hello") == files
    # read from dpkg's database: no dpkg-query process per package
    assert [c for c in counting_run.calls if "-L" in c] == []


@pytest.mark.dpkg
def test_dpkg_lists_read_directly_are_what_dpkg_query_says() -> None:
    """Every 25th installed package, and each that diverts a file or owns a diverted one."""
    pset = DpkgSet()
    names = pset.names()
    diversions = Path("/var/lib/dpkg/diversions")
    lines = diversions.read_text().splitlines() if diversions.exists() else []
    diverted = set(lines[0::3])
    involved = {name for name in lines[2::3] if name in names}
    owners = subprocess.run(
        ["dpkg-query", "-S", *sorted(diverted)], capture_output=True, text=True, check=False
    ).stdout
    involved |= {line.split(":")[0].split(",")[0].strip() for line in owners.splitlines() if ":" in line}
    checked = sorted((involved & set(names)) | set(names[::25]))
    for name in checked:
        binary = dpkg_field(name, "binary:Package")
        said = subprocess.run(["dpkg-query", "-L", binary], capture_output=True, text=True, check=True)
        assert pset._listing(name) == parse_dpkg_listfiles(said.stdout), name
    assert len(checked) > 10


@pytest.mark.dpkg
def test_dpkg_lists_come_from_dpkg_query_for_another_database(
    counting_run: CountingRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DPKG_ADMINDIR", "/var/lib/dpkg")
    assert Path("/usr/bin/hello") in DpkgSet().files("hello")
    assert ["dpkg-query", "-L", "hello"] in counting_run.calls


@pytest.mark.dpkg
def test_dpkg_multiarch_files(counting_run: CountingRun) -> None:
    # libc6 is Multi-Arch: same: with a foreign architecture added, dpkg-query
    # -L needs libc6:<arch>, so that is what we ask for.
    files = DpkgSet().files("libc6")
    assert any(f.name == "libc.so.6" for f in files)
    binary = dpkg_field("libc6", "binary:Package")
    assert ":" in binary
    # dpkg keeps its list as info/libc6:<arch>.list
    said = subprocess.run(["dpkg-query", "-L", binary], capture_output=True, text=True, check=True)
    listed = [real for _, real in parse_dpkg_listfiles(said.stdout)]
    leaves = [r for r in listed if os.path.lexists(r) and (os.path.islink(r) or not os.path.isdir(r))]
    assert files == [Path(r) for r in leaves]


@pytest.mark.dpkg
def test_dpkg_profile_entries_hello() -> None:
    entries = list(DpkgSet().profile_entries("hello"))
    mapping = dict(entries)
    assert mapping[PurePosixPath("bin/hello")] == Path("/usr/bin/hello")
    assert PurePosixPath("share/man/man1/hello.1.gz") in mapping
    assert not any(str(p).startswith("bin/") and p.name != "hello" for p in mapping)
    for inside, target in entries:
        assert not inside.is_absolute()
        assert inside.parts[0] in ("bin", "lib", "include", "share", "libexec")
        assert os.path.lexists(target)
        assert not target.is_dir() or target.is_symlink()


@pytest.mark.dpkg
def test_dpkg_profile_entries_layout() -> None:
    pset = DpkgSet()
    coreutils = dict(pset.profile_entries("coreutils"))
    assert PurePosixPath("bin/ls") in coreutils
    assert coreutils[PurePosixPath("bin/ls")].name == "ls"
    libc = dict(pset.profile_entries("libc6"))
    # /lib/<triplet>/libc.so.6 lands directly in lib/.
    assert PurePosixPath("lib/libc.so.6") in libc
    assert not any(str(p).startswith("etc/") for p in libc)


@pytest.mark.dpkg
def test_dpkg_outputs_follow_the_source_package() -> None:
    pset = DpkgSet()
    assert pset.outputs("hello") == ["hello"]  # libc6 comes from glibc: not an output
    outputs = pset.outputs("python3")
    assert outputs[0] == "python3"
    assert "python3-minimal" in outputs  # where /usr/bin/python3 is
    entries = dict(pset.profile_entries("python3"))
    assert entries[PurePosixPath("bin/python3")] == Path("/usr/bin/python3")


# ---------------------------------------------------------------------------
# dpkg, on made-up databases

FAKE_DB = "\n".join(
    "\t".join(fields)
    for fields in [
        # binary:Package, Package, Architecture, Version, Status, Depends, Pre-Depends,
        # Provides, source:Package
        ["dpkg", "dpkg", "amd64", "1.21", "install ok installed", "", "", "", "dpkg"],
        ["libc6:amd64", "libc6", "amd64", "2.36", "install ok installed", "", "", "", "glibc"],
        ["libc6:i386", "libc6", "i386", "2.35", "install ok installed", "", "", "", "glibc"],
        ["mawk", "mawk", "amd64", "1.3", "install ok installed", "", "", "awk", "mawk"],
        [
            "tool",
            "tool",
            "amd64",
            "1:2.0-1",
            "install ok installed",
            "gone | libc6:any (>= 2.34), awk, perl:any, nothing-provides-this",
            "tool-data (= 1:2.0-1)",
            "",
            "tool-src",
        ],
        [
            "tool-data",
            "tool-data",
            "all",
            "1:2.0-1",
            "hold ok installed",
            "tool",
            "",
            "",
            "tool-src",
        ],
        ["removed", "removed", "amd64", "1", "deinstall ok config-files", "", "", "", "removed"],
        ["halfway", "halfway", "amd64", "1", "install ok half-configured", "", "", "", "halfway"],
        ["not-a-row"],
    ]
)


class FakeDpkgSet(DpkgSet):
    def _query(self) -> str:
        return FAKE_DB


def test_dpkg_parse_status_multiarch_and_relations() -> None:
    pset = FakeDpkgSet()
    assert pset.names() == ["dpkg", "libc6", "mawk", "tool", "tool-data"]
    assert pset.identity == "host:dpkg:amd64"
    assert pset.version("libc6") == "2.36"  # the native architecture wins
    assert pset.version("tool") == "1:2.0-1"
    # "gone | libc6:any" -> libc6; awk -> mawk, which provides it; an
    # unsatisfied relation is left out; Pre-Depends count.
    assert pset.dependencies("tool") == ["libc6", "mawk", "tool-data"]
    assert pset.dependencies("tool-data") == ["tool"]
    assert pset.outputs("tool") == ["tool", "tool-data"]
    assert pset.outputs("tool-data") == ["tool-data", "tool"]
    with pytest.raises(UnknownPackage):
        pset.version("removed")
    assert not pset.has("halfway")


def test_dpkg_listfiles_diversions() -> None:
    output = "\n".join(
        [
            "/.",
            "/usr",
            "/usr/bin",
            "/usr/bin/pg_config",
            "diverted by postgresql-common to: /usr/bin/pg_config.libpq-dev",
            "/bin/sh",
            "package diverts others to: /bin/sh.distrib",
            "/usr/include",
        ]
    )
    assert parse_dpkg_listfiles(output) == [
        ("/usr", "/usr"),
        ("/usr/bin", "/usr/bin"),
        ("/usr/bin/pg_config", "/usr/bin/pg_config.libpq-dev"),
        ("/bin/sh", "/bin/sh"),
        ("/usr/include", "/usr/include"),
    ]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/usr/bin/hello", "bin/hello"),
        ("/bin/ls", "bin/ls"),
        ("/usr/sbin/sshd", "bin/sshd"),
        ("/sbin/ip", "bin/ip"),
        ("/usr/games/fortune", "bin/fortune"),
        ("/usr/local/bin/x", "bin/x"),
        ("/usr/lib/x86_64-linux-gnu/libz.so.1", "lib/libz.so.1"),
        ("/lib/x86_64-linux-gnu/libc.so.6", "lib/libc.so.6"),
        ("/usr/lib/arm-linux-gnueabihf/libz.so.1", "lib/libz.so.1"),
        ("/usr/lib/x86_64-linux-gnu/pkgconfig/zlib.pc", "lib/pkgconfig/zlib.pc"),
        ("/usr/lib/pkgconfig/a.pc", "lib/pkgconfig/a.pc"),
        ("/usr/share/pkgconfig/b.pc", "lib/pkgconfig/b.pc"),
        ("/usr/lib/python3/dist-packages/x.py", "lib/python3/dist-packages/x.py"),
        ("/usr/lib/gcc/x86_64-linux-gnu/12/cc1", "lib/gcc/x86_64-linux-gnu/12/cc1"),
        ("/usr/lib64/ld-linux-x86-64.so.2", "lib/ld-linux-x86-64.so.2"),
        ("/lib64/ld-linux-x86-64.so.2", "lib/ld-linux-x86-64.so.2"),
        ("/usr/include/x86_64-linux-gnu/bits/types.h", "include/bits/types.h"),
        ("/usr/include/zlib.h", "include/zlib.h"),
        ("/usr/share/man/man1/ls.1.gz", "share/man/man1/ls.1.gz"),
        ("/usr/libexec/coreutils/libstdbuf.so", "libexec/coreutils/libstdbuf.so"),
        ("/etc/hosts", None),
        ("/var/lib/dpkg/status", None),
        ("/usr/lib32/libc.so.6", None),
        ("/usr/src/linux/Makefile", None),
        ("/usr/bin", None),
        ("/usr/lib/x86_64-linux-gnu", None),
        ("/lib", None),
        ("/usr", None),
        ("/.", None),
        ("relative/bin/x", None),
    ],
)
def test_debian_profile_path(path: str, expected: str | None) -> None:
    result = debian_profile_path(path)
    assert (None if result is None else str(result)) == expected


# ---------------------------------------------------------------------------
# PATH


def make_program(path: Path, text: str = "#!/bin/sh\necho hi\n", mode: int = 0o755) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def test_path_set(tmp_path: Path) -> None:
    first = tmp_path / "first"
    second = tmp_path / "second"
    make_program(first / "tool")
    make_program(second / "tool")
    make_program(second / "other")
    make_program(second / "data", mode=0o644)  # not executable: not a program
    (second / "subdir").mkdir()
    (first / "link").symlink_to(second / "other")
    (first / "dangling").symlink_to(tmp_path / "nowhere")
    make_program(tmp_path / "rel" / "relative-only")
    search = os.pathsep.join([str(first), "rel", str(second), str(tmp_path / "missing")])
    pset = PathSet("path", path=search)
    assert pset.names() == ["link", "other", "tool"]
    assert pset.has("tool") and not pset.has("data") and not pset.has("relative-only")
    assert pset.files("tool") == [first / "tool"]  # the first on PATH wins
    assert pset.version("tool") == ""
    assert pset.dependencies("tool") == []
    assert list(pset.profile_entries("link")) == [(PurePosixPath("bin/link"), first / "link")]
    assert pset.identity == "path:" + os.pathsep.join([str(first), str(second), str(tmp_path / "missing")])
    with pytest.raises(UnknownPackage):
        pset.files("data")


def test_path_set_uses_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_program(tmp_path / "bin" / "only-here")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    pset = load_set("path")
    assert isinstance(pset, PathSet)
    assert pset.names() == ["only-here"]


# ---------------------------------------------------------------------------
# prefixes


def write_yaml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_prefix_set(tmp_path: Path) -> None:
    a = tmp_path / "envs" / "a"
    make_program(a / "bin" / "tool-a")
    make_program(a / "sbin" / "daemon")
    (a / "lib" / "pkgconfig").mkdir(parents=True)
    (a / "lib" / "pkgconfig" / "a.pc").write_text("Name: a\n")
    (a / "lib" / "liba.so").write_text("")
    (a / "lib64").symlink_to("lib")  # as in a venv: must not give every file twice
    (a / "include").mkdir()
    (a / "include" / "a.h").write_text("")
    (a / "share" / "doc").mkdir(parents=True)
    (a / "share" / "data").symlink_to(tmp_path)  # a symlink to a directory is a leaf
    (a / "etc").mkdir()
    (a / "etc" / "a.conf").write_text("")
    b = tmp_path / "opt-b"
    make_program(b / "bin" / "tool-b")
    (b / "lib64").mkdir()
    (b / "lib64" / "libb.so").write_text("")
    sets = tmp_path / "sets"
    sets.mkdir()
    yaml_file = write_yaml(
        sets / "set.yaml",
        f"""
a: {{prefix: ../envs/a, version: "1.10", depends: [b]}}
b: {b}
""",
    )
    pset = load_set(f"prefix:{yaml_file}")
    assert isinstance(pset, PrefixSet)
    assert pset.spec == f"prefix:{yaml_file}"
    assert pset.identity.startswith(f"prefix:{yaml_file}#")
    assert pset.names() == ["a", "b"]
    assert pset.prefix("a") == a
    assert pset.version("a") == "1.10"
    assert pset.version("b") == ""
    assert pset.dependencies("a") == ["b"]
    assert pset.dependencies("b") == []
    files = pset.files("a")
    assert a / "etc" / "a.conf" in files
    assert a / "share" / "data" in files
    assert a / "share" / "doc" not in files  # a directory
    entries = list(pset.profile_entries("a"))
    assert sorted((str(i), t) for i, t in entries) == [
        ("bin/daemon", a / "sbin" / "daemon"),
        ("bin/tool-a", a / "bin" / "tool-a"),
        ("include/a.h", a / "include" / "a.h"),
        ("lib/liba.so", a / "lib" / "liba.so"),
        ("lib/pkgconfig/a.pc", a / "lib" / "pkgconfig" / "a.pc"),
        ("share/data", a / "share" / "data"),
    ]
    assert dict(pset.profile_entries("b")) == {
        PurePosixPath("bin/tool-b"): b / "bin" / "tool-b",
        PurePosixPath("lib/libb.so"): b / "lib64" / "libb.so",
    }
    with pytest.raises(UnknownPackage) as info:
        pset.version("c")
    assert f"prefix:{yaml_file}" in str(info.value)


def test_prefix_identity_follows_the_file(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "q").mkdir()
    yaml_file = write_yaml(tmp_path / "s.yaml", "a: p\n")
    first = PrefixSet(yaml_file).identity
    assert PrefixSet(yaml_file).identity == first
    write_yaml(yaml_file, "a: q\n")
    assert PrefixSet(yaml_file).identity != first


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ("a: [unclosed\n", None, "malformed YAML"),
        ("- a\n- b\n", None, "got a list"),
        ("", None, "empty file"),
        ("a: missing-dir\n", "'a'", "does not exist"),
        ("a: file.txt\n", "'a'", "is not a directory"),
        ("a: {version: '1'}\n", "'a'", "missing 'prefix'"),
        ("a: {prefix: p, flavour: x}\n", "'a'", "unknown key 'flavour'"),
        ("a: {prefix: p, version: 1.10}\n", "'a'", "version must be a string"),
        ("a: {prefix: p, depends: b}\n", "'a'", "depends must be a list"),
        ("a: {prefix: p, depends: [zz]}\n", "'a'", "'zz'"),
        ("a: 3\n", "'a'", "prefix must be a path"),
        ("12: p\n", "12", "package name"),
        ("'x y': p\n", "'x y'", "package name"),
    ],
)
def test_prefix_errors(tmp_path: Path, text: str, key: str | None, words: str) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "file.txt").write_text("")
    yaml_file = write_yaml(tmp_path / "set.yaml", text)
    with pytest.raises(PackageSetError) as info:
        load_set(f"prefix:{yaml_file}")
    message = str(info.value)
    assert "\n" not in message
    assert str(yaml_file) in message
    assert words in message
    if key is not None:
        assert f"key {key}:" in message


def test_prefix_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PackageSetError) as info:
        load_set(f"prefix:{tmp_path / 'nope.yaml'}")
    assert str(tmp_path / "nope.yaml") in str(info.value)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------
# load_set


@pytest.mark.dpkg
def test_load_host_is_dpkg_here() -> None:
    pset = load_set("host")
    assert isinstance(pset, DpkgSet)
    assert pset.spec == "host"
    assert isinstance(pset, PackageSet)


def test_load_host_without_dpkg(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packagesets.shutil, "which", lambda name: None)
    pset = load_set("host")
    assert isinstance(pset, PathSet)
    assert pset.spec == "host"


@pytest.mark.parametrize("spec", ["hots", "dpkg", "host:x", "path:/bin", "prefix", "", "nix"])
def test_load_bad_spec(spec: str) -> None:
    with pytest.raises(PackageSetError) as info:
        load_set(spec)
    message = str(info.value)
    assert repr(spec) in message
    assert "host, path, prefix:FILE or nix:FILE" in message


def test_load_empty_prefix() -> None:
    with pytest.raises(PackageSetError, match="prefix:FILE"):
        load_set("prefix:")


def test_load_nix_missing_file_is_one_line_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "release.nix"
    with pytest.raises(PackageSetError, match="no such Nix file") as info:
        load_set(f"nix:{missing}")
    assert str(missing) in str(info.value) and "\n" not in str(info.value)


def test_dpkg_counts_packages_waiting_for_triggers_but_not_half_installed() -> None:
    from nixtest.packagesets import parse_dpkg_query

    def row(name: str, status: str) -> str:
        return "\t".join([f"{name}:amd64", name, "amd64", "1.0", status, "", "", "", ""])

    output = "\n".join(
        [
            row("dpkg", "install ok installed"),
            row("waiting", "install ok triggers-pending"),
            row("awaiting", "install ok triggers-awaited"),
            row("unpacked", "install ok unpacked"),
            row("broken", "install ok half-configured"),
            row("removed", "deinstall ok config-files"),
        ]
    )
    packages, _ = parse_dpkg_query(output)
    assert sorted(packages) == ["awaiting", "dpkg", "waiting"]
