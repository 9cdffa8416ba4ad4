"""Rough edges of the command line met by a new user: a symlinked source image for `submit`, a config
path that is not a regular file, an empty path setting, and a reader that closes the pipe early. Each
runs the real command as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, Folders, cli, daemon_env, make_image


def test_submit_follows_the_users_own_link_to_the_image(folders: Folders, tmp_path: Path) -> None:
    real = make_image(tmp_path / "photos" / "original.png")
    link = tmp_path / "shot.png"
    link.symlink_to(real)
    result = cli("submit", str(link), "--config", str(folders.config))
    assert result.returncode == 0, result.stderr
    queued = folders.inbox / "shot.png"  # the name the user gave, not the link's target
    assert Path(result.stdout.strip()) == queued
    assert not queued.is_symlink() and queued.read_bytes() == real.read_bytes()
    assert os.listdir(folders.inbox) == ["shot.png"]

