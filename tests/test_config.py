"""Settings: TOML file, I2V_ environment overrides, folder rules, and the shipped example config."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import REPO, write_toml
from i2v_watcher.config import Settings, load_settings
from i2v_watcher.errors import StartupError


def base(tmp_path: Path) -> dict[str, object]:
    return {name: str(tmp_path / name) for name in ("inbox", "outbox", "failed", "done", "work")}


def test_toml_then_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "c.toml"
    write_toml(config, {**base(tmp_path), "settle_s": 3.0, "defaults": {"num_frames": 24, "fps": 12.0}})
    monkeypatch.setenv("I2V_SETTLE_S", "5")
    monkeypatch.setenv("I2V_DEFAULTS__NUM_FRAMES", "32")
    settings = load_settings(config)
    assert settings.settle_s == 5.0
    assert settings.defaults.num_frames == 32 and settings.defaults.fps == 12.0  # deep-merged


def test_relative_paths_resolve_against_the_working_directory(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "c.toml"
    write_toml(config, {"inbox": "var/inbox", "outbox": "var/outbox", "failed": "var/failed",
                        "done": "var/done", "work": "var/work"})
    monkeypatch.chdir(tmp_path)
    assert load_settings(config).inbox == tmp_path / "var" / "inbox"


@pytest.mark.parametrize("change,needle", [
    ({"outbox": "INBOX/out"}, "must not lie inside the inbox"),
    ({"work": "INBOX"}, "five different folders"),
    ({"settle_s": -1}, "settle_s"),
    ({"keep_inputs": "trash"}, "keep_inputs"),
    ({"watch_mode": "magic"}, "watch_mode"),
    ({"output_template": "{stem}_{user}"}, "output_template"),
    ({"unknown_setting": 1}, "unknown_setting: unknown key"),
    ({"defaults": {"num_frames": 0}}, "num_frames"),
    ({"worker_id": "../evil"}, "worker_id"),
])
def test_invalid_configs_are_startup_errors(tmp_path: Path, change: dict[str, object], needle: str) -> None:
    settings = base(tmp_path)
    settings.update({k: v.replace("INBOX", str(tmp_path / "inbox")) if isinstance(v, str) else v
                     for k, v in change.items()})
    config = tmp_path / "c.toml"
    write_toml(config, settings)
    with pytest.raises(StartupError) as caught:
        load_settings(config)
    assert needle in str(caught.value)


def test_missing_and_broken_config_files(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match="not found"):
        load_settings(tmp_path / "nope.toml")
    (tmp_path / "bad.toml").write_text("inbox = [unclosed\n")
    with pytest.raises(StartupError, match="cannot read"):
        load_settings(tmp_path / "bad.toml")


def test_example_config_is_valid_and_documents_every_setting() -> None:
    example = REPO / "config" / "i2v-watcher.toml"
    settings = load_settings(example)
    assert settings.backend == "preview" and settings.create_inbox
    text = example.read_text()
    for name in Settings.model_fields:
        assert re.search(rf"^#? ?{name} = ", text, re.MULTILINE) or f"[{name}" in text, name
    for table in ("defaults", "diffusion"):
        model = type(getattr(settings, table))
        for name in model.model_fields:
            assert re.search(rf"^#? ?{name} = ", text, re.MULTILINE), f"{table}.{name}"


def test_example_config_uses_the_code_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    example = load_settings(REPO / "config" / "i2v-watcher.toml")
    plain = Settings(inbox="var/inbox", outbox="var/outbox", failed="var/failed", done="var/done",
                     work="var/work", create_inbox=True, worker_id=example.worker_id)
    assert example.model_dump() == plain.model_dump()
