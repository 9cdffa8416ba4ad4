"""A model's LoRAs ([models.<name>] loras, config/loras.py): loaded once with the model, switched per
job by its quality level.

Each LoRA becomes one named peft adapter on the denoiser it goes into (`transformer`, or Wan 2.2 A14B's
low-noise expert `transformer_2`). A LoRA that every level uses is fused into the weights at load and
its adapter unloaded: nothing ever switches it off, and fused it costs nothing per step. The others
stay adapters: before each job the ones its level uses are switched on at their scale and the rest
off, so a draft with a distilled LoRA and a final without share one resident model, and a job whose
level uses none runs the denoiser exactly as if no LoRA had been loaded.

A file that is missing or holds no LoRA, a LoRA for a denoiser the model lacks, and a LoRA that matches
no module of the model (one made for another model) are StartupErrors naming the setting.

torch, safetensors and diffusers are imported inside the functions: the core install has none of them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from i2v_watcher.backends.drafts import DraftHint
from i2v_watcher.config.loras import LoraSettings
from i2v_watcher.errors import StartupError

if TYPE_CHECKING:
    from i2v_watcher.backends.diffusion import DiffusersBackend
    from i2v_watcher.config.models import ModelSettings

log = structlog.get_logger("i2v_watcher.loras")
DIFFUSERS_FILE = "pytorch_lora_weights.safetensors"  # the name save_lora_weights gives a folder's LoRA


@dataclass(frozen=True)
class DraftLora(DraftHint):
    """A distilled LoRA that would make a backend's draft level fast, and the job fields its `loras`
    entry should carry: what the start-up warning suggests while no LoRA serves the draft level."""

    what: str  # e.g. "a 4-step distilled LoRA (lightx2v's)"
    fields: dict[str, Any] = field(default_factory=dict)  # e.g. {"steps": 4, "guidance_scale": 1.0}

    def setting(self, backend: str) -> str:
        """The `loras` entry as the config would hold it."""
        fields = "".join(f", {key} = {value}" for key, value in self.fields.items())
        return f'[models.{backend}] loras = [{{path = "...", levels = ["draft"]{fields}}}]'

    def served(self, source: ModelSettings) -> bool:
        return any("draft" in lora.levels for lora in source.loras)


@dataclass(frozen=True)
class Lora:
    """One loaded LoRA: its adapter's name, its setting, and whether it was fused into the weights."""

    adapter: str
    settings: LoraSettings
    fused: bool

    def record(self) -> dict[str, Any]:
        return {"path": self.settings.path, "adapter": self.adapter, "scale": self.settings.scale,
                "into": self.settings.into, "mode": "fused" if self.fused else "switched"}


@dataclass(frozen=True)
class Loras:
    """The LoRAs a backend loaded with its model (none: the model as published)."""

    loaded: tuple[Lora, ...] = ()

    def use(self, pipe: Any, level: str) -> dict[str, Any]:
        """Switch on the adapters that `level` uses and every other one off; the job's metadata entry
        (`loras`: those it ran with, fused ones included), or nothing where the model has no LoRAs."""
        if not self.loaded:
            return {}
        switched = [lora for lora in self.loaded if not lora.fused]
        for into in dict.fromkeys(lora.settings.into for lora in switched):
            on = [lora for lora in switched if lora.settings.into == into and level in lora.settings.levels]
            denoiser = getattr(pipe, into)
            if on:
                denoiser.enable_lora()
                denoiser.set_adapters([lora.adapter for lora in on], [lora.settings.scale for lora in on])
            else:
                denoiser.disable_lora()  # exactly the base weights, not a weight of 0 added to them
        used = [lora for lora in self.loaded if lora.fused or level in lora.settings.levels]
        return {"loras": [lora.record() for lora in used]}


@dataclass(frozen=True)
class LoraFile:
    """One `loras` entry with its weights read, before the model loads: a wrong path fails in seconds,
    not after minutes of loading."""

    index: int
    settings: LoraSettings
    path: Path
    state: dict[str, Any]  # the file's tensors

    def where(self, backend: str) -> str:
        return entry_name(backend, self.index)

    @property
    def adapter(self) -> str:  # unique per entry, and a valid peft adapter name (no dots)
        return f"lora{self.index}_{re.sub(r'[^A-Za-z0-9_]', '_', self.path.stem)}"


def read_loras(backend: DiffusersBackend) -> list[LoraFile]:
    """The backend's [models.<name>] loras read from disk; StartupErrors naming the entry."""
    if not backend.source.loras:
        return []
    try:
        import diffusers
    except ImportError:
        pass  # load_pipeline says what to install
    else:
        if not hasattr(getattr(diffusers, backend.pipeline_class, None), "load_lora_weights"):
            raise StartupError(f"[models.{backend.name}] loras: the {backend.name} backend's pipeline "
                               f"({backend.pipeline_class}) takes no LoRAs; remove the setting")
    return [_read(entry_name(backend.name, index), index, lora)
            for index, lora in enumerate(backend.source.loras)]


def entry_name(backend: str, index: int) -> str:
    """How messages name one `loras` entry."""
    return f"[models.{backend}] loras[{index}]"


def _read(where: str, index: int, lora: LoraSettings) -> LoraFile:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = weights_file(lora.path, where)
    try:
        return LoraFile(index, lora, path, load_file(path))
    except (OSError, SafetensorError) as exc:
        raise StartupError(f"{where} path: {path} is not a safetensors file of LoRA weights ({exc})") from exc


def load_loras(backend: str, pipe: Any, files: list[LoraFile]) -> Loras:
    """The LoRAs read by read_loras loaded into the backend's freshly loaded pipeline: those every level
    uses first, fused and unloaded (unloading removes every adapter), then the switched ones."""
    loaded = {file.index: _load(backend, pipe, file, fused=True) for file in files
              if file.settings.every_level}
    for lora in loaded.values():
        pipe.fuse_lora(components=[lora.settings.into], lora_scale=lora.settings.scale,
                       adapter_names=[lora.adapter])
        log.info("LoRA fused into the model's weights at load: every quality level uses it",
                 backend=backend, path=lora.settings.path, scale=lora.settings.scale, into=lora.settings.into)
    if loaded:
        pipe.unload_lora_weights()  # the fused weights stay; the adapters' own copies go
    for file in files:
        if not file.settings.every_level:
            loaded[file.index] = _load(backend, pipe, file, fused=False)
            entry = file.settings
            log.info("LoRA loaded, switched on for the jobs of its quality levels", backend=backend,
                     path=entry.path, scale=entry.scale, into=entry.into, levels=entry.levels)
    return Loras(tuple(loaded[index] for index in sorted(loaded)))


def _load(backend: str, pipe: Any, file: LoraFile, *, fused: bool) -> Lora:
    """One LoRA loaded into the pipeline as a named adapter; a StartupError naming the entry otherwise."""
    where, into = file.where(backend), file.settings.into
    if into not in getattr(pipe, "_lora_loadable_modules", ()) or getattr(pipe, into, None) is None:
        raise StartupError(f"{where} into = {into!r}: the {backend} model has no {into} "
                           "(only Wan 2.2 I2V-A14B has a second expert, transformer_2)")
    second = {"load_into_transformer_2": True} if into == "transformer_2" else {}
    try:
        pipe.load_lora_weights(file.state, adapter_name=file.adapter, **second)
    except (ValueError, RuntimeError, KeyError) as exc:
        raise StartupError(f"{where} path: {file.path} is no LoRA for the {backend} model's {into}: "
                           f"{exc}") from exc
    if file.adapter not in pipe.get_list_adapters().get(into, []):
        raise StartupError(f"{where} path: {file.path} matches no module of the {backend} model's {into} "
                           "(a LoRA made for another model?)")
    return Lora(file.adapter, file.settings, fused)


def weights_file(setting: str, where: str) -> Path:
    """The LoRA's safetensors file: the path itself, or in a folder diffusers' file name, else the
    folder's only .safetensors file."""
    path = Path(setting).expanduser()
    if path.is_file():
        return path
    if not path.is_dir():
        raise StartupError(f"{where} path: {setting!r} does not exist (a .safetensors file of LoRA weights, "
                           "or a folder holding one)")
    if (path / DIFFUSERS_FILE).is_file():
        return path / DIFFUSERS_FILE
    found = sorted(path.glob("*.safetensors"))
    if len(found) != 1:
        held = ", ".join(f.name for f in found) or "none"
        raise StartupError(f"{where} path: the folder {setting!r} must hold {DIFFUSERS_FILE} or a single "
                           f".safetensors file (it holds {held}); name the file itself")
    return found[0]

