"""The submit form: its fields come from the sidecar model (with the config's defaults and the model's
limits shown), what it sends is validated exactly as a sidecar is, and the job is written into the
inbox by `submit`, as `i2v-watcher submit` writes it.

The uploaded image is checked by its content (PNG, JPEG or WebP, whatever its name says), under the
daemon's own pixel limit, and named after the format it really is; it is held outside the inbox until
`submit` installs it with a rename, so nothing half-written is ever visible there.
"""

from __future__ import annotations

import tempfile
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from annotated_types import Ge, Gt, Le, MaxLen
from PIL import Image, UnidentifiedImageError

from i2v_watcher import backends
from i2v_watcher.config.settings import Settings
from i2v_watcher.errors import JobError, StartupError
from i2v_watcher.explain.core import number
from i2v_watcher.job.spec import JobSpec, load_yaml, safe_stem
from i2v_watcher.media.images import FORMATS
from i2v_watcher.ops.submit import submit

SUFFIX_OF = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp"}
TABLES = ("backend_options", "postprocess_overrides")  # YAML mappings, typed into a text area
NUMBERS = {"num_frames": int, "fps": float, "steps": int, "guidance_scale": float, "seed": int,
           "decode_chunk_size": int, "priority": int}
HELP = {
    "prompt": "what should happen: subject + action + direction/speed + surroundings",
    "negative_prompt": "what to avoid",
    "resolution": "512p, 768p, 1024p, a short side in pixels, or auto",
    "seed": "empty: a random seed (recorded in the clip's metadata)",
    "backend": "the model; empty: the daemon's default",
    "postprocess": "one output per preset, from one generation",
    "output_name": "the clip's name in the outbox; empty: the image's name",
    "priority": "higher is taken first; 0 is normal",
    "quality": "draft (quick look), standard or final: the steps, frames and size the config gives each",
    "decode_chunk_size": "frames decoded at once; empty: the backend's default",
    "backend_options": "a YAML mapping the backend checks, e.g. {motion: zoom-in}",
    "postprocess_overrides": "a YAML mapping of step overrides, e.g. {encode: {crf: 20}, fade: {in_s: 0.5}}",
}


@dataclass(frozen=True)
class FormField:
    name: str
    kind: str  # text, textarea, number, select, presets, yaml
    default: Any
    limits: str
    help: str
    step: str = "any"
    low: float | None = None
    high: float | None = None
    max_length: int | None = None


def _constraints(annotation: Any) -> list[Any]:
    found: list[Any] = []
    for meta in getattr(annotation, "__metadata__", ()):
        found += getattr(meta, "metadata", [meta])
    for arg in typing.get_args(annotation):
        found += _constraints(arg)
    return found


def _number(bound: Any) -> float:
    return bound if isinstance(bound, int) else float(bound)  # a seed's 2**63-1 stays exact


def fields(settings: Settings) -> list[FormField]:
    defaults = settings.defaults.model_dump()
    out = []
    for name, info in JobSpec.model_fields.items():
        if name == "draft":  # written by `approve` alone
            continue
        found = _constraints(info.annotation)
        low = next((_number(c.ge) for c in found if isinstance(c, Ge)), None)
        low = next((_number(c.gt) for c in found if isinstance(c, Gt)), low)
        high = next((_number(c.le) for c in found if isinstance(c, Le)), None)
        max_length = next((c.max_length for c in found if isinstance(c, MaxLen)), None)
        kind = ("textarea" if name in ("prompt", "negative_prompt") else "yaml" if name in TABLES
                else "number" if name in NUMBERS else "presets" if name == "postprocess"
                else "select" if name == "backend" else "text")
        limits = ""
        if low is not None and high is not None:
            limits = f"{'> ' if any(isinstance(c, Gt) for c in found) else ''}{number(low)} to {number(high)}"
        elif max_length is not None and kind == "textarea":
            limits = f"at most {max_length} characters"
        out.append(FormField(name, kind, defaults.get(name), limits, HELP.get(name, ""),
                             "1" if NUMBERS.get(name) is int else "any", low, high, max_length))
    return out


def backends_offered(settings: Settings) -> list[str]:
    """What the form's backend list offers: this config's backends and every registered backend with a
    model (another worker of the share may have loaded it; submit warns when none has)."""
    backends.discover(settings.plugins)
    loaded = {settings.auto_backend, "preview"} if "auto" in settings.resident else set()
    configured = {name for name in [*settings.resident, *settings.swap_backends] if name != "auto"}
    return sorted(loaded | configured | set(backends.with_models()))


def sidecar_from(form: Any) -> dict[str, Any]:
    """The form's non-empty fields as sidecar values of the types a YAML sidecar would give; what
    cannot be converted is a StartupError naming the field."""
    values: dict[str, Any] = {}
    for name in JobSpec.model_fields:
        if name == "postprocess":
            chosen = [str(v) for v in form.getlist("postprocess") if str(v).strip()]
            if chosen:
                values[name] = chosen[0] if len(chosen) == 1 else chosen
            continue
        raw = form.get(name)
        if not isinstance(raw, str) or not raw.strip():
            continue
        if name in NUMBERS:
            try:
                values[name] = NUMBERS[name](raw.strip())
            except ValueError:
                kind = "a whole number" if NUMBERS[name] is int else "a number"
                raise StartupError(f"{name}: must be {kind} (got {raw!r})") from None
        elif name in TABLES:
            try:
                table = load_yaml(raw.encode())
            except JobError as exc:
                raise StartupError(f"{name}: {exc.message}") from exc
            if not isinstance(table, dict):
                raise StartupError(f"{name}: must be a YAML mapping such as {{key: value}}")
            values[name] = table
        else:
            values[name] = raw if name in ("prompt", "negative_prompt") else raw.strip()
    return values


def submit_upload(settings: Settings, upload: BinaryIO, filename: str, name: str,
                  sidecar: dict[str, Any], warn: Callable[[str], None] | None = None) -> Path:
    """Check the uploaded image by content and drop it with its sidecar into the inbox; its path there.
    StartupError with a message for the person when anything is refused; `warn` hears what does not
    stop the job (no live worker offers its backend yet)."""
    limit = min(settings.web_upload_max_mb * 1024 * 1024, settings.max_image_bytes)
    job_name = name.strip() or safe_stem(Path(filename or "upload").stem)
    with tempfile.TemporaryDirectory(prefix="i2v-web-") as folder:
        held = Path(folder) / "upload"
        with open(held, "wb") as out:
            copied = _copy_capped(upload, out, limit)
        if copied == 0:
            raise StartupError("no image: choose a PNG, JPEG or WebP file")
        if copied > limit:
            raise StartupError(f"the image is larger than {limit // (1024 * 1024)} MiB")
        suffix = _check_image(settings, held)
        image = held.rename(held.with_name(f"upload{suffix}"))  # submit names the job job_name
        return submit(settings, image, sidecar, job_name, warn=warn)


def _copy_capped(source: BinaryIO, target: BinaryIO, limit: int) -> int:
    copied = 0
    while copied <= limit:
        block = source.read(1024 * 1024)
        if not block:
            break
        target.write(block)
        copied += len(block)
    return copied


def _check_image(settings: Settings, path: Path) -> str:
    """The suffix of the format the upload really is, from its header alone (the pixel limit included):
    the one full decode is submit's own check of the job, as the daemon will load it."""
    try:
        with open(path, "rb") as handle, Image.open(handle, formats=FORMATS) as probe:
            fmt, (width, height) = probe.format or "", probe.size
    except UnidentifiedImageError:
        raise StartupError("not a PNG, JPEG or WebP image (checked by its content, whatever its name "
                           "says)") from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise StartupError(f"the image cannot be read: {exc}") from exc
    if width * height > settings.max_image_pixels:
        raise StartupError(f"the image is {width}x{height} = {width * height} pixels, over the limit of "
                           f"{settings.max_image_pixels} (max_image_pixels)")
    return SUFFIX_OF.get(fmt, ".png")
