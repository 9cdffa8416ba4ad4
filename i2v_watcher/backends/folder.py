"""What a saved diffusers pipeline folder holds, read from its files alone: model_index.json, each
component's subfolder, its weight files (single or sharded, plain or of a variant) and their dtype, from
the safetensors header. No weights are loaded and neither torch nor diffusers is imported here, so
`doctor` can tell in a second what `from_pretrained` would fail on after minutes of loading.

The rules follow diffusers 0.42's loader: a component named in model_index.json (not `[null, null]`)
is loaded from its subfolder; with a `variant`, a component without that variant falls back to its
plain weights, but a folder with no file of the variant at all is refused; without one, a component that
has only variant files is refused."""

from __future__ import annotations

import json
import os
import re
import struct
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from i2v_watcher.errors import StartupError

# What each kind of component saves as its config: a model (diffusers' or transformers') config.json,
# and beside it its weights; a scheduler, a tokenizer or an image processor only a config.
MODEL_CONFIG = "config.json"
OTHER_CONFIGS = ("scheduler_config.json", "tokenizer_config.json", "tokenizer.json",
                 "preprocessor_config.json", "processor_config.json")
WEIGHT_SUFFIXES = (".safetensors", ".bin")
SHARD = re.compile(r"-\d+-of-\d+$")  # diffusion_pytorch_model.fp16-00001-of-00003.safetensors
INDEX = re.compile(r"^(?P<base>[^.]+)\.(?P<format>safetensors|bin)\.index(?:\.(?P<variant>[^.]+))?\.json$")
# safetensors' dtype codes as the config spells dtypes; float8 of either kind is one "float8".
DTYPES = {"F64": "float64", "F32": "float32", "BF16": "bfloat16", "F16": "float16", "F8_E4M3": "float8",
          "F8_E5M2": "float8", "F8_E4M3FN": "float8", "F8_E8M0": "float8"}
PLAIN = "plain"  # how a weight set without a variant is named in messages

Severity = Literal["blocking", "warning", "note"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with (or worth knowing about) a model folder: what, and what to do about it.
    `blocking`: from_pretrained would fail on it; `warning`: it loads but may misbehave; `note`: it
    loads and runs, at some cost."""

    message: str
    fix: str
    severity: Severity = "blocking"


@dataclass(frozen=True)
class FolderCheck:
    """A model folder as `doctor` reports it: which model it holds, each component's stored dtype, and
    what would stop (or hurt) loading it."""

    model: str
    dtypes: dict[str, str] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)


@dataclass(frozen=True)
class WeightSet:
    """One component's weights of one variant and format: a single file, or an index and its shards."""

    variant: str | None
    format: str  # "safetensors" or "bin"
    files: tuple[Path, ...]  # the single file, or the shards the index names (present or not)
    missing: tuple[str, ...] = ()  # shards the index names that are not in the folder

    @property
    def label(self) -> str:
        return self.variant or PLAIN


def holds(config: Mapping[str, Any], component: str) -> bool:
    """Whether a pipeline config (model_index.json, or a loaded pipeline's) names this component: an
    absent optional one is `[null, null]` there."""
    entry = config.get(component)
    return isinstance(entry, (list, tuple)) and bool(entry) and entry[0] is not None


def listed_components(index: Mapping[str, Any]) -> list[str]:
    """The components model_index.json names (its other keys are the pipeline's settings)."""
    return [key for key in index if not key.startswith("_") and holds(index, key)]


def pipeline_needs(pipeline_class: str) -> set[str] | None:
    """The components a diffusers pipeline class cannot be built without: its __init__'s parameters
    less its `_optional_components`, by diffusers' own introspection (None: diffusers or the class is not
    importable, which the diffusion-extra check reports)."""
    try:
        import diffusers

        cls = getattr(diffusers, pipeline_class)
        expected, _ = diffusers.DiffusionPipeline._get_signature_keys(cls)
    except Exception:
        return None
    return set(expected) - set(cls._optional_components)


def model_folder(where: str) -> Path | None:
    """The folder that holds the pipeline: a local one, or a hub id's snapshot in the Hugging Face cache
    (None when its model_index.json is not cached)."""
    if Path(where).is_dir():
        return Path(where)
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(where, "model_index.json")
    return Path(found).parent if isinstance(found, str) else None


def read_index(folder: Path) -> dict[str, Any]:
    """model_index.json as a dict; a StartupError saying what is wrong with it."""
    path = folder / "model_index.json"
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StartupError(f"{folder} is not a saved diffusers pipeline (no model_index.json)") from None
    except (OSError, ValueError) as exc:
        raise StartupError(f"{path} cannot be read: {exc}") from exc
    if not isinstance(index, dict):
        raise StartupError(f"{path} is not a JSON object")
    return index


def weight_sets(component: Path) -> list[WeightSet]:
    """Every set of weights in a component's folder, safetensors first (as diffusers prefers them)."""
    names = {entry.name for entry in component.iterdir()} if component.is_dir() else set()
    found: list[WeightSet] = []
    for name in sorted(names):
        if (index := INDEX.match(name)) is not None:
            shards = _shards(component / name)
            # is_file, not the listing: in the Hugging Face cache a file not yet fetched is a dangling link
            found.append(WeightSet(index["variant"], index["format"], tuple(component / s for s in shards),
                                   tuple(s for s in shards if not (component / s).is_file())))
        elif (name.endswith(WEIGHT_SUFFIXES) and not SHARD.search(name.rsplit(".", 1)[0])
              and (component / name).is_file()):
            stem, _, suffix = name.rpartition(".")
            variant = stem.partition(".")[2] or None
            found.append(WeightSet(variant, suffix, (component / name,)))
    return sorted(found, key=lambda weights: weights.format != "safetensors")


def _shards(index: Path) -> list[str]:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
    except (OSError, ValueError, AttributeError):
        return [f"(the shards of the unreadable {index.name})"]
    return sorted(set(weight_map.values())) if isinstance(weight_map, dict) else []


def safetensors_dtype(path: Path) -> str | None:
    """The dtype most of a safetensors file's bytes are in, from its header alone: 8 bytes of header
    length (little-endian), then a JSON table of every tensor's dtype and byte range. None when the
    file is not a readable safetensors file. (The `safetensors` package reads the same header, but only
    with a tensor framework to hand; this needs neither.)"""
    try:
        with path.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > 100 * 2**20:  # not a header a real checkpoint has
                return None
            header = json.loads(handle.read(length))
        sizes: Counter[str] = Counter()
        for name, tensor in header.items():
            if name != "__metadata__":
                start, end = tensor["data_offsets"]
                sizes[DTYPES.get(str(tensor["dtype"]), str(tensor["dtype"]).lower())] += int(end) - int(start)
    except (OSError, ValueError, TypeError, KeyError, AttributeError, struct.error):
        return None  # not a safetensors file (or a truncated one): its dtype is "unknown"
    return sizes.most_common(1)[0][0] if sizes else None


def component_weights(folder: Path, component: str, variant: str | None, refetch: str,
                      table: str) -> tuple[WeightSet | None, list[Problem]]:
    """The weights of `component` that from_pretrained would load with `variant`, and the problems that
    would stop it (a missing folder, config, weights or shard)."""
    where = folder / component
    if not where.is_dir():
        return None, [Problem(f"{folder}: no {component}/ folder, though model_index.json names "
                              f"{component}: the download is incomplete", refetch)]
    names = set(os.listdir(where))
    if MODEL_CONFIG not in names:
        if not names.intersection(OTHER_CONFIGS):
            return None, [Problem(f"{where} holds no config (config.json, scheduler_config.json, "
                                  "tokenizer_config.json, …)", refetch)]
        return None, []  # a scheduler, tokenizer or processor: a config and no weights
    sets = weight_sets(where)
    if not sets:
        return None, [Problem(f"{where} has a config.json but no weights (*.safetensors, *.bin)", refetch)]
    chosen = ([s for s in sets if s.variant == variant] if variant else []) or [
        s for s in sets if s.variant is None]
    if not chosen:
        held = ", ".join(sorted({s.label for s in sets}))
        wanted = f"neither {variant} nor plain weights" if variant else "no plain weights"
        return None, [Problem(f"{where} has {wanted}, only the variant(s) {held}",
                              f'set variant = "{sets[0].label}" in {table}')]
    weights = chosen[0]
    if weights.missing:
        return weights, [Problem(f"{where}: {len(weights.missing)} of the {len(weights.files)} shards its "
                                 f"index names are missing ({', '.join(weights.missing[:3])})", refetch)]
    return weights, []


def variants_held(folder: Path, components: list[str]) -> list[str]:
    """Every variant the weights of these components come in ("plain" for none)."""
    labels = {weights.label for name in components for weights in weight_sets(folder / name)}
    return sorted(labels, key=lambda label: (label != PLAIN, label))


def run_dtype(dtype: str, device: str) -> str:
    """The dtype the model runs in, as `[diffusion] dtype` and `device` say, without asking torch: `auto`
    is float32 on the CPU and bfloat16 on a GPU (float16 on one without bfloat16, which runs the same
    16-bit weights)."""
    if dtype != "auto":
        return dtype
    return "float32" if device == "cpu" else "bfloat16"


def dtype_notes(folder: Path, stored: Mapping[str, str], run: str) -> list[Problem]:
    """What the weights' stored dtypes mean for running in `run`: loading converts them, so each case
    works, at a cost worth knowing."""
    by_dtype: dict[str, list[str]] = {}
    for component, dtype in stored.items():
        by_dtype.setdefault(dtype, []).append(component)
    notes: list[Problem] = []
    setting = f"[diffusion] dtype = {run!r}"
    if run != "float32" and (wide := by_dtype.get("float32")):
        notes.append(Problem(f"{folder}: {', '.join(wide)} stored in float32, run in {run}: fine (converted "
                             "on load), but twice the download and disk of a 16-bit copy",
                             "nothing to do; a 16-bit variant of the weights, where one is published, "
                             "loads faster", "note"))
    if run == "float32" and (narrow := by_dtype.get("bfloat16", []) + by_dtype.get("float16", [])):
        notes.append(Problem(f"{folder}: {', '.join(narrow)} stored in 16 bits, run in float32: twice the "
                             "memory, no more precision", 'set [diffusion] dtype = "bfloat16" on a GPU '
                             "(float32 is for the CPU)", "note"))
    if run == "float16" and (bf16 := by_dtype.get("bfloat16")):
        notes.append(Problem(f"{folder}: {', '.join(bf16)} stored in bfloat16, run with {setting}: a model "
                             "trained in bfloat16 may overflow in float16 (NaNs: black or noise frames)",
                             'set [diffusion] dtype = "bfloat16" (or "auto") on a GPU that has it',
                             "warning"))
    if fp8 := by_dtype.get("float8"):
        notes.append(Problem(f"{folder}: {', '.join(fp8)} is a float8 checkpoint: from_pretrained converts "
                             f"it to {run} on load, so none of float8's memory is saved",
                             "nothing to do if it fits; for float8 on the GPU use the 16-bit weights with "
                             "a quantization the backend supports", "note"))
    return notes


def folder_problems(folder: Path, index: Mapping[str, Any], needed: set[str] | None, variant: str | None,
                    refetch: str, table: str) -> tuple[dict[str, str], list[Problem]]:
    """Every component's weights checked as from_pretrained would load them: the stored dtype of each
    (from one weight file), and the problems. `needed`: the components the pipeline class cannot do
    without (None: unknown, as without diffusers); `table`: the config table that sets the variant."""
    listed = listed_components(index)
    absent = sorted((needed or set()) - set(listed))
    problems = [Problem(f"{folder}: model_index.json names no {', '.join(absent)}, which the pipeline "
                        "needs", refetch)] if absent else []
    stored: dict[str, str] = {}
    for component in listed:
        weights, found = component_weights(folder, component, variant, refetch, table)
        problems += found
        if weights is not None and not found:
            stored[component] = (safetensors_dtype(weights.files[0]) or "unknown"
                                 if weights.format == "safetensors" else "unknown (.bin)")
    if variant and variant not in (held := variants_held(folder, listed)):
        has = ", ".join(held) or "none"
        problems.append(Problem(f"{folder} has no weights of the variant {variant!r} (it has: {has})",
                                f"remove `variant` from {table} (or set it to one the folder has), or "
                                "download that variant"))
    return stored, problems



def class_problems(folder: Path, index: Mapping[str, Any], backend: str, accepted: tuple[str, ...]
                   ) -> list[Problem]:
    """model_index.json names a pipeline class that `backend` does not load (the first of `accepted`
    is its own)."""
    indexed = index.get("_class_name")
    if indexed in accepted:
        return []
    return [Problem(f"{folder} holds a {indexed} (model_index.json), which the {backend} backend does "
                    f"not load (it loads {' or '.join(accepted)})",
                    f"point [models.{backend}] model at a {accepted[0]} model")]


def refetch_hint(model: str, folder: Path) -> str:
    """How to get a model's missing files back: from the hub for a hub id, copied again for a folder."""
    if not Path(os.path.expanduser(model)).is_dir():
        return f"fetch what is missing, as the service's user: `hf download {model}`"
    return (f"copy the model into {folder} again (a published model: `hf download <its hub id> "
            f"--local-dir {folder}`)")
