"""What became of a lone sidecar's image. A sidecar that comes after its image was taken (with the
defaults, since no sidecar was there), or after its image was already published, fails as "a sidecar
without an image"; its report must say that the image was done with the defaults, and where it went,
or the user waits for a clip made with their prompt that never comes.

Only the job's own folders are looked at, and a bounded number of files in each: a report is written
whatever this finds, and never waits for a large folder."""

from __future__ import annotations

import contextlib
import glob
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from i2v_watcher.config.settings import Settings
from i2v_watcher.errors import JobError
from i2v_watcher.inbox.scan_cache import IMAGE_SUFFIXES, SIDECAR_SUFFIXES
from i2v_watcher.job.records import (
    MAX_RECORD_BYTES,
    MAX_STATE_BYTES,
    REPORT_SUFFIX,
    FailureReport,
    JobState,
    PublishedMetadata,
)
from i2v_watcher.job.spec import safe_stem
from i2v_watcher.job.state import STATE_FILE, Job
from i2v_watcher.run.fail import shown_folder

MAX_READS = 50  # records read per folder, at most (those named like the job first)
AGAIN = "to make it again with this sidecar, put the image back into the inbox beside the sidecar"


def explain_lone_sidecar(settings: Settings, job: Job, error: JobError) -> JobError:
    """The error of a job that is a sidecar alone, with what became of its image where that is found
    (published, being made, failed: each with the defaults), and how to make it again."""
    fate = _image_fate(settings, job)
    if not fate:
        return error
    return JobError(f"{error.message}; {fate}", stage=error.stage,
                    hint=" ".join(filter(None, [error.hint, AGAIN])))


def _image_fate(settings: Settings, job: Job) -> str:
    if job.state.image is not None or job.state.sidecar is None or len(job.state.inputs) != 1:
        return ""
    with contextlib.suppress(OSError):  # a folder that cannot be read: the report goes without this
        for find in (_published, _in_work, _failed):
            found = find(settings, job)
            if found:
                return found
    return ""


def _records(folder: Path, pattern: str, first: str) -> Iterator[Path]:
    """Up to MAX_READS files of folder matching pattern, those starting with `first` first."""
    names = sorted(folder.glob(pattern), key=lambda p: not p.name.startswith(first))
    yield from names[:MAX_READS]


def _is_image_of(path: str | None, job: Job) -> bool:
    """Whether an inbox-relative path is an image of this job's name (key plus an image suffix)."""
    if not path or not path.lower().endswith(IMAGE_SUFFIXES):
        return False
    return str(PurePosixPath(path).with_suffix("")) == job.state.key


def _published(settings: Settings, job: Job) -> str:
    folder = settings.outbox / job.rel_dir
    best: PublishedMetadata | None = None
    for path in _records(folder, "*.json", safe_stem(job.stem)):
        with contextlib.suppress(OSError, ValueError):
            meta = PublishedMetadata.read(path, MAX_RECORD_BYTES, lenient=True)
            if meta.input is not None and _is_image_of(meta.input.path, job) and not meta.input.sidecar \
                    and (best is None or meta.published_at > best.published_at):
                best = meta
    if best is None or best.input is None:
        return ""
    clip = next((f for f in best.files if not f.endswith(".json")), str(job.rel_dir / best.name))
    done = settings.keep_inputs == "done"
    originals = f"; its original is in {shown_folder('done', job.rel_dir)}" if done else ""
    return (f"its image {best.input.path} was already made into a video with the defaults, without "
            f"this sidecar: outbox/{clip} (published {best.published_at or 'earlier'}){originals}")


def _in_work(settings: Settings, job: Job) -> str:
    for path in list(settings.work.glob(f"*/*/{STATE_FILE}"))[:MAX_READS]:
        with contextlib.suppress(OSError, ValueError):
            state = JobState.read(path, MAX_STATE_BYTES)
            if state.job_id != job.id and state.key == job.state.key and state.image and not state.sidecar:
                return (f"its image {job.rel_dir / state.image} was taken before this sidecar came, and is "
                        f"being made into a video with the defaults now (job id {state.job_id}); it "
                        f"will be in {shown_folder('outbox', job.rel_dir)}")
    return ""


def _failed(settings: Settings, job: Job) -> str:
    folder = settings.failed / job.rel_dir
    for path in _records(folder, f"{glob.escape(job.short_stem)}*{REPORT_SUFFIX}", job.short_stem):
        with contextlib.suppress(OSError, ValueError):
            report = FailureReport.read(path, MAX_RECORD_BYTES, lenient=True)
            files = report.files or []
            if report.input == job.state.key and report.job_id != job.id \
                    and any(f.lower().endswith(IMAGE_SUFFIXES) for f in files) \
                    and not any(f.lower().endswith(SIDECAR_SUFFIXES) for f in files):
                return (f"its image was taken before this sidecar came, with the defaults, and failed: "
                        f"see failed/{PurePosixPath(path.relative_to(settings.failed))}")
    return ""
