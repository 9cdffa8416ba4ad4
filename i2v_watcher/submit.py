"""`submit`: drop an image and its sidecar into the inbox safely (hidden temporary names, then renames,
sidecar first), so the daemon never sees a half-written job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from i2v_watcher.config import Settings
from i2v_watcher.errors import StartupError
from i2v_watcher.fsutil import copy_atomic, free_name, write_bytes_atomic
from i2v_watcher.spec import JobSpec, check_output_name, describe_validation_error
from i2v_watcher.watch import IMAGE_SUFFIXES


def build_sidecar(prompt: str | None, assignments: list[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if prompt is not None:
        values["prompt"] = prompt
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise StartupError(f"--set expects key=value, got {item!r}")
        values[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
    try:
        JobSpec.model_validate(values)
    except ValidationError as exc:
        raise StartupError(describe_validation_error(exc)) from exc
    return values


def submit(settings: Settings, image: Path, sidecar: dict[str, Any], name: str | None = None) -> Path:
    if image.suffix.lower() not in IMAGE_SUFFIXES:
        raise StartupError(f"{image} is not a {', '.join(IMAGE_SUFFIXES)} image")
    if not image.is_file():
        raise StartupError(f"{image} is not a file")
    if not settings.inbox.is_dir():
        raise StartupError(f"the inbox {settings.inbox} does not exist (is the share mounted?)")
    try:
        stem = check_output_name(name or image.stem)
    except ValueError as exc:
        raise StartupError(f"job name {name or image.stem!r}: {exc}") from exc
    stem = free_name(settings.inbox, stem, [image.suffix, ".yaml", ".yml"])
    if sidecar:
        text = yaml.safe_dump(sidecar, allow_unicode=True, sort_keys=False)
        write_bytes_atomic(settings.inbox / f"{stem}.yaml", text.encode())
    target = settings.inbox / f"{stem}{image.suffix}"
    copy_atomic(image, target)
    return target
