"""Draft → final: a draft's image and request kept after it is published, and its approval.

A job with `quality: draft` is published under `draft_name_template` (publish.wanted_name). Its image,
its request (the fields its sidecar set) and its seed are kept in work/.drafts/<job_id>/, on the share
(so any worker, after any restart, can approve it), whatever `keep_inputs` does with the originals: until
its final is published, or `draft_expiry_days` after it was published.

Approving (the `approve` command, the dashboard's button, or a `NAME.approve` marker dropped into the
inbox) writes the final into the inbox as an ordinary job: the draft's image, and a sidecar of its
request and seed with `quality: final` and `draft: {job_id, name}` (what the draft's level set is not
carried over: the final level sets its own). Exactly once: an `approved` file in the draft's folder,
made by an exclusive create (atomic on local disks and NFS), is the approval; a second door, a second
worker or a second try finds it and says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import structlog

from i2v_watcher.catalog import events
from i2v_watcher.config.settings import Settings
from i2v_watcher.fs.atomic import copy_atomic, read_json, write_json_atomic
from i2v_watcher.inbox.drop import queue_job
from i2v_watcher.job.records import MAX_RECORD_BYTES, PublishedMetadata, Record
from i2v_watcher.job.spec import VARIANT_FIELDS
from i2v_watcher.job.state import Job
from i2v_watcher.work.liveness import probe_share_time

DRAFTS = ".drafts"  # under work/: hidden, so no worker takes it for a worker's folder
RECORD = "draft.json"
APPROVED = "approved"
DAY_S = 86400.0
log = structlog.get_logger("i2v_watcher.run.drafts")


class ApproveRefused(Exception):
    """No draft of that name is kept (never made, expired, or its final published): a plain message."""


class DraftRecord(Record):
    """work/.drafts/<job_id>/draft.json: what approving the draft needs."""

    WHAT = "draft record"
    job_id: str
    key: str  # the job's name: its path under the inbox without suffix (`team/fox`)
    name: str  # its output name in the outbox (`fox.draft`)
    files: list[str]  # its published files, relative to the outbox, the metadata last
    requested: dict[str, Any]  # the fields its sidecar set
    seed: int
    image: str  # the kept image's file name in its folder

    @property
    def published_as(self) -> str:
        """Its name among `status`'s done jobs (`team/fox.draft`): also accepted by `approve`."""
        return self.files[-1].removesuffix(".json") if self.files else self.key


@dataclass(frozen=True)
class Approval:
    """What an approval did: `queued` the final (its image in the inbox), or found it `already`
    approved (nothing written)."""

    outcome: str  # "queued" or "already"
    draft: DraftRecord
    message: str
    image: Path | None = None


def drafts_root(settings: Settings) -> Path:
    return settings.work / DRAFTS


def keep_draft(settings: Settings, job: Job) -> None:
    """After a draft is published, before its inputs are disposed of: its image and request kept for
    its final. Idempotent (a restart half-way writes the same again); the record last."""
    metadata = job.state.metadata
    if metadata is None or metadata.quality_level != "draft" or job.state.image is None:
        return
    assert job.state.output_name is not None and metadata.seed is not None
    folder = drafts_root(settings) / job.id
    folder.mkdir(parents=True, exist_ok=True)
    image = "image" + PurePosixPath(job.state.image).suffix.lower()
    if not (folder / image).exists():
        copy_atomic(job.input(job.state.image), folder / image, token=job.id, replace=True)
    requested = metadata.requested
    if metadata.prompt_source == "caption":  # the final gets the draft's prompt, not a caption of its own
        requested = {**requested, "prompt": metadata.prompt}
    record = DraftRecord(job_id=job.id, key=job.state.key, name=job.state.output_name,
                         files=job.state.published, requested=requested, seed=metadata.seed, image=image)
    write_json_atomic(folder / RECORD, record.to_json())
    log.info("draft kept for its final", draft=job.state.key, name=record.name)


def final_sidecar(draft: DraftRecord) -> dict[str, Any]:
    """The final's request: the draft's own (never what its level set), its seed, `quality: final`. A
    variant's final is that one clip: not variants again."""
    own = {key: value for key, value in draft.requested.items() if key not in VARIANT_FIELDS}
    return {**own, "seed": draft.seed, "quality": "final",
            "draft": {"job_id": draft.job_id, "name": draft.name}}


def kept_drafts(settings: Settings) -> list[tuple[Path, DraftRecord]]:
    """Every kept draft whose record can be read, oldest first (job ids sort by claim time)."""
    found = []
    with contextlib.suppress(FileNotFoundError):
        for folder in sorted(drafts_root(settings).iterdir()):
            if folder.name.startswith("."):  # one being removed
                continue
            with contextlib.suppress(OSError, ValueError):
                found.append((folder, DraftRecord.read(folder / RECORD, MAX_RECORD_BYTES)))
    return found


def approve(settings: Settings, name: str) -> Approval:
    """Queue the final of the latest draft named `name` (its job name, `team/fox`, or its name among
    `status`'s done jobs, `team/fox.draft`), once: ApproveRefused when there is no such draft, an
    `already` Approval when it was approved before."""
    key = name.strip().strip("/")
    kept = kept_drafts(settings)
    matching = [(folder, draft) for folder, draft in kept if key in (draft.key, draft.published_as)]
    if not matching:
        waiting = ", ".join(sorted({d.key for f, d in kept if not os.path.lexists(f / APPROVED)})) or "none"
        raise ApproveRefused(f"no draft named {key!r} is waiting for approval (drafts waiting: {waiting}); "
                             "a draft's final may be published already, or the draft expired")
    folder, draft = matching[-1]
    try:
        fd = os.open(folder / APPROVED, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return Approval("already", draft, f"the draft {key!r} ({draft.name}) was approved already"
                        f"{_approved_when(folder)}: its final is queued, running or published")
    try:
        image = _queue_final(settings, folder, draft)
        with os.fdopen(fd, "w") as handle:
            json.dump({"approved_at": time.time(), "final": str(image)}, handle)
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(folder / APPROVED)  # not queued: it may be approved again
        raise
    log.info("draft approved: final queued", draft=key, image=str(image))
    return Approval("queued", draft, f"the final of {key!r} is queued: {image}", image)


def approved_at_ns(draft: DraftRecord, settings: Settings) -> int | None:
    """When the draft was approved, on the share's clock (its `approved` file's change time): what a
    marker's own arrival time is compared with. None when it is not (or no longer) approved."""
    try:
        return os.stat(drafts_root(settings) / draft.job_id / APPROVED).st_ctime_ns
    except OSError:
        return None


def _approved_when(folder: Path) -> str:
    with contextlib.suppress(OSError, ValueError, TypeError):
        at = float(read_json(folder / APPROVED, 4096)["approved_at"])
        return time.strftime(" at %Y-%m-%d %H:%M:%S", time.localtime(at))
    return ""


def _queue_final(settings: Settings, folder: Path, draft: DraftRecord) -> Path:
    """The draft's image and the final's sidecar into the inbox, where the draft's image was (under
    name-1… when that name is taken meanwhile)."""
    return queue_job(settings.inbox, PurePosixPath(draft.key), folder / draft.image, final_sidecar(draft),
                     "approve")


def finish_draft(settings: Settings, job: Job) -> None:
    """After a final is published: its draft's kept image goes, and so do the draft's outputs in the
    outbox unless `keep_drafts`."""
    metadata = job.state.metadata
    if metadata is None or not metadata.draft:
        return
    folder = drafts_root(settings) / str(metadata.draft.get("job_id"))
    if not folder.is_dir() or folder.parent != drafts_root(settings):
        return
    with contextlib.suppress(OSError, ValueError):
        draft = DraftRecord.read(folder / RECORD, MAX_RECORD_BYTES)
        if not settings.keep_drafts:
            _remove_outputs(settings, draft)
    _remove(folder)
    log.info("final published: its draft's kept image removed", draft=str(metadata.draft.get("name")))


def _remove_outputs(settings: Settings, draft: DraftRecord) -> None:
    """The draft's published files, only where its metadata still says they are its own."""
    if not draft.files:
        return
    marker = settings.outbox / draft.files[-1]
    with contextlib.suppress(OSError, ValueError):
        if PublishedMetadata.read(marker, MAX_RECORD_BYTES).job_id != draft.job_id:
            return
        for rel in draft.files:  # the metadata last: it marks the outputs as complete
            with contextlib.suppress(FileNotFoundError):
                os.unlink(settings.outbox / rel)
        events.append(settings, "removed", job_id=draft.job_id, name=draft.name, path=draft.files[-1])


def _remove(folder: Path) -> None:
    trash = folder.with_name(f".trash-{folder.name}")
    with contextlib.suppress(FileNotFoundError):
        os.rename(folder, trash)
    shutil.rmtree(trash, ignore_errors=True)


def expire_drafts(settings: Settings) -> int:
    """Kept drafts older than `draft_expiry_days` on the share's clock, removed (their outputs stay)."""
    root = drafts_root(settings)
    if not root.is_dir():
        return 0
    cutoff = probe_share_time(root) - settings.draft_expiry_days * DAY_S
    removed = 0
    for folder, draft in kept_drafts(settings):
        with contextlib.suppress(OSError):
            if os.stat(folder / RECORD).st_mtime < cutoff:
                _remove(folder)
                removed += 1
                log.info("draft expired: its kept image removed", draft=draft.key, name=draft.name)
    return removed
