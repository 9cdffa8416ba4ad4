"""The records a worker writes of itself (the heartbeat, with the job it works on) and that `status`
says of the share (the status snapshot, a row per worker). Like every record (records.py), each reads
what a newer version writes."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, Field

from i2v_watcher.job.records import Record


class BeatJob(Record):
    """One job a worker works on, in its heartbeat (a pipelined worker has one per busy stage)."""

    job_id: str | None = None
    job: str | None = None
    stage: str | None = None
    done: int = 0
    total: int = 0


class HeartbeatRecord(Record):
    """work/<worker_id>/heartbeat.json: written by work.lease.Heartbeat alone, every `interval_s`
    while the worker is fresh, and once more with state "stopped" when it ends on purpose; read by
    work.liveness (status, the dashboard, its /metrics) and work.lease (takeover). The order of the
    fields is the order of the file's keys. A worker with swap_backends (work.swap) adds them under that
    key, after these: a key of its own, not a field, so that the file of every other worker stays as
    it was."""

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
    # Every backend it loaded (its jobs are routed by them: work.routing) and its `auto_backend`, which
    # every worker of a share must agree on. Absent in the heartbeats of older versions.
    backends: list[str] | None = None
    auto_backend: str | None = None
    job_id: str | None = None  # the job furthest behind (the one generating), as the jobs below
    job: str | None = None
    stage: str | None = None
    done: int = 0
    total: int = 0
    published: int = 0
    failed: int = 0
    jobs: list[BeatJob] = Field(default_factory=list)
    paused: bool | None = None  # an operator's pause is in force (control.pause); absent otherwise

    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"paused"})


class WorkerRow(BaseModel):
    """One worker as `status` and the dashboard show it: its liveness (`state`, see work.liveness),
    what it does (`activity`), and what its heartbeat says. Written by work.liveness.survey."""

    worker_id: str
    state: str  # alive | late | stale | stopped | dead | unknown
    activity: str | None = None  # idle | working | paused | stopped; None without a heartbeat
    heartbeat_age_s: float | None = None  # since its last beat, on the share's clock
    clock: str | None = None  # what the age was measured against (see work.liveness.share_now)
    process: str | None = None  # running | frozen | gone: only where the worker runs on this host
    detail: str | None = None
    host: str | None = None
    pid: int | None = None
    backend: str | None = None
    model: str | None = None
    backends: list[str] | None = None
    auto_backend: str | None = None
    swap_backends: list[str] | None = None
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
    jobs: list[BeatJob] = Field(default_factory=list)
    paused: bool | None = None

    @property
    def up(self) -> bool:
        """Alive, or late but not yet stale: counted as up (`workers_alive`, `i2v_worker_up`). The one
        place this rule is written: work.liveness names the states, every reader asks the row."""
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
    # The queued files (as in `queued`) whose backend no live worker loaded, and that backend.
    unroutable: dict[str, str] = {}
    in_progress: list[dict[str, Any]] = []
    done: list[str] = []
    # The latest done jobs (as many as the text lists) that are variants of a set: "variant 2 of 3".
    done_variants: dict[str, str] = {}
    failed: list[dict[str, Any]] = []
    # The operators' pauses in force (control.pause), by whom they pause ("all" or a worker id).
    paused: dict[str, dict[str, Any]] = {}
    warnings: list[str] = []

    def as_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
