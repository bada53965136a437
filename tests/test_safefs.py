"""safefs.make_folders: a folder there already is checked as one it makes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nixtest.safefs import UntrustedPath, make_folders


def test_make_folders_makes_and_accepts_folders_of_its_own(tmp_path: Path) -> None:
    made = make_folders(tmp_path / "a" / "b")
    assert made == tmp_path / "a" / "b" and made.is_dir()
    assert make_folders(str(made)) == made  # there already: the same answer


def test_make_folders_refuses_what_is_no_folder_of_its_own(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "to-folder").symlink_to("real")
    (tmp_path / "dangling").symlink_to("nothing")
    (tmp_path / "file").write_text("x")
    (tmp_path / "open").mkdir()
    os.chmod(tmp_path / "open", 0o777)
    for name in ("to-folder", "dangling", "file", "open"):
        with pytest.raises(UntrustedPath):
            make_folders(tmp_path / name)
    with pytest.raises(UntrustedPath, match="not a folder of its own"):
        make_folders(tmp_path / "to-folder")
    with pytest.raises(UntrustedPath, match="can be written by others"):
        make_folders(tmp_path / "open")
    assert not (tmp_path / "nothing").exists()  # the dangling link's target was not made
