"""coreutils, checked through the profile's programs (pytest-style nixtest module).

Fixtures from nixtest: `package`, `local` (plumbum's local, in the test's
environment and working directory), `workdir` and `profile`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any


def test_profile_is_the_path(package: str, local: Any, profile: Path) -> None:
    assert package == "coreutils"
    assert local.env["PATH"] == f"{os.path.realpath(profile)}/bin"
    for tool in ("ls", "cp", "sort", "sha256sum", "date"):
        found = local.which(tool)
        assert str(found).startswith(str(profile)), found
        assert os.access(str(found), os.X_OK)


def test_working_directory_is_fresh(local: Any, workdir: Path) -> None:
    assert Path(str(local.cwd)) == workdir
    assert os.environ["HOME"] == str(workdir)
    # nixtest's own pytest driver may leave a .nixtest-* file of its own.
    names = [n for n in local["ls"]("-A").split() if not n.startswith(".nixtest")]
    assert sorted(names) == [".tmp", "profile"], names


def test_file_operations(local: Any, workdir: Path) -> None:
    (workdir / "a.txt").write_text("one\ntwo\n")
    local["mkdir"]("-p", "d/e")
    local["cp"]("a.txt", "d/e/b.txt")
    local["mv"]("d/e/b.txt", "d/c.txt")
    local["ln"]("-s", "c.txt", "d/link")
    assert (workdir / "d" / "c.txt").read_text() == "one\ntwo\n"
    assert not (workdir / "d" / "e" / "b.txt").exists()
    assert local["readlink"]("d/link").strip() == "c.txt"
    assert local["cat"]("d/link") == "one\ntwo\n"
    assert local["stat"]("-c", "%s", "d/c.txt").strip() == "8"
    assert local["wc"]("-l", "d/c.txt").split()[0] == "2"
    local["chmod"]("0640", "d/c.txt")
    assert local["stat"]("-c", "%a", "d/c.txt").strip() == "640"
    local["rm"]("-r", "d")
    assert not (workdir / "d").exists()


def test_checksums(local: Any, workdir: Path) -> None:
    data = os.urandom(100_000)
    (workdir / "blob").write_bytes(data)
    for tool, algo in (("sha256sum", "sha256"), ("sha1sum", "sha1"), ("md5sum", "md5"), ("b2sum", "blake2b")):
        digest = local[tool]("blob").split()[0]
        assert digest == hashlib.new(algo, data).hexdigest(), tool
    assert local["cksum"]("blob").split()[1] == "100000"
    listing = local["sha256sum"]("blob")
    (workdir / "SUMS").write_text(listing)
    assert local["sha256sum"]("-c", "SUMS").strip() == "blob: OK"
    (workdir / "blob").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    code, _, _ = local["sha256sum"].run(["-c", "SUMS"], retcode=None)
    assert code == 1, "sha256sum -c accepted a corrupted file"


def test_sort_and_numbers(local: Any) -> None:
    numbers = local["seq"]("1", "1000").split()
    assert numbers[0] == "1" and numbers[-1] == "1000" and len(numbers) == 1000
    shuffled = (local["seq"]["1", "1000"] | local["shuf"]["--random-source=/dev/zero"])()
    ordered = (local["echo"]["-n", shuffled] | local["sort"]["-n"])()
    assert ordered.split() == numbers
    assert local["expr"]("6", "*", "7").strip() == "42"
    assert local["factor"]("360").strip() == "360: 2 2 2 3 3 5"
    assert local["numfmt"]("--to=iec", "1048576").strip() == "1.0M"


def test_dates(local: Any) -> None:
    assert local["date"]("-u", "-d", "@0", "+%F %T").strip() == "1970-01-01 00:00:00"
    assert local["date"]("-u", "-d", "2014-02-28 +1 day", "+%F").strip() == "2014-03-01"


def test_failing_commands_fail(local: Any) -> None:
    code, _, err = local["ls"].run(["no-such-file"], retcode=None)
    assert code == 2 and "No such file or directory" in err
    assert local["false"].run(retcode=None)[0] == 1
    assert local["test"].run(["-e", "no-such-file"], retcode=None)[0] == 1
