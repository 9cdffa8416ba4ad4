"""The typed records that cross stages and processes, each written and read by one owner: what a job
publishes (its metadata), why it failed (the failure report), where it stands (its state), and what a
worker says of itself (the heartbeat) and `status` says of the share (the status snapshot).

Every record reads every file the current version writes: unknown keys from a newer writer are kept
(extra="allow") so that a rolling upgrade never makes a file unreadable."""

from __future__ import annotations

# --- The job's records: published metadata, failure report, job state -------------------------------


# --- The worker's records: heartbeat, status snapshot --------------------------------------------------
# isort: split
from typing import Any, Self  # (where the section above imports these already, these lines go)

from pydantic import BaseModel, ConfigDict, ValidationError


class _Record(BaseModel):
    """Unknown keys are kept (a newer writer's), known ones are checked."""

    model_config = ConfigDict(extra="allow")

    def as_file(self) -> dict[str, Any]:
        """What the record says, as the file said it: the keys it was read with, unknown ones included
        (a record read and written back is the file it was read from)."""
        return self.model_dump(mode="json", exclude_unset=True)

    @classmethod
    def lenient(cls, data: dict[str, Any]) -> Self:
        """Read a file from any version: a known key whose value this version does not accept (a
        writer that changed its type) is left out instead of making the whole file unreadable. A
        heartbeat must never read as missing while it moves: takeover would count it as stopped still."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            bad = {error["loc"][0] for error in exc.errors() if error["loc"]}
            return cls.model_validate({key: value for key, value in data.items() if key not in bad})


class BeatJob(_Record):
    """One job a worker works on, in its heartbeat (a pipelined worker has one per busy stage)."""

    job_id: str | None = None
    job: str | None = None
    stage: str | None = None
    done: int = 0
    total: int = 0


class HeartbeatRecord(_Record):
    """work/<worker_id>/heartbeat.json: written by work.lease.Heartbeat alone, every `interval_s`
    while the worker is fresh, and once more with state "stopped" when it ends on purpose; read by
    work.liveness (status, the dashboard, its /metrics) and work.lease (takeover). The order of the
    fields is the order of the file's keys."""

    worker_id: str | None = None
    host: str | None = None
    pid: int | None = None
    counter: int | None = None  # increases at every beat: what takeover watches, on its own clock
    state: str = "running"  # "running", or "stopped": the worker ended on purpose
    started_at: str | None = None
    beat_at: str | None = None  # the worker's own clock: shown, never compared
    interval_s: float | None = None
    version: str | None = None
    backend: str | None = None
    model: str | None = None
    job_id: str | None = None  # the job furthest behind (the one generating), as the jobs below
    job: str | None = None
    stage: str | None = None
    done: int = 0
    total: int = 0
    published: int = 0
    failed: int = 0
    jobs: list[BeatJob] = []


class WorkerRow(BaseModel):
    """One worker as `status` and the dashboard show it: its liveness (`state`, see work.liveness),
    what it does (`activity`), and what its heartbeat says. Written by work.liveness.survey."""

    worker_id: str
    state: str  # alive | late | stale | stopped | dead | unknown
    activity: str | None = None  # idle | working | stopped; None without a heartbeat
    heartbeat_age_s: float | None = None  # since its last beat, on the share's clock
    clock: str | None = None  # what the age was measured against (see work.liveness.share_now)
    process: str | None = None  # running | frozen | gone: only where the worker runs on this host
    detail: str | None = None
    host: str | None = None
    pid: int | None = None
    backend: str | None = None
    model: str | None = None
    version: str | None = None
    job: str | None = None
    job_id: str | None = None
    stage: str | None = None
    done: int | None = None
    total: int | None = None
    published: int | None = None
    failed: int | None = None
    started_at: str | None = None
    beat_at: str | None = None
    jobs: list[BeatJob] = []

    @property
    def up(self) -> bool:
        """Alive, or late but not yet stale: counted as up (`workers_alive`, `i2v_worker_up`)."""
        return self.state in ("alive", "late")


class StatusCounts(BaseModel):
    """How many of each; None where the folder it is read from does not exist (never a false 0)."""

    queued: int | None = None  # job groups, as work.inbox.queue counts them
    in_progress: int | None = None
    done: int | None = None
    failed: int | None = None
    workers_alive: int | None = None  # workers up: alive or late


class StatusSnapshot(BaseModel):
    """What `status --json` prints: written by ops.status.collect alone; scripts read it."""

    counts: StatusCounts
    workers: list[WorkerRow] = []
    queued: list[str] = []  # one file of each queued job (its image where it has one), inbox-relative
    in_progress: list[dict[str, Any]] = []
    done: list[str] = []
    failed: list[dict[str, Any]] = []
    warnings: list[str] = []

    def as_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
