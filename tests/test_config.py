"""Settings: TOML file, I2V_ environment overrides, folder rules, and the shipped example config."""

from __future__ import annotations

import itertools
import math
import os
import re
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO, write_toml
from i2v_watcher.config.models import check_model_tables
from i2v_watcher.config.settings import FOLDERS, Settings, load_settings
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
    ({"outbox": "INBOX/out"}, "must not lie inside inbox"),
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
    for table in ("defaults", "diffusion", "caption"):
        model = type(getattr(settings, table))
        for name in model.model_fields:
            assert re.search(rf"^#? ?{name} = ", text, re.MULTILINE), f"{table}.{name}"


def test_example_config_uses_the_code_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    example = load_settings(REPO / "config" / "i2v-watcher.toml")
    plain = Settings(inbox="var/inbox", outbox="var/outbox", failed="var/failed", done="var/done",
                     work="var/work", create_inbox=True, worker_id=example.worker_id)
    assert example.model_dump() == plain.model_dump()


def load(tmp_path: Path, **changes: Any) -> Settings:
    config = tmp_path / "c.toml"
    write_toml(config, {**base(tmp_path), **changes})
    return load_settings(config)


def refused(tmp_path: Path, **changes: Any) -> str:
    with pytest.raises(StartupError) as caught:
        load(tmp_path, **changes)
    return str(caught.value)


# ---- every number has a range; inf and nan never pass -------------------------------------------
# (setting, lowest allowed, highest allowed, a value just below, a value just above)
RANGES = [
    ("poll_interval_s", 0.1, 3600, 0.05, 3601),
    ("rescan_s", 1, 86400, 0.5, 86401),
    ("settle_s", 0, 3600, -0.1, 3601),
    ("sidecar_grace_s", 0, 86400, -1, 86401),
    ("orphan_sidecar_s", 0, 30 * 86400, -1, 30 * 86400 + 1),
    ("ffmpeg_stall_s", 1, 3600, 0.5, 3601),
    ("stop_timeout_s", 0, 86400, -1, 86401),
    ("progress_log_s", 0, 3600, -1, 3601),
    ("retry_backoff_s", 0, 3600, -1, 3601),
    ("retry_backoff_max_s", 3600, 86400, -1, 86401),  # lowest: must also be >= retry_backoff_s
    ("retention_days", 0.001, 36500, 0, 36501),
    ("draft_expiry_days", 0.001, 36500, 0, 36501),
    ("transient_retries", 0, 100, -1, 101),
    ("max_image_pixels", 4096, 1_000_000_000, 4095, 1_000_000_001),
    ("max_image_bytes", 1024, 10 * 1024**3, 1023, 10 * 1024**3 + 1),
    ("max_sidecar_bytes", 256, 16 * 1024 * 1024, 255, 16 * 1024 * 1024 + 1),
    ("poster_quality", 1, 100, 0, 101),
    ("memory_budget_mb", 64, 64 * 1024 * 1024, 63, 64 * 1024 * 1024 + 1),
    ("max_job_crashes", 1, 100, 0, 101),
    ("visibility_timeout_s", 5, 7 * 86400, 4, 7 * 86400 + 1),
    ("lease_timeout_s", 2, 86400, 1.9, 86401),
    ("max_silent_s", 1, 86400, 0.5, 86401),
    ("unroutable_timeout_s", 0, 31536000, -1, 31536001),
    ("swap_retry_s", 1, 86400, 0.5, 86401),
    ("load_timeout_s", 10, 86400, 9, 86401),
    ("pipeline_depth", 0, 8, -1, 9),
    ("web_session_s", 60, 30 * 86400, 59, 30 * 86400 + 1),
    ("web_signin_failures", 1, 1000, 0, 1001),
    ("web_upload_max_mb", 1, 10 * 1024, 0, 10 * 1024 + 1),
    ("web_page_size", 1, 500, 0, 501),
    ("catalog_rescan_s", 10, 86400, 9, 86401),
    ("web_max_connections", 8, 65536, 7, 65537),
    ("web_header_timeout_s", 0.5, 3600, 0.4, 3601),
    ("metrics_port", 1, 65535, 0, 65536),
    ("max_output_frames", 1, 10_000_000, 0, 10_000_001),
    ("max_output_duration_s", 0.001, 86400, 0, 86401),
    ("max_output_pixel_frames", 1, 10**15, 0, 10**15 + 1),
    ("max_step_buffer_mb", 1, 64 * 1024 * 1024, 0, 64 * 1024 * 1024 + 1),
    ("max_encode_s", 0.001, 7 * 86400, 0, 7 * 86400 + 1),
]


@pytest.mark.parametrize("name,low,high,below,above", RANGES, ids=[r[0] for r in RANGES])
def test_every_number_has_both_bounds(tmp_path: Path, name: str, low: float, high: float,
                                      below: float, above: float) -> None:
    # The two backoffs must stay ordered while one of them moves to its bound.
    partner = {"retry_backoff_max_s": {"retry_backoff_s": 3600},
               "retry_backoff_s": {"retry_backoff_max_s": 86400}}
    extra: dict[str, Any] = partner.get(name, {})
    assert getattr(load(tmp_path, **extra, **{name: low}), name) == low
    assert getattr(load(tmp_path, **extra, **{name: high}), name) == high
    for value in (below, above):
        assert name in refused(tmp_path, **extra, **{name: value})


FLOATS = [name for name, *_ in RANGES if Settings.model_fields[name].annotation in (float, float | None)]


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan], ids=["inf", "-inf", "nan"])
@pytest.mark.parametrize("name", FLOATS)
def test_inf_and_nan_are_refused(tmp_path: Path, name: str, value: float) -> None:
    assert name in refused(tmp_path, **{name: value})


def test_inf_from_the_environment_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("I2V_POLL_INTERVAL_S", "inf")
    assert "poll_interval_s" in refused(tmp_path)


# The numbers of the [caption] table: (field, lowest allowed, highest allowed, just below, just above).
CAPTION_RANGES = [("max_new_tokens", 1, 512, 0, 513)]


@pytest.mark.parametrize("name,low,high,below,above", CAPTION_RANGES, ids=[r[0] for r in CAPTION_RANGES])
def test_every_caption_number_has_both_bounds(tmp_path: Path, name: str, low: int, high: int, below: int,
                                              above: int) -> None:
    for value in (low, high):
        assert getattr(load(tmp_path, caption={name: value}).caption, name) == value
    for value in (below, above):
        assert f"caption.{name}" in refused(tmp_path, caption={name: value})


def test_a_caption_template_names_known_placeholders_only(tmp_path: Path) -> None:
    assert load(tmp_path).caption.model is None  # off by default
    assert "{subject}" in load(tmp_path, caption={"template": "{subject}, slow motion"}).caption.template
    assert "unknown placeholder {object}" in refused(tmp_path, caption={"template": "{object} moves"})
    assert "neither {caption} nor {subject}" in refused(tmp_path, caption={"template": "a fox runs"})
    assert "not a valid template" in refused(tmp_path, caption={"template": "{subject"})


def test_every_numeric_setting_has_its_range_tested() -> None:
    floats = {name for name, field in Settings.model_fields.items()
              if field.annotation in (float, float | None, int, int | None)}
    assert floats <= {name for name, *_ in RANGES}


# [quality_gate] and its per-backend tables: (key, lowest, highest, just below, just above)
GATE_RANGES = [
    ("max_rerolls", 0, 8, -1, 9),
    ("min_motion", 0, 1, -0.01, 1.01),
    ("motion_flow_px", 0.01, 256, 0, 257),
    ("max_frozen", 0, 1, -0.01, 1.01),
    ("max_flicker", 0, 255, -0.1, 256),
    ("max_black", 0, 1, -0.01, 1.01),
    ("max_drift", 0, 1, -0.01, 1.01),
    ("min_sharpness", 0, 10, -0.01, 10.1),
    ("guidance_step", 0, 10, -0.1, 10.1),
    ("guidance_ceiling", 0, 100, -0.1, 100.1),
]
BACKEND_ONLY = {"guidance_step", "guidance_ceiling"}


@pytest.mark.parametrize("name,low,high,below,above", GATE_RANGES, ids=[r[0] for r in GATE_RANGES])
def test_every_quality_gate_number_has_both_bounds(tmp_path: Path, name: str, low: float, high: float,
                                                   below: float, above: float) -> None:
    for table in ([] if name in BACKEND_ONLY else [[]]) + ([] if name == "max_rerolls" else [["svd"]]):
        def gate(value: float, table: list[str] = table) -> dict[str, Any]:
            return {"quality_gate": {table[0]: {name: value}} if table else {name: value}}

        for value in (low, high):
            settings = load(tmp_path, **gate(value))
            found = settings.quality_gate.for_job(table[0] if table else "preview")
            assert value in (getattr(found, name, None), getattr(found.thresholds, name, None))
        for value in (below, above, math.inf, math.nan):
            assert name in refused(tmp_path, **gate(value))


def test_every_quality_gate_number_is_in_its_ranges() -> None:
    from i2v_watcher.config.gate import QualityGate, ThresholdOverrides

    numbers = {name for model in (QualityGate, ThresholdOverrides)
               for name, field in model.model_fields.items()
               if field.annotation in (float, float | None, int, int | None)}
    assert numbers == {name for name, *_ in GATE_RANGES}


def test_celery_coordination_needs_a_redis_broker(tmp_path: Path) -> None:
    assert load(tmp_path).coordination == "folders"  # the default needs no broker
    assert "broker_url is required" in refused(tmp_path, coordination="celery")
    assert "broker_url" in refused(tmp_path, coordination="celery", broker_url="amqp://host//")
    message = refused(tmp_path, coordination="celery", broker_url="redis://h:6379/0", lease_timeout_s=120,
                      visibility_timeout_s=60)
    assert "visibility_timeout_s (60) must exceed lease_timeout_s (120)" in message
    settings = load(tmp_path, coordination="celery", broker_url="rediss://:pw@h:6380/1")
    assert settings.celery_queue == "i2v-watcher" and settings.visibility_timeout_s == 21600
    assert "celery_queue" in refused(tmp_path, celery_queue="../q")


def test_retry_backoff_max_is_at_least_the_first_delay(tmp_path: Path) -> None:
    message = refused(tmp_path, retry_backoff_s=10.0, retry_backoff_max_s=5.0)
    assert "retry_backoff_max_s (5) must be at least retry_backoff_s (10)" in message
    assert load(tmp_path, retry_backoff_s=10.0, retry_backoff_max_s=10.0).retry_backoff_max_s == 10.0


def test_oom_rung_fraction_cannot_be_nan(tmp_path: Path) -> None:
    assert "num_frames" in refused(tmp_path, diffusion={"oom_ladder": [{"num_frames": math.nan}]})


# ---- an OOM rung needs a concrete resolution -----------------------------------------------------
@pytest.mark.parametrize("resolution", ["auto", "AUTO", " auto "])
def test_an_oom_rung_cannot_be_auto(tmp_path: Path, resolution: str) -> None:
    message = refused(tmp_path, diffusion={"oom_ladder": [{"resolution": resolution}]})
    assert "oom_ladder" in message and "never auto" in message


def test_an_oom_rung_takes_a_concrete_resolution(tmp_path: Path) -> None:
    settings = load(tmp_path, diffusion={"oom_ladder": [{"resolution": 384}, {"resolution": "256p"}]})
    assert [rung.resolution for rung in settings.diffusion.oom_ladder] == ["384p", "256p"]


# ---- [models.<name>] tables name diffusion backends --------------------------------------------
KNOWN = ["i2vgen-xl", "preview", "svd", "wan-i2v"]
DIFFUSION = ["i2vgen-xl", "svd", "wan-i2v"]


def test_model_tables_of_known_diffusion_backends_pass(tmp_path: Path) -> None:
    check_model_tables(load(tmp_path), KNOWN, DIFFUSION)
    custom = load(tmp_path, models={"svd": {"model": "/models/svd"}})
    check_model_tables(custom, KNOWN, DIFFUSION)


def test_a_misspelt_model_table_is_named_with_a_suggestion(tmp_path: Path) -> None:
    settings = load(tmp_path, models={"i2vgen_xl": {"model": "/models/i2vgen"}})
    with pytest.raises(StartupError) as caught:
        check_model_tables(settings, KNOWN, DIFFUSION)
    assert str(caught.value) == ("[models.i2vgen_xl] names no backend; did you mean [models.i2vgen-xl]? "
                                 "backends with models: i2vgen-xl, svd, wan-i2v")


def test_an_unknown_model_table_without_a_close_name(tmp_path: Path) -> None:
    settings = load(tmp_path, models={"zeroscope": {"model": "/models/z"}})
    with pytest.raises(StartupError) as caught:
        check_model_tables(settings, KNOWN, DIFFUSION)
    assert str(caught.value) == ("[models.zeroscope] names no backend; "
                                 "backends with models: i2vgen-xl, svd, wan-i2v")


def test_a_model_table_for_a_backend_without_a_model(tmp_path: Path) -> None:
    settings = load(tmp_path, models={"preview": {"model": "/models/p"}})
    with pytest.raises(StartupError, match=r"\[models.preview\].*loads no model.*backends with models: "):
        check_model_tables(settings, KNOWN, DIFFUSION)


def test_a_plugin_backend_may_have_a_model_table(tmp_path: Path) -> None:
    settings = load(tmp_path, models={"my-model": {"model": "/models/mine"}})
    with pytest.raises(StartupError, match="my-model"):
        check_model_tables(settings, KNOWN, DIFFUSION)
    check_model_tables(settings, [*KNOWN, "my-model"], [*DIFFUSION, "my-model"])


# ---- no folder inside another ----------------------------------------------------------------------
def real_base(tmp_path: Path) -> dict[str, str]:
    # Real paths, so the messages show the configured paths unchanged.
    return {name: str(tmp_path.resolve() / name) for name in FOLDERS}


@pytest.mark.parametrize("inner,outer", list(itertools.permutations(FOLDERS, 2)))
def test_no_folder_may_lie_inside_another(tmp_path: Path, inner: str, outer: str) -> None:
    folders = real_base(tmp_path)
    folders[inner] = str(Path(folders[outer]) / "sub" / inner)
    with pytest.raises(StartupError) as caught:
        load(tmp_path, **folders)
    assert f"{inner} ({folders[inner]}) must not lie inside {outer} ({folders[outer]})" in str(caught.value)


@pytest.mark.parametrize("first,second", list(itertools.combinations(FOLDERS, 2)))
def test_no_two_folders_may_be_the_same(tmp_path: Path, first: str, second: str) -> None:
    folders = real_base(tmp_path)
    folders[second] = folders[first] + "/"  # spelt differently, the same folder
    message = refused(tmp_path, **folders)
    assert f"{first} ({folders[first]}) and {second} (" in message and "same folder" in message


def test_symbolic_links_do_not_hide_nesting(tmp_path: Path) -> None:
    folders = real_base(tmp_path)
    Path(folders["work"]).mkdir()
    link = tmp_path.resolve() / "elsewhere"
    link.symlink_to(folders["work"])
    folders["done"] = str(link / "done")
    message = refused(tmp_path, **folders)
    assert f"done ({link / 'done'} -> {folders['work']}/done) must not lie inside work" in message


def test_folders_side_by_side_with_shared_name_prefixes_pass(tmp_path: Path) -> None:
    root = tmp_path.resolve()
    settings = load(tmp_path, inbox=str(root / "in"), outbox=str(root / "inbox"),
                    failed=str(root / "in-failed"), done=str(root / "inbox2"), work=str(root / "in.work"))
    assert os.fspath(settings.outbox) == str(root / "inbox")


# ---- output_template -----------------------------------------------------------------------------
@pytest.mark.parametrize("template", [
    "../{stem}", "{stem}/x", "x/{stem}", ".{stem}", " {stem}", "{stem}\\x", "a..{stem}", "x" * 201,
])
def test_templates_that_make_no_plain_name_are_refused(tmp_path: Path, template: str) -> None:
    message = refused(tmp_path, output_template=template)
    assert "output_template" in message and "not usable" in message


@pytest.mark.parametrize("template", [
    "{stem!r}", "{stem!s}", "{stem.__class__}", "{seed[0]}", "{seed:>300}", "{stem:s}", "{date!a:10}",
    "{}", "{0}", "{user}",
])
def test_only_plain_template_fields_are_allowed(tmp_path: Path, template: str) -> None:
    assert "output_template" in refused(tmp_path, output_template=template)


@pytest.mark.parametrize("template", ["{stem", "stem}", ""])
def test_malformed_templates_are_refused(tmp_path: Path, template: str) -> None:
    assert "output_template" in refused(tmp_path, output_template=template)


@pytest.mark.parametrize("template", [
    "{stem}", "{date}-{time}_{stem}", "{stem}.{seed}.{preset}.{backend}", "{job_id}", "{{{stem}}}",
    "clip {stem} ✓",
])
def test_plain_templates_pass(tmp_path: Path, template: str) -> None:
    assert load(tmp_path, output_template=template).output_template == template
