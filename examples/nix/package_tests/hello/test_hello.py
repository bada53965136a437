"""hello, as a pytest-style nixtest module: fixtures `local`, `workdir`, `profile`, `package`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def test_greets(local: Any) -> None:
    assert local["hello"]() == "Hello, world!\n"


def test_profile_is_in_the_store(package: str, profile: Path) -> None:
    assert package == "hello"
    real = os.path.realpath(profile)
    assert real.startswith("/nix/store/"), real
    assert sorted(os.listdir(os.path.join(real, "bin"))) == ["hello"]
    assert os.path.isfile(os.path.join(real, "manifest.nix"))


def test_greeting_comes_from_its_dependency(local: Any) -> None:
    script = Path(str(local.which("hello"))).read_text()
    assert "-greeting-1.0/share/greeting/hello.txt" in script
