"""gzip round trips, checked against Python's own gzip implementation."""

from __future__ import annotations

import gzip
import os
import random
from pathlib import Path
from typing import Any

import pytest


def _sample(size: int) -> bytes:
    rng = random.Random(2014)
    words = [b"nix", b"test", b"package", b"profile", b"wrapper", b"\n"]
    return b" ".join(rng.choice(words) for _ in range(size // 5))[:size]


@pytest.mark.parametrize("level", ["-1", "-6", "-9"])
def test_roundtrip(local: Any, workdir: Path, level: str) -> None:
    data = _sample(200_000) + os.urandom(1000)
    path = workdir / f"data{level}"
    path.write_bytes(data)
    local["gzip"](level, "--keep", str(path))
    packed = Path(f"{path}.gz")
    assert packed.exists() and path.exists()
    assert packed.stat().st_size < len(data) // 2, "gzip did not compress"
    assert gzip.decompress(packed.read_bytes()) == data
    local["gzip"]("-t", str(packed))
    path.unlink()
    local["gunzip"](str(packed))
    assert path.read_bytes() == data and not packed.exists()


def test_reads_python_gzip(local: Any, workdir: Path) -> None:
    data = _sample(50_000)
    (workdir / "py.gz").write_bytes(gzip.compress(data))
    assert local["zcat"]("py.gz").encode() == data
    listing = local["gzip"]("-l", "py.gz").splitlines()[-1].split()
    assert int(listing[1]) == len(data), listing


def test_keeps_name_and_refuses_corrupt(local: Any, workdir: Path) -> None:
    (workdir / "named.txt").write_bytes(b"hello\n" * 100)
    local["gzip"]("-N", "named.txt")
    os.rename(workdir / "named.txt.gz", workdir / "renamed.gz")
    local["gzip"]("-d", "-N", "renamed.gz")
    assert (workdir / "named.txt").read_bytes() == b"hello\n" * 100
    good = gzip.compress(_sample(10_000))
    broken = good[:-8] + bytes(8)  # wrong CRC and length
    (workdir / "broken.gz").write_bytes(broken)
    code, _, err = local["gzip"].run(["-t", "broken.gz"], retcode=None)
    assert code == 1 and "crc error" in err.lower(), (code, err)
