"""`submit`: drop an image and its sidecar into the inbox safely, so the daemon never sees a half-written
job and two submits never share a name: the job is validated first, its name reserved, then each file
appears complete under a hidden temporary name and one rename, sidecar first."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from i2v_watcher import backends
from i2v_watcher.backends.base import backend_options
from i2v_watcher.config import Settings
from i2v_watcher.errors import JobError, StartupError
from i2v_watcher.fsutil import copy_atomic, release_name, reserve_name, write_bytes_atomic
from i2v_watcher.generate import check_fields
from i2v_watcher.postprocess import build_chains
from i2v_watcher.spec import JobSpec, check_output_name, describe_validation_error, resolve
from i2v_watcher.watch import IMAGE_SUFFIXES, SIDECAR_SUFFIXES


def build_sidecar(prompt: str | None, assignments: list[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if prompt is not None:
        values["prompt"] = prompt
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise StartupError(f"--set expects key=value, got {item!r}")
        values[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
    _spec(values)
    return values


def _spec(sidecar: dict[str, Any]) -> JobSpec:
    try:
        return JobSpec.model_validate(sidecar)
    except ValidationError as exc:
        raise StartupError(describe_validation_error(exc)) from exc


def check_job(settings: Settings, sidecar: dict[str, Any]) -> None:
    """Refuse now what the daemon would refuse after claiming the job: unknown presets, refused
    overrides, a backend this config does not load, fields and `backend_options` that backend cannot
    take (all declared on its class: no model is loaded for this)."""
    spec = _spec(sidecar)
    _check_backend(settings, spec.backend)
    name = spec.backend or settings.backend
    params = resolve(spec, settings.defaults, backend=name, seed=0)
    try:
        build_chains(settings, params)
        if name != "auto":
            backends.discover(settings.plugins)
            backend = backends.get(name)
            check_fields(backend, params)
            if backend.options_model is not None:
                backend_options(backend.options_model, params)
    except JobError as exc:
        raise StartupError(f"{exc.message} ({exc.hint})" if exc.hint else exc.message) from exc


def _check_backend(settings: Settings, backend: str | None) -> None:
    # `auto` resolves at the daemon's start-up, to the auto backend or else the preview.
    loaded = {settings.auto_backend, "preview"} if "auto" in settings.resident else set()
    loaded.update(name for name in settings.resident if name != "auto")
    if backend is not None and backend not in loaded:
        raise StartupError(f"backend {backend!r} is not loaded by the daemon "
                           f"(resident backends: {', '.join(sorted(loaded))}; the `backends` setting)")


def clash_suffixes(*own: str) -> list[str]:
    """Every suffix a job's file can have in the inbox, so that a new job never pairs with another
    job's image or sidecar; both cases, as the watcher compares suffixes case-blind."""
    suffixes = [*own, *IMAGE_SUFFIXES, *SIDECAR_SUFFIXES]
    return list(dict.fromkeys(s for suffix in suffixes for s in (suffix, suffix.lower(), suffix.upper())))


def new_owner(kind: str) -> str:
    """A reservation owner unique across processes and hosts sharing the inbox, readable in a stale
    marker (which host and process left it)."""
    return f"{kind}-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"


def submit(settings: Settings, image: Path, sidecar: dict[str, Any], name: str | None = None) -> Path:
    """Put one job into the inbox under a free name (name-1, name-2… when taken); its image's path."""
    stem = _check_request(settings, image, name)
    check_job(settings, sidecar)
    owner = new_owner("submit")
    stem = reserve_name(settings.inbox, stem, clash_suffixes(image.suffix), owner)
    try:
        return _write_job(settings.inbox, stem, image, sidecar)
    finally:
        release_name(settings.inbox, stem, owner)


def _check_request(settings: Settings, image: Path, name: str | None) -> str:
    if image.suffix.lower() not in IMAGE_SUFFIXES:
        raise StartupError(f"{image} is not a {', '.join(IMAGE_SUFFIXES)} image")
    if not image.is_file():
        raise StartupError(f"{image} is not a file")
    if not settings.inbox.is_dir():
        raise StartupError(f"the inbox {settings.inbox} does not exist (is the share mounted?)")
    try:
        return check_output_name(name or image.stem)
    except ValueError as exc:
        raise StartupError(f"job name {name or image.stem!r}: {exc}") from exc


def _write_job(inbox: Path, stem: str, image: Path, sidecar: dict[str, Any]) -> Path:
    """The sidecar first, the image last: the image is what makes the job visible as complete. A job
    that cannot be written whole leaves nothing behind."""
    written: list[Path] = []
    try:
        if sidecar:
            text = yaml.safe_dump(sidecar, allow_unicode=True, sort_keys=False)
            write_bytes_atomic(inbox / f"{stem}.yaml", text.encode(), replace=False)
            written.append(inbox / f"{stem}.yaml")
        target = inbox / f"{stem}{image.suffix}"
        copy_atomic(image, target, replace=False)
    except BaseException:
        for path in written:
            with contextlib.suppress(FileNotFoundError):  # the daemon may have taken it meanwhile
                path.unlink()
        raise
    return target
