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


@pytest.mark.parametrize("command", ["check-config", "run", "status"])
def test_a_fifo_as_the_config_file_is_refused_not_waited_on(tmp_path: Path, command: str) -> None:
    fifo = tmp_path / "config.toml"
    os.mkfifo(fifo)
    result = cli(command, "--config", str(fifo), timeout=60)  # before: blocked for a writer forever
    assert result.returncode == 2
    assert f"cannot read config file {fifo}: not a regular file (a FIFO (named pipe))" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("variable", ["I2V_INBOX", "I2V_WORK", "I2V_SCRATCH", "I2V_FFMPEG_PATH"])
def test_an_empty_path_setting_is_an_error_naming_it(folders: Folders, variable: str) -> None:
    env = {**daemon_env(), variable: ""}
    result = cli("check-config", "--config", str(folders.config), env=env)
    assert result.returncode == 2
    assert variable in result.stderr and "empty path" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_empty_path_in_the_file_is_an_error_too(folders: Folders) -> None:
    folders.write_config(scratch="")
    result = cli("check-config", "--config", str(folders.config))
    assert result.returncode == 2 and "scratch" in result.stderr and "empty path" in result.stderr


@pytest.mark.parametrize("args", [["status"], ["status", "--json"], ["check-config"]])
def test_a_reader_that_closes_early_ends_the_command_quietly(folders: Folders, args: list[str]) -> None:
    """`i2v-watcher status | head`: the reader is gone before the first write."""
    proc = subprocess.Popen([sys.executable, "-m", "i2v_watcher", *args, "--config", str(folders.config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=daemon_env(), cwd=REPO)
    assert proc.stdout is not None
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    assert "BrokenPipeError" not in err.decode() and "Traceback" not in err.decode()
    assert proc.returncode == 141
