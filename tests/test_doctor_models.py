"""`doctor` checks each configured model folder against its backend before start-up: the pipeline it is
indexed as, every component the pipeline needs (config, weights, every shard), the variant, the stored
dtype against `[diffusion] dtype`, and which Wan it is. Real tiny pipelines saved with save_pretrained,
then broken the ways a download or a hand edit breaks them; the real CLI in a process once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import huggingface_hub.constants
import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import REPO, Folders
from i2v_watcher.backends import discover, get
from i2v_watcher.config.settings import Settings, load_settings
from i2v_watcher.ops.findings import Context, Finding
from i2v_watcher.ops.model_check import check_model
from tiny_models import build_wan22_a14b

Edit = Callable[[Path], None]


@pytest.fixture(scope="module")
def wan22(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wan22_a14b(tmp_path_factory.mktemp("models") / "wan22")


@pytest.fixture
def copy_of(wan22: Path, tmp_path: Path) -> Callable[[], Path]:
    def copy() -> Path:
        target = tmp_path / "wan22-copy"
        shutil.copytree(wan22, target)
        return target
    return copy


def settings_for(folders: Folders, model: str, variant: str | None = None, dtype: str = "auto") -> Settings:
    source = {"model": model, **({"variant": variant} if variant else {})}
    discover()
    return load_settings(folders.write_config(backend="wan-i2v", diffusion={"device": "cpu", "dtype": dtype},
                                              models={"wan-i2v": source}))


def model_findings(folders: Folders, model: str, **options: Any) -> list[Finding]:
    """doctor's model check, in-process, on this config."""
    return check_model(Context(settings_for(folders, model, **options), {"wan-i2v": "error"}))


def only(findings: list[Finding], status: str) -> Finding:
    [finding] = [f for f in findings if f.status == status]
    assert finding.fix, finding
    return finding


def edit_index(folder: Path, **changes: Any) -> None:
    path = folder / "model_index.json"
    index = {**json.loads(path.read_text()), **changes}
    path.write_text(json.dumps({k: v for k, v in index.items() if v != "drop"}))


def test_a_complete_folder_says_which_model_and_its_dtypes(folders: Folders, wan22: Path) -> None:
    [ok] = model_findings(folders, str(wan22))  # on the CPU in float32: nothing to note
    assert ok.status == "ok" and ok.data["holds"] == "Wan 2.2 I2V-A14B"
    assert f"wan-i2v: Wan 2.2 I2V-A14B in {wan22}" in ok.message
    assert ok.data["dtypes"] == {"text_encoder": "float32", "transformer": "float32",
                                 "transformer_2": "float32", "vae": "float32"}
    ok, note = model_findings(folders, str(wan22), dtype="bfloat16")
    assert ok.status == "ok" and note.status == "info"
    assert "text_encoder, transformer, transformer_2, vae stored in float32, run in bfloat16" in note.message


@pytest.mark.parametrize(("edit", "said", "fix"), [
    (lambda f: shutil.rmtree(f / "vae"), "no vae/ folder, though model_index.json names vae",
     "copy the model into"),
    (lambda f: (f / "vae" / "config.json").unlink(), "vae holds no config", "copy the model into"),
    (lambda f: (f / "vae" / "diffusion_pytorch_model.safetensors").unlink(),
     "vae has a config.json but no weights", "copy the model into"),
    (lambda f: edit_index(f, text_encoder=[None, None]),
     "model_index.json names no text_encoder, which the pipeline needs", "copy the model into"),
    (lambda f: edit_index(f, boundary_ratio="drop"),
     "has transformer_2 but no boundary_ratio: Wan 2.2 I2V-A14B needs both", "copy the model into"),
    # Without the second expert and its boundary it is a Wan 2.1, which needs the CLIP image encoder.
    (lambda f: edit_index(f, boundary_ratio="drop", transformer_2=[None, None]),
     "model_index.json names no image_encoder, image_processor, which the pipeline needs",
     "copy the model into"),
    (lambda f: edit_index(f, _class_name="CogVideoXPipeline"),
     "holds a CogVideoXPipeline (model_index.json), which the wan-i2v backend does not load (it loads "
     "WanImageToVideoPipeline or WanPipeline)", "point [models.wan-i2v] model at a WanImageToVideoPipeline"),
    (lambda f: edit_index(f, _class_name="WanPipeline"), "holds a text-to-video Wan",
     "`hf download Wan-AI/Wan2.2-I2V-A14B-Diffusers`"),
    (lambda f: (f / "model_index.json").unlink(), "is not a saved diffusers pipeline (no model_index.json)",
     "copy the model into"),
])
def test_a_broken_folder_is_one_error_naming_it(folders: Folders, copy_of: Callable[[], Path], edit: Edit,
                                                said: str, fix: str) -> None:
    folder = copy_of()
    edit(folder)
    found = model_findings(folders, str(folder))
    error = only(found, "error")
    assert said in error.message and str(folder) in error.message, error
    assert fix in (error.fix or ""), error
    assert not [f for f in found if f.status == "ok"]  # nothing says it would load


def test_the_published_ti2v_5b_index_is_accepted(folders: Folders, copy_of: Callable[[], Path]) -> None:
    folder = copy_of()  # TI2V-5B's layout, indexed as WanPipeline as the published folder is
    edit_index(folder, _class_name="WanPipeline", boundary_ratio="drop", transformer_2=[None, None],
               expand_timesteps=True)
    [ok] = model_findings(folders, str(folder))
    assert ok.status == "ok" and ok.data["holds"] == "Wan 2.2 TI2V-5B"


def test_ltx_folders_indexed_as_any_ltx_pipeline_are_accepted(folders: Folders, tmp_path: Path) -> None:
    discover()
    backend = get("ltx-video")(load_settings(folders.config))
    for indexed in ("LTXPipeline", "LTXImageToVideoPipeline", "LTXConditionPipeline"):
        assert backend.index_problems(tmp_path, {"_class_name": indexed}) == []  # type: ignore[attr-defined]
    [problem] = backend.index_problems(tmp_path, {"_class_name": "WanPipeline"})  # type: ignore[attr-defined]
    assert "which the ltx-video backend does not load" in problem.message


def test_a_missing_shard(folders: Folders, copy_of: Callable[[], Path]) -> None:
    from diffusers import WanTransformer3DModel

    folder = copy_of()
    transformer = WanTransformer3DModel.from_pretrained(folder / "transformer")
    shutil.rmtree(folder / "transformer")
    transformer.save_pretrained(folder / "transformer", max_shard_size="60KB")
    [ok] = model_findings(folders, str(folder))
    assert ok.status == "ok", ok  # all shards there: the dtype is read from the first
    assert ok.data["dtypes"]["transformer"] == "float32"
    shards = sorted((folder / "transformer").glob("*-of-*.safetensors"))
    assert len(shards) > 1
    shards[1].unlink()
    error = only(model_findings(folders, str(folder)), "error")
    assert f"transformer: 1 of the {len(shards)} shards its index names are missing ({shards[1].name})" in (
        error.message)


def test_variants(folders: Folders, copy_of: Callable[[], Path]) -> None:
    folder = copy_of()
    weights = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    weights.rename(weights.with_name("diffusion_pytorch_model.fp16.safetensors"))
    error = only(model_findings(folders, str(folder)), "error")
    assert "transformer has no plain weights, only the variant(s) fp16" in error.message
    assert error.fix == 'set variant = "fp16" in [models.wan-i2v]'
    # With the variant set, the other components load their plain weights (as diffusers falls back).
    [ok] = model_findings(folders, str(folder), variant="fp16")
    assert ok.status == "ok" and "(variant fp16)" in ok.message
    component, folder_wide = [f for f in model_findings(folders, str(folder), variant="bf16")
                              if f.status == "error"]
    assert "transformer has neither bf16 nor plain weights, only the variant(s) fp16" in component.message
    assert "has no weights of the variant 'bf16' (it has: plain, fp16)" in folder_wide.message
    assert "remove `variant` from [models.wan-i2v]" in (folder_wide.fix or "")


def test_stored_dtypes_against_the_configured_one(folders: Folders, copy_of: Callable[[], Path]) -> None:
    folder = copy_of()
    for component, dtype in (("transformer", torch.bfloat16), ("transformer_2", torch.bfloat16),
                             ("text_encoder", torch.float8_e4m3fn)):
        path = next((folder / component).glob("*.safetensors"))
        save_file({k: v.to(dtype) for k, v in load_file(path).items()}, path)
    found = model_findings(folders, str(folder), dtype="float16")
    ok = found[0]
    assert ok.status == "ok" and ok.data["dtypes"] == {
        "text_encoder": "float8", "transformer": "bfloat16", "transformer_2": "bfloat16", "vae": "float32"}
    warning = only(found, "warning")
    assert "transformer, transformer_2 stored in bfloat16, run with [diffusion] dtype = 'float16'" in (
        warning.message)
    assert "overflow" in warning.message and 'dtype = "bfloat16"' in (warning.fix or "")
    notes = [f.message for f in found if f.status == "info"]
    assert any("text_encoder is a float8 checkpoint" in note for note in notes), notes
    assert any("vae stored in float32, run in float16" in note for note in notes), notes
    found = model_findings(folders, str(folder))  # auto on the CPU: float32
    notes = [f.message for f in found if f.status == "info"]
    assert any("transformer, transformer_2 stored in 16 bits, run in float32" in note for note in notes)


@pytest.mark.slow  # a real process: it imports torch, diffusers and transformers (about 9 s of CPU)
def test_the_real_cli_on_a_hub_snapshot_with_a_missing_component(folders: Folders, wan22: Path,
                                                                  tmp_path: Path) -> None:
    """A hub id is checked in its Hugging Face cache snapshot, and the fix is the download command."""
    cache = tmp_path / "hub"
    repo = cache / "models--tiny-org--wan22"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    snapshot = repo / "snapshots" / ("0" * 40)
    shutil.copytree(wan22, snapshot)
    shutil.rmtree(snapshot / "transformer_2")  # an interrupted `hf download`
    config = folders.write_config(backend="wan-i2v", diffusion={"device": "cpu"},
                                  models={"wan-i2v": {"model": "tiny-org/wan22"}})
    environment = {k: v for k, v in os.environ.items() if not k.startswith("I2V_")}
    run = subprocess.run([sys.executable, "-m", "i2v_watcher", "doctor", "--config", str(config)],
                         capture_output=True, text=True, cwd=REPO, timeout=120,
                         env={**environment, "PYTHONPATH": str(REPO), "HF_HUB_CACHE": str(cache),
                              "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 1, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    [index] = [i for i, line in enumerate(lines) if line.startswith("ERROR model")]
    said, fix = lines[index], lines[index + 1]
    assert f"{snapshot}: no transformer_2/ folder, though model_index.json names transformer_2" in said
    assert "fix: fetch what is missing, as the service's user: `hf download tiny-org/wan22`" in fix


def test_a_hub_snapshot_in_process(folders: Folders, wan22: Path, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot = tmp_path / "hub" / "models--tiny-org--wan22" / "snapshots" / ("1" * 40)
    shutil.copytree(wan22, snapshot)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("1" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    [ok] = model_findings(folders, "tiny-org/wan22")
    assert ok.status == "ok" and f"in the Hugging Face cache snapshot {snapshot}" in ok.message
    # The cache links each file to its blob; a blob not (yet) fetched leaves the link dangling.
    weights = snapshot / "vae" / "diffusion_pytorch_model.safetensors"
    weights.unlink()
    weights.symlink_to(tmp_path / "hub" / "blobs" / "never-fetched")
    error = only(model_findings(folders, "tiny-org/wan22"), "error")
    assert f"{snapshot / 'vae'} has a config.json but no weights" in error.message
    assert error.fix == "fetch what is missing, as the service's user: `hf download tiny-org/wan22`"


@pytest.mark.parametrize(("patch_size_t", "said"), [(None, "CogVideoX-5B-I2V"),
                                                    (2, "CogVideoX1.5-5B-I2V")])
def test_which_cogvideox_a_folder_holds(folders: Folders, tmp_path: Path, patch_size_t: int | None,
                                        said: str) -> None:
    from diffusers import CogVideoXTransformer3DModel

    CogVideoXTransformer3DModel(num_attention_heads=2, attention_head_dim=16, in_channels=8, out_channels=4,
                                time_embed_dim=2, text_embed_dim=32, num_layers=1, patch_size_t=patch_size_t,
                                ).save_config(tmp_path / "transformer")
    discover()
    backend = get("cogvideox-i2v")(load_settings(folders.config))
    assert backend.describe_folder(tmp_path, {}) == said  # type: ignore[attr-defined]
