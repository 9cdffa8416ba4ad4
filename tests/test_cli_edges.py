"""Rough edges of the command line met by a new user: a symlinked source image for `submit`, a config
path that is not a regular file, an empty path setting, and a reader that closes the pipe early. Each
runs the real command as a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, Folders, cli, daemon_env, make_image
from i2v_watcher.cli import DEFAULT_CONFIG, config_file


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


def test_the_config_file_comes_from_i2v_config_when_not_given(folders: Folders, tmp_path: Path) -> None:
    make_image(folders.inbox / "a.png")
    result = cli("status", "--json", env=daemon_env(I2V_CONFIG=str(folders.config)))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["counts"]["queued"] == 1
    absent = tmp_path / "absent.toml"
    given = cli("status", "--config", str(folders.config), env=daemon_env(I2V_CONFIG=str(absent)))
    assert given.returncode == 0, given.stderr  # --config wins
    result = cli("run", env=daemon_env(I2V_CONFIG=str(absent)))
    assert result.returncode == 2
    assert f"config file not found: {absent}" in result.stderr
    assert f"{absent} is the config file named by I2V_CONFIG (no --config given)" in result.stderr
    result = cli("status", env=daemon_env(I2V_CONFIG=""))
    assert result.returncode == 2 and "I2V_CONFIG is set but empty" in result.stderr


def test_without_config_or_i2v_config_the_etc_file_is_read(folders: Folders) -> None:
    """The default, /etc/i2v-watcher/config.toml, in a real process: written only where it is not there
    (CI runs as root; a host with a real install keeps its file untouched), removed afterwards."""
    etc = DEFAULT_CONFIG
    if etc.exists() or not os.access(etc.parent.parent, os.W_OK):
        pytest.skip(f"{etc} exists already (a real install) or /etc cannot be written (not root)")
    result = cli("status")
    assert result.returncode == 2
    assert f"config file not found: {etc}" in result.stderr
    assert "the default config file (no --config given, I2V_CONFIG not set)" in result.stderr
    made = not etc.parent.exists()
    etc.parent.mkdir(exist_ok=True)
    try:
        shutil.copyfile(folders.config, etc)
        make_image(folders.inbox / "a.png")
        result = cli("status", "--json")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["counts"]["queued"] == 1
    finally:
        etc.unlink(missing_ok=True)
        if made:
            etc.parent.rmdir()


def test_the_default_path_is_the_one_the_units_and_docs_name(monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    for named_by in ("deploy/systemd/i2v-watcher.service", "deploy/README.md", "docs/reference/cli.md"):
        assert f"{DEFAULT_CONFIG}" in (REPO / named_by).read_text()
    monkeypatch.delenv("I2V_CONFIG", raising=False)
    assert config_file(None) == (DEFAULT_CONFIG, "the default config file (no --config given, I2V_CONFIG "
                                                 "not set)")
    monkeypatch.setenv("I2V_CONFIG", str(tmp_path / "x.toml"))
    assert config_file(None)[0] == tmp_path / "x.toml"
    assert config_file(tmp_path / "given.toml") == (tmp_path / "given.toml", None)
