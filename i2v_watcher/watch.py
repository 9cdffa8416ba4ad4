"""Watch: find the jobs in the inbox that are complete and ready to be claimed.

A filesystem observer (inotify, or polling on network shares where inotify is blind) only wakes the
daemon up; what counts is a scan of the folder, repeated every `rescan_s` as a safety net. A file is
ready when its size and mtime have been stable for `settle_s` and it can be opened.
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import os
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from i2v_watcher.config import Settings
from i2v_watcher.errors import InboxUnavailable
from i2v_watcher.fsutil import open_nofollow, read_json, walk_files
from i2v_watcher.mounts import filesystem_type, is_network_fs
from i2v_watcher.spec import read_sidecar

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
SIDECAR_SUFFIXES = (".yaml", ".yml")
UNREADABLE_GIVE_UP_S = 60.0
log = structlog.get_logger("i2v_watcher.watch")


@dataclass(frozen=True)
class Candidate:
    """Files of the inbox that belong together: an image and its sidecar, or something to report."""

    key: str  # path relative to the inbox without the suffix: "sub/IMG_0001"
    image: Path | None = None
    sidecar: Path | None = None
    extra: tuple[Path, ...] = ()
    problem: str | None = None  # set when the files can only go to failed/ with a report
    mtime: float = 0.0
    priority: int = 0  # the sidecar's `priority`: higher is taken first

    @property
    def order(self) -> tuple[int, float, str]:
        """Ready jobs are taken by this: priority (higher first), then the oldest, then by path."""
        return (-self.priority, self.mtime, self.key)

    @property
    def files(self) -> list[Path]:
        return [p for p in (self.image, self.sidecar, *self.extra) if p is not None]


@dataclass
class Scan:
    ready: list[Candidate] = field(default_factory=list)
    waiting: int = 0  # files not settled yet, or images waiting for their sidecar
    orphans: int = 0  # sidecars without an image that are still within their grace period
    blocked: int = 0  # jobs and folders that cannot be taken until an operator fixes them


@dataclass
class _Blocked:
    reason: str
    identity: tuple[tuple[int, int, int], ...]  # the files' (inode, size, mtime) when it was refused
    since: float


@dataclass
class _Seen:
    size: int
    mtime_ns: int
    since: float  # monotonic time at which this size and mtime were first seen


class Inbox:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.inbox
        self._seen: dict[Path, _Seen] = {}
        # sidecar → (size, mtime_ns, priority): a backlog's sidecars are not parsed again at every scan
        self._priorities: dict[Path, tuple[int, int, int]] = {}
        self._litter_logged: set[str] = set()
        self._was_mount = os.path.ismount(self.root)
        self._blocked: dict[str, _Blocked] = {}  # job key → why its claim was refused
        self._bad_folders: dict[Path, str] = {}  # sub-folders that cannot be read, and why
        self._folder_errors: dict[Path, str] = {}  # filled by the current walk

    def block(self, candidate: Candidate, reason: str) -> None:
        """A claim of this job was refused (e.g. its folder is not writable): it is skipped, and tried
        again after `rescan_s` or as soon as its files change. Logged once per distinct reason."""
        previous = self._blocked.get(candidate.key)
        if previous is None or previous.reason != reason:
            log.error("cannot take this job out of the inbox; skipped until it changes or is fixed",
                      job=candidate.key, reason=reason)
        self._blocked[candidate.key] = _Blocked(reason, _identity(candidate.files), time.monotonic())

    def _is_blocked(self, candidate: Candidate, now: float) -> bool:
        blocked = self._blocked.get(candidate.key)
        if blocked is None:
            return False
        if blocked.identity == _identity(candidate.files) and now - blocked.since < self.settings.rescan_s:
            return True
        blocked.since = now  # tried again, quietly: a new reason logs, the same one does not
        return False

    def _folder_error(self, folder: Path, exc: OSError) -> None:
        self._folder_errors[folder] = exc.strerror or str(exc)

    def _log_folder_changes(self) -> None:
        """One line when a sub-folder becomes unreadable, one when it is readable again."""
        for folder, reason in self._folder_errors.items():
            if self._bad_folders.get(folder) != reason:
                log.error("a folder in the inbox cannot be read; skipped, the rest is served",
                          folder=str(folder), reason=reason)
        for folder in self._bad_folders.keys() - self._folder_errors.keys():
            log.warning("a folder in the inbox can be read again", folder=str(folder))
        self._bad_folders = self._folder_errors

    def is_ignored(self, name: str) -> bool:
        if name.startswith(".") and name.endswith(".part"):
            return True  # our own files being written (submit, retry): never a job, whatever the config
        lowered = name.lower()
        return any(fnmatch.fnmatchcase(lowered, pattern) for pattern in self.settings.ignore_patterns)

    def check_available(self) -> None:
        try:
            st = os.stat(self.root)
            os.listdir(self.root)
        except OSError as exc:
            raise InboxUnavailable(f"{self.root}: {exc.strerror or exc}") from exc
        if not stat.S_ISDIR(st.st_mode):
            raise InboxUnavailable(f"{self.root} is not a folder")
        if self._was_mount and not os.path.ismount(self.root):
            raise InboxUnavailable(f"{self.root} was a mount point and is no longer mounted")

    def _settled(self, path: Path, st: os.stat_result, now: float) -> bool:
        seen = self._seen.get(path)
        if seen is None or (seen.size, seen.mtime_ns) != (st.st_size, st.st_mtime_ns):
            self._seen[path] = seen = _Seen(st.st_size, st.st_mtime_ns, now)
        if now - seen.since < self.settings.settle_s:
            return False
        if not stat.S_ISREG(st.st_mode):
            return True  # links, FIFOs, sockets: never opened, only reported
        try:  # a file still locked by its writer (SMB) cannot be opened yet
            with open(path, "rb", opener=open_nofollow) as handle:
                handle.read(1)
        except OSError:
            # Locked or unreadable: wait, but not forever; past that it is taken, and the job's
            # report then says why it cannot be read, instead of the file sitting here unexplained.
            return now - seen.since >= UNREADABLE_GIVE_UP_S + self.settings.settle_s
        return True

    def scan(self) -> Scan:
        self.check_available()
        now = time.monotonic()
        groups: dict[str, dict[str, Any]] = {}
        present: set[Path] = set()
        result = Scan()
        self._folder_errors = {}
        try:
            entries = list(walk_files(self.root, self._skip_logged, self._folder_error))
        except OSError as exc:
            raise InboxUnavailable(f"{self.root}: {exc.strerror or exc}") from exc
        self._log_folder_changes()
        result.blocked += len(self._bad_folders)
        unsettled: set[str] = set()
        for path, st in entries:
            present.add(path)
            rel = path.relative_to(self.root)
            suffix = path.suffix.lower()
            # An image and its sidecar pair up by stem; any other file is a group of its own.
            paired = suffix in IMAGE_SUFFIXES + SIDECAR_SUFFIXES
            key = str(rel.with_suffix("")) if paired else str(rel)
            if not self._settled(path, st, now):
                unsettled.add(key)  # the whole group waits: a sidecar is no orphan while its image arrives
                continue
            group = groups.setdefault(key, {})
            group.setdefault("mtime", st.st_mtime)
            group["mtime"] = min(group["mtime"], st.st_mtime)
            if not stat.S_ISREG(st.st_mode):
                group.setdefault("bad", []).append(path)
            elif suffix in IMAGE_SUFFIXES:
                group.setdefault("images", []).append(path)
            elif suffix in SIDECAR_SUFFIXES:
                group.setdefault("sidecars", []).append(path)
            else:
                group.setdefault("other", []).append(path)
        self._seen = {p: s for p, s in self._seen.items() if p in present}
        self._priorities = {p: v for p, v in self._priorities.items() if p in present}
        result.waiting += len(unsettled)
        for key, group in groups.items():
            if key in unsettled:
                continue
            candidate = self._candidate(key, group, now)
            if candidate is not None and self._is_blocked(candidate, now):
                result.blocked += 1
            elif candidate is not None and self._left_here_before(candidate):
                continue
            elif candidate is None:
                if group.get("images"):
                    result.waiting += 1
                else:
                    result.orphans += 1
            else:
                result.ready.append(candidate)
        self._blocked = {k: b for k, b in self._blocked.items() if k in groups}
        result.ready.sort(key=lambda c: c.order)
        return result

    def _left_here_before(self, candidate: Candidate) -> bool:
        """Links and special files that a failed job left in the inbox (failed/ is on another
        filesystem, where they could only be copied by opening them): reported once, then left alone.
        The report in failed/ is what remembers them, across restarts."""
        if not candidate.problem:
            return False
        names = {p.name for p in candidate.files}
        folder = self.settings.failed / Path(candidate.key).parent
        stem = Path(candidate.key).name
        with contextlib.suppress(OSError):
            for report in folder.glob(f"{glob.escape(stem)}*.error.json"):
                with contextlib.suppress(OSError, ValueError):
                    if names <= set(read_json(report, 1024 * 1024).get("left_in_inbox", {})):
                        return True
        return False

    def _candidate(self, key: str, group: dict[str, Any], now: float) -> Candidate | None:
        images: list[Path] = sorted(group.get("images", []))
        sidecars: list[Path] = sorted(group.get("sidecars", []))
        bad: list[Path] = group.get("bad", [])
        other: list[Path] = group.get("other", [])
        mtime = group["mtime"]
        if bad:
            files = tuple(sorted(bad + images + sidecars))
            return Candidate(key, extra=files, mtime=mtime,
                             problem="symbolic links and special files are not accepted in the inbox: "
                             + ", ".join(p.name for p in bad))
        if other:
            return Candidate(key, extra=tuple(other), mtime=mtime, problem=(
                f"unsupported file type {other[0].suffix or '(no suffix)'!r}: a job is an image "
                f"({', '.join(IMAGE_SUFFIXES)}) with an optional sidecar ({', '.join(SIDECAR_SUFFIXES)})"))
        if len(images) > 1 or len(sidecars) > 1:
            return Candidate(key, extra=tuple(images + sidecars), mtime=mtime, problem=(
                "several files share the job name " + repr(Path(key).name) + ": "
                + ", ".join(p.name for p in images + sidecars) + "; give each image its own name"))
        sidecar = sidecars[0] if sidecars else None
        if not images:
            assert sidecar is not None
            waited = now - self._seen[sidecar].since - self.settings.settle_s
            if waited < self.settings.orphan_sidecar_s:
                return None
            return Candidate(key, sidecar=sidecar, mtime=mtime, problem=(
                f"a sidecar without an image: no {Path(key).name}.png/.jpg/.jpeg/.webp arrived within "
                f"{self.settings.orphan_sidecar_s:g} s"))
        image = images[0]
        if sidecar is None and now - self._seen[image].since - self.settings.settle_s \
                < self.settings.sidecar_grace_s:
            return None
        priority = 0 if sidecar is None else self._priority(sidecar)
        return Candidate(key, image=image, sidecar=sidecar, mtime=mtime, priority=priority)

    def _priority(self, sidecar: Path) -> int:
        """The sidecar's `priority`, read once per version of the file (size and mtime). Read like the
        job will read it (no links, size-capped, the strict parser); any problem counts as 0: the job
        then fails properly, with a report, when it is run."""
        seen = self._seen[sidecar]
        cached = self._priorities.get(sidecar)
        if cached is not None and cached[:2] == (seen.size, seen.mtime_ns):
            return cached[2]
        try:
            priority = read_sidecar(sidecar, max_bytes=self.settings.max_sidecar_bytes).priority or 0
        except OSError:
            return 0  # not remembered: a share's hiccup is read again at the next scan
        except Exception:  # whatever is wrong with the sidecar is the job's error, reported when it runs
            priority = 0
        self._priorities[sidecar] = (seen.size, seen.mtime_ns, priority)
        return priority

    def _skip_logged(self, name: str) -> bool:
        if not self.is_ignored(name):
            return False
        if name not in self._litter_logged:
            self._litter_logged.add(name)
            log.debug("ignored", file=name, reason="matches ignore_patterns")
        return True


def _identity(files: list[Path]) -> tuple[tuple[int, int, int], ...]:
    found = []
    for path in files:
        try:
            st = os.lstat(path)
        except OSError:
            found.append((0, 0, 0))
            continue
        found.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(found)


class Watcher:
    """Wakes the daemon when something changes in the inbox; inotify or polling, chosen by filesystem."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.changed = threading.Event()
        self._observer: Any = None
        self.mode = self._choose_mode()

    def _choose_mode(self) -> str:
        mode = self.settings.watch_mode
        fstype = filesystem_type(self.settings.inbox)
        if mode == "auto":
            mode = "poll" if is_network_fs(fstype) else "inotify"
            log.info("watch mode chosen", mode=mode, filesystem=fstype or "unknown",
                     inbox=str(self.settings.inbox),
                     reason="network filesystem: inotify cannot see other hosts' writes"
                     if mode == "poll" else "local filesystem")
        else:
            log.info("watch mode configured", mode=mode, filesystem=fstype or "unknown")
        return mode

    def start(self) -> None:
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer
        from watchdog.observers.api import BaseObserver
        from watchdog.observers.polling import PollingObserver

        changed = self.changed

        class Wake(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                changed.set()

        observer: BaseObserver = (PollingObserver(timeout=self.settings.poll_interval_s)
                                  if self.mode == "poll" else Observer())
        observer.schedule(Wake(), str(self.settings.inbox), recursive=True)
        try:
            observer.start()
        except OSError as exc:  # e.g. the inotify watch limit is reached
            log.warning("inotify unavailable, polling instead", error=str(exc))
            self.mode = "poll"
            observer = PollingObserver(timeout=self.settings.poll_interval_s)
            observer.schedule(Wake(), str(self.settings.inbox), recursive=True)
            observer.start()
        self._observer = observer

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
