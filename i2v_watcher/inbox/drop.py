"""Putting a job into the inbox from a program (`submit`, `retry`, `approve`): under a name no other
job's file takes (reserved first, so two writers never pick the same), the sidecar before the image."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from i2v_watcher.fs.atomic import copy_atomic, safe_subdir, write_bytes_atomic
from i2v_watcher.fs.reservations import release_name, reserve_name
from i2v_watcher.inbox.scan_cache import IMAGE_SUFFIXES, SIDECAR_SUFFIXES


def clash_suffixes(*own: str) -> list[str]:
    """Every suffix a job's file can have in the inbox, so that a new job never pairs with another
    job's image or sidecar; both cases, as the watcher compares suffixes case-blind."""
    suffixes = [*own, *IMAGE_SUFFIXES, *SIDECAR_SUFFIXES]
    return list(dict.fromkeys(s for suffix in suffixes for s in (suffix, suffix.lower(), suffix.upper())))


def new_owner(kind: str) -> str:
    """A reservation owner unique across processes and hosts sharing the inbox, readable in a stale
    marker (which host and process left it)."""
    return f"{kind}-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"


def queue_job(inbox: Path, key: PurePosixPath, image: Path, sidecar: dict[str, Any], kind: str) -> Path:
    """A new job at `key` (its folder and stem under the inbox; `name-1`… when that name is taken
    meanwhile): `image` copied, `sidecar` written; `kind` names the writer in its reservation."""
    target = safe_subdir(inbox, key.parent)
    suffix = image.suffix
    owner = new_owner(kind)
    stem = reserve_name(target, key.name, clash_suffixes(suffix), owner)
    try:
        return write_job(target, stem, image, suffix, sidecar)
    finally:
        release_name(target, stem, owner)


def write_job(inbox: Path, stem: str, image: Path, suffix: str, sidecar: dict[str, Any]) -> Path:
    """The sidecar first, the image last: the image is what makes the job visible as complete. A job
    that cannot be written whole leaves nothing behind."""
    written: list[Path] = []
    try:
        if sidecar:
            text = yaml.safe_dump(dict(sidecar), allow_unicode=True, sort_keys=False)
            write_bytes_atomic(inbox / f"{stem}.yaml", text.encode(), replace=False)
            written.append(inbox / f"{stem}.yaml")
        target = inbox / f"{stem}{suffix}"
        copy_atomic(image, target, replace=False)
    except BaseException:
        for path in written:
            with contextlib.suppress(FileNotFoundError):  # the daemon may have taken it meanwhile
                path.unlink()
        raise
    return target
