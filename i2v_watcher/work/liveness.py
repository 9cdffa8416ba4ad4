"""Whether a worker is alive: one judge, one vocabulary, for takeover, `status`, the dashboard and its
/metrics. The judge sees how old a worker's last heartbeat is; who measures that age, and how, is
the caller's (see below), so that no one ever compares two hosts' clocks.

Liveness (`state`):

- **alive**: it beat within the last two beat intervals (`interval_s`, in its heartbeat);
- **late**: two beats missed (its age is at least 2 x interval_s), not yet `lease_timeout_s`: a
  share that hiccups, a host under load, or the start of a freeze. Still counted as up;
- **stale**: no beat for `lease_timeout_s`: its jobs may now be taken over (a process that is frozen,
  dead or cut off from the share, or a job without progress for `max_silent_s`);
- **stopped**: it ended on purpose (its last heartbeat says "stopped"): its jobs may be taken over at
  once, there is nobody to wait for;
- **dead**: gone without stopping: it missed two beats, and its process is known not to exist (its
  heartbeat names this host, and no i2v process has its pid here). Only a host that can see the
  process can tell; elsewhere the same worker reads late, then stale. Never judged while the heartbeat
  moves, so a pid that this host cannot see (another pid namespace) never makes a live worker dead;
- **unknown**: no readable heartbeat; a worker folder whose heartbeat stays unreadable for
  `lease_timeout_s` (or whose folder has not changed for that long) is stale. A start that fails
  removes the folder it took; one killed before its first beat leaves only its lock, and is no
  longer listed once any start would be over (work.survey).

Activity is a separate field: idle, working (on the jobs listed), paused (by an operator: it claims
nothing, and finishes the jobs listed) or stopped. A worker that is idle,
or paused while the inbox is away, is alive as long as it beats.

The ages. Takeover (LeaseObserver) measures, as before, for how long the heartbeat's counter has not
moved on the observer's own monotonic clock; it takes over only what is stale or stopped by that age.
`status` is one-shot and cannot watch a counter: it, the dashboard and /metrics measure the age on the
*share's* clock, from the heartbeat file's mtime against the mtime of a probe file created in work/
now: the file server stamps both (see share_now). Both measure the time since the last beat, so the
verdicts agree but for the moment it takes a reader to see a beat.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from i2v_watcher.config.settings import Settings
from i2v_watcher.job.worker_records import HeartbeatRecord

ALIVE, LATE, STALE, STOPPED, DEAD, UNKNOWN = "alive", "late", "stale", "stopped", "dead", "unknown"
STATES = (ALIVE, LATE, STALE, STOPPED, DEAD, UNKNOWN)
TAKE_OVER = (STALE, STOPPED)  # what takeover may take the jobs of (dead: once stale by takeover's age)
LATE_AFTER_BEATS = 2
PROBE_PREFIX = ".clock-"  # work/.clock-<host>-<pid>-<token>: created, stamped, removed at once
NEWEST_HEARTBEAT = "newest heartbeat"


@dataclass(frozen=True)
class Thresholds:
    """When a worker is late and when stale: `interval_s` is the worker's own beat interval (from its
    heartbeat), `lease_timeout_s` the observer's setting."""

    interval_s: float
    lease_timeout_s: float

    @property
    def late_after_s(self) -> float:
        return min(LATE_AFTER_BEATS * self.interval_s, self.lease_timeout_s)


def heartbeat_interval(settings: Settings) -> float:
    """Several beats per lease, and at least one every 2 s so that `status` is current (a small JSON
    file rewritten on the share)."""
    return max(0.2, min(2.0, settings.lease_timeout_s / 6))


def thresholds(beat: HeartbeatRecord | None, settings: Settings) -> Thresholds:
    """The worker's own beat interval where its heartbeat says it, this process's lease_timeout_s."""
    said = None if beat is None else beat.interval_s
    sane = said is not None and 0 < said <= settings.lease_timeout_s
    interval = said if sane and said is not None else heartbeat_interval(settings)
    return Thresholds(interval, settings.lease_timeout_s)


def judge(beat: HeartbeatRecord | None, age_s: float | None, limits: Thresholds,
          process: str | None = None) -> str:
    """A worker's liveness from its heartbeat (None: unreadable), the heartbeat's age (None: not
    known) and, where the worker runs on this host, its process ("running", "frozen" or "gone")."""
    if beat is None:
        return STALE if age_s is not None and age_s >= limits.lease_timeout_s else UNKNOWN
    if beat.state == STOPPED:
        return STOPPED
    if age_s is None:
        return UNKNOWN
    if age_s >= limits.late_after_s and process == "gone":
        return DEAD
    if age_s >= limits.lease_timeout_s:
        return STALE
    return LATE if age_s >= limits.late_after_s else ALIVE


def activity(beat: HeartbeatRecord | None) -> str | None:
    """What the worker does, apart from whether it is alive."""
    if beat is None:
        return None
    if beat.state == STOPPED:
        return STOPPED
    if beat.paused:
        return "paused"  # its jobs, if any, still listed: a paused worker finishes them
    return "working" if beat.jobs or beat.job_id else "idle"


def probe_share_time(folder: Path) -> float:
    """Now, on the clock of the server that holds `folder`: the mtime of a file created there now (the
    server stamps a new file, as it stamps the heartbeats written into work/), removed at once."""
    probe = folder / f"{PROBE_PREFIX}{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        return os.fstat(fd).st_mtime
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(probe)


def share_now(work: Path, beats: Iterable[float]) -> tuple[float | None, str]:
    """What heartbeat ages are measured against, and what it is. A probe file in work/ where this
    process may write there; else (a read-only dashboard or shell) the newest heartbeat's mtime: a
    lower bound of now on the share's clock, so ages are never too large, but a worker can only read
    late or stale while another one still beats."""
    try:
        return probe_share_time(work), "share"
    except OSError:
        return max(beats, default=None), NEWEST_HEARTBEAT


def process_state(beat: HeartbeatRecord) -> str | None:
    """The worker's process where its heartbeat names this host: "running", "frozen" (SIGSTOP, a
    debugger) or "gone" (no such process, a zombie, or the pid now belongs to a program that is not
    i2v). None elsewhere, and where this host cannot tell (another user's process under hidepid)."""
    if beat.host != socket.gethostname():
        return None
    pid = beat.pid
    if pid is None or pid <= 0:
        return "gone"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "gone"
    except PermissionError:
        pass  # it exists: another user's
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    code = fields[0] if fields else ""
    if code in ("Z", "X", "x") or (command and b"i2v" not in command):
        return "gone"  # exited (a zombie), or the pid is another program's now
    if not command:
        return None  # a process between fork and exec, or a kernel thread: cannot tell
    return "frozen" if code in ("T", "t") else "running"
