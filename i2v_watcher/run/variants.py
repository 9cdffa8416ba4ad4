"""`variants: N` with `keep: all`: the job fans out into N jobs, so that they run side by side like any
other jobs (on this worker's pipelined stages, or on other workers of the share). The job itself is
variant 1 under its own name; variants 2..N are written into the inbox beside it as `NAME.v2`,
`NAME.v3`, ... with the same image, the job's own request, seeds seed+1, seed+2, ... and a `variant:`
reference to the first. Each is then a job of its own: judged, published, approved (its own seed)
alone. `keep: best` stays one job (run.gate: every variant is an attempt, the best one published).

Written once: the job's state counts the variants written, so a restart goes on after the last one.
A crash between writing a variant and counting it writes that one again (under NAME.vK-1)."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

import structlog

from i2v_watcher.config.settings import Settings
from i2v_watcher.inbox.drop import queue_job
from i2v_watcher.job.spec import VARIANT_FIELDS, JobSpec
from i2v_watcher.job.state import Job

SEEDS = 2**32
log = structlog.get_logger("i2v_watcher.run.variants")


def fans_out(spec: JobSpec) -> bool:
    return (spec.variants or 1) > 1 and spec.keep != "best" and spec.variant is None


def variant_record(job: Job, spec: JobSpec) -> dict[str, Any] | None:
    """The metadata's `variant`: which of how many this clip is, and the first variant's job id."""
    if spec.variant is not None:
        return spec.variant.model_dump()
    if fans_out(spec):
        return {"of": job.id, "name": job.state.key, "index": 1, "count": spec.variants}
    return None


def fan_out(settings: Settings, job: Job, spec: JobSpec, seed: int) -> None:
    """Write variants 2..N of the job into the inbox (those not written yet)."""
    if not fans_out(spec) or job.state.image is None:
        return
    count = spec.variants or 1
    key = PurePosixPath(job.state.key)
    request = {name: value for name, value in spec.model_dump(mode="json", exclude_unset=True).items()
               if name not in (*VARIANT_FIELDS, "seed", "output_name")}
    for index in range((job.state.variants_written or 1) + 1, count + 1):
        sidecar: dict[str, Any] = {
            **request, "seed": (seed + index - 1) % SEEDS,
            "variant": {"of": job.id, "name": job.state.key, "index": index, "count": count}}
        if spec.output_name is not None:
            sidecar["output_name"] = f"{spec.output_name}.v{index}"
        written = queue_job(settings.inbox, key.with_name(f"{key.name}.v{index}"), job.input(job.state.image),
                            sidecar, "variant")
        job.advance(job.state.stage, variants_written=index)
        log.info("variant queued", variant=index, of=count, image=str(written))
