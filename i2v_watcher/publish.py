"""Publish: put a job's outputs into the outbox, then its inputs where `keep_inputs` says.

The outbox contract a consumer can script against: every file appears under its final name in one
rename (written first as a hidden `.<name>.part`), the clip and poster first, then the metadata
`<name>.json` last as the marker that the job is complete. Names never overwrite: a clash gets a suffix.
"""

from __future__ import annotations

import os
import string
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from i2v_watcher.config import Settings
from i2v_watcher.errors import JobError
from i2v_watcher.faults import crashpoint
from i2v_watcher.fsutil import copy_atomic, free_name, write_json_atomic
from i2v_watcher.job import Job, utc_now
from i2v_watcher.spec import check_output_name

log = structlog.get_logger("i2v_watcher.publish")


def render_name(template: str, job: Job, fields: dict[str, Any]) -> str:
    claimed = datetime.fromisoformat(job.state.claimed_at).astimezone()
    values = {"stem": job.stem, "date": claimed.strftime("%Y%m%d"), "time": claimed.strftime("%H%M%S"),
              "job_id": job.id, **fields}
    name = string.Formatter().vformat(template, (), values)
    try:
        return check_output_name(name)
    except ValueError as exc:
        raise JobError(f"the output name {name!r} from output_template is not usable: {exc}",
                       stage="publish") from exc


def _plan(settings: Settings, job: Job, name: str) -> list[tuple[Path, str]]:
    """(source file, public name) in publishing order; the metadata is written after these."""
    staged = [(job.out_dir / output["file"], name + output["suffix"])
              for output in job.state.metadata["outputs"]]
    if settings.keep_inputs == "outbox":
        staged += [(job.input(n), job.renamed(n, f"{name}.source")) for n in job.state.inputs]
    return staged


def publish(settings: Settings, job: Job) -> None:
    folder = settings.outbox / job.rel_dir
    folder.mkdir(parents=True, exist_ok=True)
    if job.state.stage == "encoded":
        meta = job.state.metadata
        wanted = meta["parameters"].get("output_name") or render_name(
            settings.output_template, job,
            {"seed": job.state.seed, "preset": meta["postprocess"]["presets"][0], "backend": meta["backend"]})
        suffixes = [public[len(wanted):] for _, public in _plan(settings, job, wanted)] + [".json"]
        name = free_name(folder, wanted, suffixes)
        files = [name + suffix for suffix in suffixes]
        job.advance("publishing", output_name=name,
                    published=[str(job.rel_dir / f) if str(job.rel_dir) != "." else f for f in files])
        if name != wanted:
            log.info("name taken in the outbox, using a suffix", wanted=wanted, name=name)
    chosen = job.state.output_name
    assert chosen is not None
    started = time.monotonic()
    for source, public in _plan(settings, job, chosen):
        if not os.path.lexists(folder / public):
            copy_atomic(source, folder / public)
            crashpoint("publish.after_file")
    if not os.path.lexists(folder / f"{chosen}.json"):
        metadata = {**job.state.metadata, "job_id": job.id, "name": chosen, "files": job.state.published,
                    "published_at": utc_now(), "attempts": job.state.attempts}
        metadata["timings_s"] = {**metadata["timings_s"], "publish": round(time.monotonic() - started, 3)}
        metadata.pop("outputs", None)
        write_json_atomic(folder / f"{chosen}.json", metadata)
        crashpoint("publish.after_metadata")
    job.advance("published")
    log.info("published", files=job.state.published)


def dispose_inputs(settings: Settings, job: Job) -> None:
    """After publishing: keep the user's originals in done/ (default), or drop them (outbox, delete)."""
    if settings.keep_inputs == "done":
        job.move_inputs(settings.done / job.rel_dir)
        crashpoint("dispose.after_move")
    job.remove()
