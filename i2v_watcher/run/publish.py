"""Publish: put a job's outputs into the outbox, then its inputs where `keep_inputs` says.

The outbox contract a consumer can script against: every file appears under its final name in one
rename (written first as a hidden `.<name>.<token>.part`), the clip and poster first, then the metadata
`<name>.json` last as the marker that the job is complete. Names never overwrite: the name is reserved
before the first file is written (so two workers never pick the same one), a clash gets a suffix, and a
file that another process put under our name is never replaced.
"""

from __future__ import annotations

import contextlib
import os
import string
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from i2v_watcher.catalog import events
from i2v_watcher.config.settings import Settings
from i2v_watcher.errors import JobError
from i2v_watcher.faults import crashpoint
from i2v_watcher.fs.atomic import FolderBlocked, copy_atomic, safe_subdir, same_content, write_json_atomic
from i2v_watcher.fs.detours import blocked_part
from i2v_watcher.fs.perms import output_perms
from i2v_watcher.fs.reservations import release_name, release_own, reserve_name
from i2v_watcher.job.records import MAX_RECORD_BYTES, PublishedMetadata, StagedMetadata
from i2v_watcher.job.spec import check_output_name, safe_stem
from i2v_watcher.job.state import Job
from i2v_watcher.run.drafts import finish_draft, keep_draft
from i2v_watcher.run.fail import detour_note

log = structlog.get_logger("i2v_watcher.run.publish")
MAX_CLASHES = 3


class NameTaken(Exception):
    """A file that is not ours stands under a name we reserved (a process that reserves no names)."""


def render_name(template: str, job: Job, fields: dict[str, Any]) -> str:
    """The output name from `output_template`, checked before any generation."""
    claimed = datetime.fromisoformat(job.state.claimed_at).astimezone()
    values = {"stem": safe_stem(job.stem), "date": claimed.strftime("%Y%m%d"),
              "time": claimed.strftime("%H%M%S"), "job_id": job.id, **fields}
    name = string.Formatter().vformat(template, (), values)
    try:
        return check_output_name(name)
    except ValueError as exc:
        raise JobError(f"the output name {name!r} from output_template is not usable: {exc}",
                       stage="sidecar", hint="change output_template, or set output_name in the sidecar") \
            from exc


def wanted_name(settings: Settings, job: Job, *, quality: str | None, output_name: str | None,
                fields: dict[str, Any]) -> str:
    """The one rule for a job's output name: its sidecar's `output_name`, else `output_template`; a
    draft's under `draft_name_template` (fox → fox.draft), so that its final can take the plain name."""
    name = output_name or render_name(settings.output_template, job, fields)
    if quality != "draft":
        return name
    drafted = settings.draft_name_template.format(name=name)
    try:
        return check_output_name(drafted)
    except ValueError as exc:
        raise JobError(f"the draft's output name {drafted!r} is not usable: {exc}", stage="sidecar",
                       hint="shorten output_name or draft_name_template") from exc


def _encoded(job: Job) -> StagedMetadata:
    metadata = job.state.metadata
    assert metadata is not None and metadata.outputs is not None, "only an encoded job is published"
    return metadata


def _public_names(settings: Settings, job: Job, name: str) -> list[tuple[Path, str]]:
    """(source file, public name) in publishing order; the metadata is written after these."""
    staged = [(job.out_dir / output.file, name + output.suffix) for output in _encoded(job).outputs or ()]
    if settings.keep_inputs == "outbox":
        staged += [(job.input(n), job.renamed(n, f"{name}.source")) for n in job.state.inputs]
    return staged


def check_outbox_folder(settings: Settings, job: Job) -> None:
    """The job's folder in the outbox is a folder or can be made: a file, link or FIFO that a user put
    under its name is that job's failure, found before any generation (never an outage)."""
    blocked = blocked_part(settings.outbox, job.rel_dir)
    if blocked is not None:
        raise JobError(f"outbox/{blocked[0]} is {blocked[1]}, where this job's folder must be: its clip "
                       "cannot be published", stage="publish",
                       hint=f"remove or rename outbox/{blocked[0]}, then `i2v-watcher retry {job.stem}`")


def publish(settings: Settings, job: Job) -> None:
    perms = output_perms(settings.output_group, settings.output_mode)
    try:
        folder = safe_subdir(settings.outbox, job.rel_dir, mode=perms.folder_mode, gid=perms.gid)
    except FolderBlocked:
        check_outbox_folder(settings, job)  # says what is in the way
        raise
    for _ in range(MAX_CLASHES):
        if job.state.stage == "encoded":
            _choose_name(settings, job, folder)
        try:
            _publish_files(settings, job, folder)
            return
        except NameTaken as exc:
            log.warning("another process wrote one of the job's names: publishing under another name",
                        file=str(exc))
            _give_up_name(settings, job, folder)
    raise JobError(f"the names in {folder} keep being taken by another process", stage="publish")


def _choose_name(settings: Settings, job: Job, folder: Path) -> None:
    meta = _encoded(job)
    wanted = job.state.wanted_name or wanted_name(  # none in a job claimed by an older version
        settings, job, quality=meta.quality_level, output_name=None,
        fields={"seed": job.state.seed, "preset": meta.presets[0], "backend": meta.backend})
    suffixes = _suffixes(settings, job, wanted)
    name = reserve_name(folder, wanted, suffixes, job.id)
    crashpoint("publish.after_reserve")
    files = [name + suffix for suffix in suffixes]
    job.advance("publishing", output_name=name,
                published=[str(job.rel_dir / f) if str(job.rel_dir) != "." else f for f in files])
    if name != wanted:
        log.info("name taken in the outbox, using a suffix", wanted=wanted, name=name)


def _suffixes(settings: Settings, job: Job, name: str) -> list[str]:
    """What follows the output name in each published file's name, the metadata's last."""
    return [public[len(name):] for _, public in _public_names(settings, job, name)] + [".json"]


def release_reserved(settings: Settings, job: Job) -> None:
    """An encoded job that will not be published (cancelled at the commit point) lets go of the outbox
    name it may have reserved: a crash between the reservation and `publishing` leaves one behind."""
    wanted = job.state.wanted_name
    if wanted is not None and job.state.stage == "encoded":
        release_own(settings.outbox / job.rel_dir, wanted, _suffixes(settings, job, wanted), job.id)


def _publish_files(settings: Settings, job: Job, folder: Path) -> None:
    chosen = job.state.output_name
    assert chosen is not None
    perms = output_perms(settings.output_group, settings.output_mode)
    within = _inputs_reach(settings, job)
    started = time.monotonic()
    for source, public in _public_names(settings, job, chosen):
        target = folder / public
        job.check_owned()  # a worker that lost the job to another never publishes
        if os.path.lexists(target):
            if same_content(source, target):
                continue  # published before a crash
            raise NameTaken(str(target))
        try:
            copy_atomic(source, target, token=job.id, mode=perms.file_mode, gid=perms.gid, within=within)
        except FileExistsError as exc:
            raise NameTaken(str(target)) from exc
        crashpoint("publish.after_file")
    marker = folder / f"{chosen}.json"
    staged = _encoded(job)
    timings = staged.timings_s
    if not os.path.lexists(marker):
        metadata = staged.published(name=chosen, files=job.state.published, attempts=job.state.attempts,
                                    worker_id=job.state.worker_id, takeovers=job.state.takeovers)
        metadata.timings_s = timings = {**timings, "publish": round(time.monotonic() - started, 3)}
        job.check_owned()
        try:
            write_json_atomic(marker, metadata.to_json(), token=job.id, replace=False, mode=perms.file_mode,
                              gid=perms.gid, within=within)
        except FileExistsError as exc:
            if not _ours(marker, job):
                raise NameTaken(str(marker)) from exc
        crashpoint("publish.after_metadata")
    elif not _ours(marker, job):
        raise NameTaken(str(marker))
    release_name(folder, chosen, job.id)
    # The state keeps the publish time too, for the daemon's metrics (i2v_stage_seconds, metrics.py).
    job.advance("published", metadata=staged.model_copy(update={"timings_s": timings}))
    log.info("published", files=job.state.published)
    events.append(settings, "published", job_id=job.id, name=chosen,
                  path=marker.relative_to(settings.outbox).as_posix())


def _inputs_reach(settings: Settings, job: Job) -> list[os.stat_result]:
    """The job's input files in its folder (the image and sidecar, or the daemon's private copies of
    them), whose permission bits no published file may exceed: a clip made from a private image is
    private too. An explicit output_mode is the operator's word and wins."""
    if settings.output_mode is not None:
        return []
    found = []
    for name in job.state.inputs:
        with contextlib.suppress(FileNotFoundError):
            found.append(os.lstat(job.input(name)))
    return found


def _ours(marker: Path, job: Job) -> bool:
    with contextlib.suppress(OSError, ValueError):  # not a metadata file: another process's
        return PublishedMetadata.read(marker, MAX_RECORD_BYTES).job_id == job.id
    return False


def _give_up_name(settings: Settings, job: Job, folder: Path) -> None:
    """Take back what this job published under the clashing name (only files holding our bytes)."""
    chosen = job.state.output_name
    assert chosen is not None
    job.check_owned()
    for source, public in _public_names(settings, job, chosen):
        if same_content(source, folder / public):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(folder / public)
    release_name(folder, chosen, job.id)
    job.advance("encoded", output_name=None, published=[])


def dispose_inputs(settings: Settings, job: Job) -> None:
    """After publishing: keep the user's originals in done/ (default), or drop them (outbox, delete);
    a draft's image is kept for its final first, and a final's draft let go (run.drafts)."""
    keep_draft(settings, job)
    if settings.keep_inputs == "done":
        job.move_inputs(settings.done, settings.inbox)
        job.release_moved_name(settings.done)
        if job.moved_rel != job.rel_dir:
            log.warning("the originals are not in the job's folder in done/",
                        reason=detour_note(settings.done, "done", job))
        crashpoint("dispose.after_move")
    finish_draft(settings, job)
    job.remove()
