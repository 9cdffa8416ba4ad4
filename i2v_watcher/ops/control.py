"""`pause`, `resume` and `drain` from the command line: the pause file written (control.pause), then
waited for until every live worker it concerns says "paused" in its heartbeat, which it says only
once no claim of its is under way (so none starts after `pause` returns)."""

from __future__ import annotations

import argparse
import re
import sys
import time
from dataclasses import dataclass, field

from i2v_watcher.catalog import events
from i2v_watcher.catalog.events import Kind
from i2v_watcher.config.settings import Settings
from i2v_watcher.control.pause import pause, pause_line, pauses, resume, who
from i2v_watcher.control.priority import set_priority
from i2v_watcher.errors import StartupError
from i2v_watcher.inbox.queue import queued_jobs
from i2v_watcher.inbox.watch import Inbox
from i2v_watcher.job.spec import WORKER_ID_PATTERN
from i2v_watcher.work.liveness import heartbeat_interval
from i2v_watcher.work.survey import survey

POLL_S = 0.2
PRIORITY_MIN, PRIORITY_MAX = -100, 100  # as a sidecar's `priority` (job.spec.Priority)
# The commands, as the command line declares them: (name, help, description).
CONTROLS = (
    ("pause", "stop claiming new jobs, on every worker or one (running jobs finish)",
     "Writes work/.control/pause-all (or pause-ID), which holds across restarts until `resume`, and "
     "returns once every live worker concerned says \"paused\" in its heartbeat: no claim starts after. "
     "Exit codes: 0 in force; 1 a live worker did not confirm in time (the pause is written all the same)."),
    ("resume", "end a pause or a drain", "Removes the pause file. Exit codes: 0, also when there was none "
     "(said on stderr)."),
    ("drain", "pause, then let the running workers exit once their jobs are done (before a reboot)",
     "A pause (see `pause`) that also makes each worker running now exit with 0 once idle, so that "
     "`systemctl stop` afterwards loses nothing. A worker started later stays paused until `resume`. "
     "Exit codes as `pause`."),
)


@dataclass
class PauseOutcome:
    confirmed: list[str] = field(default_factory=list)  # live workers that said "paused"
    unconfirmed: list[str] = field(default_factory=list)  # live ones that did not in time


def pause_and_wait(settings: Settings, worker: str | None = None, *, drain: bool = False,
                   timeout_s: float | None = None) -> PauseOutcome:
    """Pause (a drain: pause, and let the workers running now exit once idle); then wait, at most
    `timeout_s` (default: three heartbeats and the loop's turn), for the live workers it concerns to
    say so. A worker that is not running holds the pause from its next start."""
    pause(settings, worker, drain=drain)
    limit = timeout_s if timeout_s is not None else 3 * heartbeat_interval(settings) + 2.0
    deadline = time.monotonic() + limit
    while True:
        # Celery mode's `run` (the worker "queue") is waited for under a pause of the whole share: it
        # then claims nothing from the inbox into work/queue/ either.
        rows = [row for row in survey(settings, queue=worker is None) if row.up
                and row.activity != "stopped" and worker in (None, row.worker_id)]
        outcome = PauseOutcome(confirmed=[r.worker_id for r in rows if r.paused],
                               unconfirmed=[r.worker_id for r in rows if not r.paused])
        if not outcome.unconfirmed or time.monotonic() >= deadline:
            return outcome
        time.sleep(POLL_S)


def record(settings: Settings, kind: Kind, *, by: str | None = None, writer: str = "commands",
           **fields: object) -> None:
    """An action at the controls in the event log (who, what, when), in the log of its kind of writer
    on this host (`commands`, `web`): one writer per file, never a worker's own."""
    events.append(settings, kind, writer=f"{settings.worker_id}.{writer}", by=by or who(), **fields)


def pause_command(settings: Settings, args: argparse.Namespace) -> int:
    """`pause` and `drain`: what is in force is said on stdout; 1 when a live worker did not confirm."""
    worker, drain = _worker_arg(args.worker), args.command == "drain"
    outcome = pause_and_wait(settings, worker, drain=drain)
    what, target = "draining" if drain else "paused", _target(worker)
    record(settings, "paused", target=worker or "all", drain=drain)
    if outcome.unconfirmed:
        print(f"i2v-watcher: {what} {target}, but {', '.join(outcome.unconfirmed)} did not say so in time "
              "(an older version, or a share that lags); see `i2v-watcher status`", file=sys.stderr)
        return 1
    live = f"in force on {', '.join(outcome.confirmed)}" if outcome.confirmed else "no worker is running"
    print(f"{what} {target} ({live})")
    return 0


def resume_command(settings: Settings, args: argparse.Namespace) -> int:
    """`resume`: 0, also when there was no such pause (said on stderr, with the pauses in force)."""
    worker = _worker_arg(args.worker)
    if resume(settings, worker):
        record(settings, "resumed", target=worker or "all")
        print(f"resumed {_target(worker)}")
        return 0
    left = [pause_line(whom, r.model_dump(mode="json")) for whom, r in pauses(settings).items()]
    print(f"i2v-watcher: {_target(worker)} was not paused" + "".join(f"; {line}" for line in left),
          file=sys.stderr)
    return 0


def _target(worker: str | None) -> str:
    return f"worker {worker}" if worker else "every worker"


def _worker_arg(worker: str | None) -> str | None:
    if worker is not None and not re.fullmatch(WORKER_ID_PATTERN, worker):
        raise StartupError(f"--worker {worker!r} is not a worker id (as `status` lists them)")
    return worker


def priority_command(settings: Settings, args: argparse.Namespace) -> int:
    """`priority NAME N`: the job's new place in the queue on stdout; 2 when no such job is queued."""
    name, priority = str(args.name).strip("/"), int(args.priority)
    inbox = Inbox(settings)
    change_priority(settings, name, priority, inbox=inbox)
    time.sleep(settings.settle_s)  # a new Inbox sees files settle over settle_s: then it has the order
    ready = [job.key for job in queued_jobs(inbox, lambda line: None) if job.why == "ready"]
    place = f"{ready.index(name) + 1} of {len(ready)} ready" if name in ready else "waiting to settle"
    print(f"{name}: priority {priority}; its place in the queue: {place}")
    return 0


def change_priority(settings: Settings, name: str, priority: int, *, by: str | None = None,
                    writer: str = "commands", inbox: Inbox | None = None) -> None:
    """Give a queued job a new priority and write the action to the event log; StartupError (said to
    the person) when the number is out of range or no such job is queued."""
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise StartupError(f"priority {priority} is out of range: {PRIORITY_MIN} to {PRIORITY_MAX}")
    if not any(job.key == name for job in queued_jobs(inbox or Inbox(settings), lambda line: None)):
        raise StartupError(f"no queued job named {name!r} (see `i2v-watcher status`)")
    set_priority(settings, name, priority, by)
    record(settings, "priority", by=by, writer=writer, name=name, priority=priority)
