"""Watch: find the jobs in the inbox that are complete and ready to be claimed.

A filesystem observer (inotify, or polling on network shares where inotify is blind) wakes the daemon up and
says which paths changed; what counts is the inbox itself. A scan walks the whole inbox every `rescan_s` (and
whenever the watcher cannot vouch for its list of changes); in between it looks only at the paths reported.
Either way a file unchanged since the last look keeps what was concluded about it (see scan_cache), so a long
queue or a folder full of litter does not slow every job down. A file is ready when its inode, size and mtime
have been stable for `settle_s` and it could be opened once."""

from __future__ import annotations

import contextlib
import glob
import math
import os
import stat
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import structlog

from i2v_watcher.config.settings import Settings
from i2v_watcher.control.priority import priorities
from i2v_watcher.errors import InboxUnavailable
from i2v_watcher.fs.detours import existing_detour
from i2v_watcher.inbox.bounds import folder_room
from i2v_watcher.inbox.events import Watcher as Watcher
from i2v_watcher.inbox.ignore import ignored
from i2v_watcher.inbox.scan_cache import IMAGE_SUFFIXES as IMAGE_SUFFIXES
from i2v_watcher.inbox.scan_cache import SIDECAR_SUFFIXES as SIDECAR_SUFFIXES
from i2v_watcher.inbox.scan_cache import FileInfo, Tree, identity
from i2v_watcher.inbox.skipped import Skipped
from i2v_watcher.inbox.waits import Waits
from i2v_watcher.job.records import MAX_RECORD_BYTES, REPORT_SUFFIX, FailureReport

UNREADABLE_GIVE_UP_S = 60.0
RETRY_S = 0.1  # a file that could not be opened or read is tried again this much later, at the earliest
# Jobs at the head of the queue whose files are looked at again by a narrowed scan: the watcher's news of
# a job just taken (by this worker or another) can come after the next scan.
HEAD_CHECKED = 8
MAX_LITTER_NAMES = 50_000  # ignored names remembered (logged once each)
log = structlog.get_logger("i2v_watcher.inbox.watch")


@dataclass(frozen=True)
class Candidate:
    """Files of the inbox that belong together: an image and its sidecar, or something to report."""

    key: str  # path relative to the inbox without the suffix: "sub/IMG_0001"
    image: Path | None = None
    sidecar: Path | None = None
    extra: tuple[Path, ...] = ()
    problem: str | None = None  # set when the files can only go to failed/ with a report
    mtime: float = 0.0  # the earliest of its files' mtimes (recorded in job.json; not its place in line)
    priority: int = 0  # the sidecar's `priority`: higher is taken first
    arrived: int = 0  # the earliest ctime (ns) of its files: when it came into the inbox
    # The sidecar's `backend` (`auto` read as `auto_backend`): only a worker that loaded it takes the
    # job (work.routing). None: not given, or the sidecar is not valid: any worker takes it.
    backend: str | None = None
    marker: Path | None = None  # an approve marker (`NAME.approve`): not a job, an approval to act on

    @property
    def order(self) -> tuple[int, int, float, str]:
        """Ready jobs are taken by this: priority (higher first), then the first to arrive, then by path.
        Arrival is the files' ctime, which a rename or a copy into the inbox sets and no user can set
        (mtimes are kept by `cp -p`, rsync and Finder, and may lie years back or ahead). It is stamped
        by the share, so every worker on it, and the daemon after a restart, sees the same order.
        The mtime only orders files that arrived within one tick of the share's clock (a few ms)."""
        return (-self.priority, self.arrived, self.mtime, self.key)

    @property
    def files(self) -> list[Path]:
        return [p for p in (self.image, self.sidecar, self.marker, *self.extra) if p is not None]


@dataclass
class Scan:
    ready: list[Candidate] = field(default_factory=list)
    waiting: int = 0  # files not settled yet, or images waiting for their sidecar
    orphans: int = 0  # sidecars without an image that are still within their grace period
    blocked: int = 0  # jobs and folders that cannot be taken until an operator fixes them
    full: bool = False  # the whole inbox was walked (not only the paths the watcher reported)
    # Monotonic time at which time alone changes this answer (a file settles, a grace period ends);
    # None: only a change in the inbox can. A loop may sleep until then instead of polling.
    recheck_at: float | None = None


@dataclass(frozen=True)
class Queued:
    """One job of the inbox as a person sees it."""

    key: str
    why: str  # "ready", or why it waits
    until: float | None  # monotonic time at which waiting ends by itself; None: only a change can end it
    image: Path | None
    files: tuple[Path, ...] = ()  # all of its files, its image first where it has one
    backend: str | None = None  # the backend its sidecar names (Candidate.backend)
    priority: int | None = None  # a ready job's, as it is taken (an operator's `priority` first)


@dataclass
class _Blocked:
    reason: str
    identity: tuple[tuple[int, int, int], ...]  # the files' (inode, size, mtime) when it was refused
    since: float


class Inbox:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.inbox
        self._ignore = ignored(tuple(settings.ignore_patterns))
        self._tree = Tree(self.root, self._skip_logged, folder_room(
            (settings.inbox, settings.outbox, settings.done, settings.failed)))
        self._ready: dict[str, Candidate] = {}
        self._waiting: dict[str, str] = {}  # job key → why it waits
        self._orphans: set[str] = set()
        self._left: dict[str, Candidate] = {}  # reported once already: see _left_here_before
        self._timers: dict[str, float] = {}  # job key → when time alone can change what it is
        self._order: list[Candidate] | None = None  # self._ready sorted, until it changes
        self._moved: dict[str, int] = {}  # operators' priorities, by job name (control.priority)
        self._last_full = -math.inf
        self._litter_logged: set[str] = set()
        self._was_mount = os.path.ismount(self.root)
        self._blocked: dict[str, _Blocked] = {}  # job key → why its claim was refused
        # job key → its files (inode, size, mtime) when the daemon claimed it, and when
        self._taken: dict[str, tuple[dict[Path, tuple[int, int, int]], float]] = {}
        self.skipped = Skipped()  # what below the inbox cannot be looked at, and why
        self.waits = Waits(settings)  # why jobs wait, in the log

    def block(self, candidate: Candidate, reason: str) -> None:
        """A claim of this job was refused (e.g. its folder is not writable): it is skipped, and tried
        again after `rescan_s` or as soon as its files change. Logged once per distinct reason."""
        previous = self._blocked.get(candidate.key)
        if previous is None or previous.reason != reason:
            log.error("cannot take this job out of the inbox; skipped until it changes or is fixed",
                      job=candidate.key, reason=reason)
        self._blocked[candidate.key] = _Blocked(reason, identity(candidate.files), time.monotonic())

    def taken(self, candidate: Candidate) -> None:
        """The daemon claimed this job: it is not offered again while its files are as they were
        (at most `rescan_s`), even if a scan runs before the claim shows in the inbox: links and
        special files can stay behind, and a watcher's news can come late."""
        files = candidate.files
        self._taken[candidate.key] = (dict(zip(files, identity(files), strict=True)), time.monotonic())

    def _is_blocked(self, candidate: Candidate, now: float) -> bool:
        blocked = self._blocked.get(candidate.key)
        if blocked is None:
            return False
        if blocked.identity == identity(candidate.files) and now - blocked.since < self.settings.rescan_s:
            return True
        blocked.since = now  # tried again, quietly: a new reason logs, the same one does not
        return False

    @property
    def unreadable_folders(self) -> dict[str, str]:
        """The paths below the inbox that the last scan skipped, and why (the rest is served)."""
        return dict(self.skipped.paths)

    def is_ignored(self, name: str) -> bool:
        if name.startswith(".") and name.endswith(".part"):
            return True  # our own files being written (submit, retry): never a job, whatever the config
        return self._ignore.match(name.lower()) is not None

    def check_available(self) -> None:
        try:
            st = os.stat(self.root)
            with os.scandir(self.root) as entries:  # readable; one batch, not the whole listing
                next(entries, None)
        except OSError as exc:
            raise InboxUnavailable(f"{self.root}: {exc.strerror or exc}") from exc
        if not stat.S_ISDIR(st.st_mode):
            raise InboxUnavailable(f"{self.root} is not a folder")
        if self._was_mount and not os.path.ismount(self.root):
            raise InboxUnavailable(f"{self.root} was a mount point and is no longer mounted")

    def scan(self, changes: Collection[str] | None = None) -> Scan:
        """What the inbox holds now. `changes`: the paths the watcher reported since the last scan
        (`Watcher.take_changes()`); only those are looked at, unless it is None or `rescan_s` passed
        since the last full walk: then the whole inbox is walked."""
        self.check_available()
        if (moved := priorities(self.settings)) != self._moved:
            self._moved, self._order = moved, None
        now = time.monotonic()
        # A path outside the inbox means the watcher spells paths otherwise: nothing it says is usable.
        full = changes is None or now - self._last_full >= self.settings.rescan_s \
            or not all(self._tree.inside(path) for path in changes)
        try:
            if full:
                self._last_full = -math.inf  # a walk cut short is done again in full
                self._tree.walk(self._tree.root, now)
                self._last_full = now
            else:
                assert changes is not None
                for path in changes:
                    self._tree.look(path, now)
        except OSError as exc:  # the inbox itself: what is below it is only skipped (Tree.errors)
            self._last_full = -math.inf
            raise InboxUnavailable(f"{self.root}: {exc.strerror or exc}") from exc
        self.skipped.update(self._tree.errors)
        due = self._tree.take_dirty()
        due.update(key for key, at in self._timers.items() if at <= now)
        for key in due:
            self._conclude(key, now)
        self._check_head(now, look=not full)
        return self._result(now, full)

    def _result(self, now: float, full: bool) -> Scan:
        order = self._ordered()
        result = Scan(waiting=len(self._waiting), orphans=len(self._orphans),
                      blocked=len(self.skipped.paths), full=full,
                      recheck_at=min(self._timers.values(), default=None))
        refused = set()
        for key in list(self._blocked):
            candidate = self._ready.get(key) or self._left.get(key)
            if key not in self._tree.groups:
                del self._blocked[key]
            elif candidate is not None and self._is_blocked(candidate, now):
                refused.add(key)
        result.blocked += len(refused)
        for key, (files, since) in list(self._taken.items()):
            candidate = self._ready.get(key)
            # What is left of it (a claim can leave links behind) is hidden; a new file is news.
            if candidate is None or now - since >= self.settings.rescan_s or any(
                    files.get(path) != found for path, found in zip(candidate.files,
                                                                     identity(candidate.files), strict=True)):
                del self._taken[key]
            else:
                refused.add(key)
        result.ready = [c for c in order if c.key not in refused] if refused else list(order)
        return result

    def listing(self) -> list[Queued]:
        """What the last scan saw, for a person: ready jobs first, in the order they will be taken,
        then the ones that wait, each with why."""
        rows = [Queued(c.key, "ready", None, c.image, tuple(c.files), c.backend,
                       self._moved.get(c.key, c.priority)) for c in self._ordered()]
        waiting = [*sorted(self._waiting.items()),
                   *((key, "a sidecar without an image (yet)") for key in sorted(self._orphans))]
        for key, why in waiting:
            files = sorted(self._tree.groups.get(key, {}).values(), key=lambda i: (i.kind != "image", i.path))
            image = next((i.path for i in files if i.kind == "image"), None)
            sidecar = next((i for i in files if i.kind == "sidecar"), None)  # what it will wait for next
            rows.append(Queued(key, why, self._timers.get(key), image, tuple(i.path for i in files),
                               None if sidecar is None else self._backend_of(sidecar)))
        return rows

    def _check_head(self, now: float, look: bool) -> None:
        """The jobs about to be offered first are the ones the daemon may have just taken: a problem
        job whose links or special files stay here is asked again whether its report is in failed/
        (nothing in the inbox changes when it is taken), and with `look` (a narrowed scan) each job's
        files are looked at again, as the watcher's news of a job just taken can come late (inotify
        holds events back a moment to pair renames, polling sees it at its next pass)."""
        confirmed = 0
        for candidate in self._ordered():
            changed = False
            for path, info in list(self._tree.groups.get(candidate.key, {}).items()) if look else ():
                try:
                    same = info.same(os.lstat(path))
                except OSError:
                    same = False
                if not same:
                    changed = True
                    self._tree.look(path, now)
            if not changed and candidate.problem and self._left_here_before(candidate):
                changed = True
                self._tree.dirty.add(candidate.key)
            confirmed += not changed
            if confirmed >= HEAD_CHECKED:
                break
        for key in self._tree.take_dirty():
            self._conclude(key, now)

    def _ordered(self) -> list[Candidate]:
        if self._order is None:
            moved = self._moved  # `priority NAME N` (control.priority): the arrival stays the sidecar's
            self._order = sorted(self._ready.values(), key=lambda c: (
                (-moved[c.key], *c.order[1:]) if c.key in moved else c.order))
        return self._order

    def _conclude(self, key: str, now: float) -> None:
        """What the group `key` is now: ready, waiting, an orphan sidecar, left here, or gone."""
        was_ready = self._ready.pop(key, None) is not None
        self._waiting.pop(key, None)
        self._orphans.discard(key)
        self._left.pop(key, None)
        self._timers.pop(key, None)
        group = self._tree.groups.get(key)
        state = "gone" if not group else self._state(key, list(group.values()), now)
        if was_ready or state == "ready":
            self._order = None
        if state not in ("waiting", "orphan"):
            ready = self._ready.get(key)
            self.waits.ended(key, now, defaults=ready is not None and ready.image is not None
                             and ready.sidecar is None and not ready.problem)

    def _state(self, key: str, files: list[FileInfo], now: float) -> str:
        settle_s = self.settings.settle_s
        pending = [(i, at) for i in files
                   if (at := i.unsettled_until(now, settle_s, UNREADABLE_GIVE_UP_S)) is not None]
        if pending:  # the whole group waits: a sidecar is no orphan while its image arrives
            self._waiting[key] = "settling: its files are still being written"
            at = min(at for _, at in pending)
            self._timers[key] = at if at > now else now + RETRY_S  # > now: a file not opened yet
            self.waits.settling(key, pending, now, UNREADABLE_GIVE_UP_S)
            return "waiting"
        settings = self.settings
        mtime = min(info.mtime for info in files)
        arrived = min(info.ctime_ns for info in files)
        bad = sorted(i.path for i in files if i.kind == "bad")
        images = sorted((i for i in files if i.kind == "image"), key=lambda i: i.path)
        sidecars = sorted((i for i in files if i.kind == "sidecar"), key=lambda i: i.path)
        other = sorted(i.path for i in files if i.kind == "other")
        named = [i.path for i in images + sidecars]
        markers = [i.path for i in files if i.kind == "approve"]
        if markers and not bad:  # its own group (scan_cache.classify): the marker alone
            candidate = Candidate(key, marker=markers[0], mtime=mtime, arrived=arrived)
        elif bad:
            candidate = Candidate(key, extra=tuple(sorted(bad + named)), mtime=mtime, arrived=arrived,
                                  problem="symbolic links and special files are not accepted in the "
                                  "inbox: " + ", ".join(p.name for p in bad))
        elif other:
            candidate = Candidate(key, extra=tuple(other), mtime=mtime, arrived=arrived, problem=(
                f"unsupported file type {other[0].suffix or '(no suffix)'!r}: a job is an image "
                f"({', '.join(IMAGE_SUFFIXES)}) with an optional sidecar ({', '.join(SIDECAR_SUFFIXES)})"))
        elif len(images) > 1 or len(sidecars) > 1:
            candidate = Candidate(key, extra=tuple(named), mtime=mtime, arrived=arrived, problem=(
                "several files share the job name " + repr(Path(key).name) + ": "
                + ", ".join(p.name for p in named) + "; give each image its own name"))
        elif not images:
            due = sidecars[0].since + settings.settle_s + settings.orphan_sidecar_s
            if now < due:
                self._orphans.add(key)
                self._timers[key] = due
                self.waits.orphan(key, due, now)
                return "orphan"
            candidate = Candidate(key, sidecar=sidecars[0].path, mtime=mtime, arrived=arrived, problem=(
                f"a sidecar without an image: no {Path(key).name}.png/.jpg/.jpeg/.webp arrived within "
                f"{settings.orphan_sidecar_s:g} s"))
        else:
            image, sidecar = images[0], (sidecars[0] if sidecars else None)
            due = image.since + settings.settle_s + settings.sidecar_grace_s
            if sidecar is None and now < due:
                self._waiting[key] = "waiting for its sidecar"
                self._timers[key] = due
                self.waits.sidecar(key, due, now)
                return "waiting"
            priority = 0 if sidecar is None else sidecar.read_priority(settings.max_sidecar_bytes)
            if priority is None:  # not readable now: offered as 0, read again a moment later
                self._timers[key] = now + RETRY_S
            candidate = Candidate(key, image=image.path, sidecar=sidecar.path if sidecar else None,
                                  mtime=mtime, arrived=arrived, priority=priority or 0,
                                  backend=None if sidecar is None else self._backend_of(sidecar))
        if self._left_here_before(candidate):
            self._left[key] = candidate
            self._timers[key] = now + settings.rescan_s  # its report may be removed from failed/
            return "left"
        self._ready[key] = candidate
        return "ready"

    def _backend_of(self, sidecar: FileInfo) -> str | None:
        """The backend a sidecar names, `auto` read as the share's `auto_backend` (read with its
        priority, once per version of the file)."""
        sidecar.read_priority(self.settings.max_sidecar_bytes)
        return self.settings.auto_backend if sidecar.backend == "auto" else sidecar.backend

    def _left_here_before(self, candidate: Candidate) -> bool:
        """Links and special files that a failed job left in the inbox (failed/ is on another
        filesystem, where they could only be copied by opening them): reported once, then left alone.
        The report in failed/ is what remembers them, across restarts."""
        if not candidate.problem:
            return False
        names = {p.name for p in candidate.files}
        parent = PurePosixPath(candidate.key).parent  # failed/<parent>/, or its detour (fs.detours)
        folder = self.settings.failed / (existing_detour(self.settings.failed, parent) or parent)
        stem = Path(candidate.key).name
        with contextlib.suppress(OSError):
            for report in folder.glob(f"{glob.escape(stem)}*{REPORT_SUFFIX}"):
                with contextlib.suppress(OSError, ValueError):  # a report that cannot be read: not ours
                    if names <= set(FailureReport.read(report, MAX_RECORD_BYTES).left_in_inbox or ()):
                        return True
        return False

    def _skip_logged(self, name: str) -> bool:
        """is_ignored, logged once per name; the names already logged are also the quick answer for
        the litter a full walk meets again and again."""
        if name in self._litter_logged:
            return True
        if not self.is_ignored(name):
            return False
        if len(self._litter_logged) >= MAX_LITTER_NAMES:  # bounded: a name logged twice is a debug line
            self._litter_logged.clear()
        self._litter_logged.add(name)
        log.debug("ignored", file=name, reason="matches ignore_patterns")
        return True
