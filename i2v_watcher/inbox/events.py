"""The watcher: an observer (inotify, or polling on network shares where inotify is blind) that wakes the
daemon when something changes in the inbox and records which paths changed, so that a scan can look at
those alone (`Inbox.scan(watcher.take_changes())`). It never decides what a job is: the scan does.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, ClassVar

import structlog

from i2v_watcher.config.settings import Settings
from i2v_watcher.fs.mounts import filesystem_type, is_network_fs
from i2v_watcher.inbox.bounds import bounded_listdir

# Paths kept between two scans; past that, a full walk is the cheaper way to catch up.
MAX_CHANGES = 50_000
log = structlog.get_logger("i2v_watcher.inbox.watch")


class Watcher:
    """Wakes the daemon when something changes in the inbox and records which paths changed;
    inotify or polling, chosen by filesystem."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.changed = threading.Event()
        self._observer: Any = None
        self._changes = ChangeLog(MAX_CHANGES)
        self._overflow = OverflowCue(self.lost)
        self._threads: set[threading.Thread] = set()  # the observer's threads: see `healthy`
        self._replaced_at = -math.inf
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

    def take_changes(self) -> set[str] | None:
        """The paths that changed since the last call, for `Inbox.scan`. None when some may be
        missing (the watcher just started, is stopped, or lost events): the inbox is then walked."""
        return self._changes.take(self.healthy())

    def healthy(self) -> bool:
        """The observer runs, and so does every thread it started. watchdog can lose a thread to an
        error it does not catch (its recursive walk of a tree nested 1,000 folders deep raises
        RecursionError in the thread that reads inotify's events): the observer then looks alive but
        reports nothing, and its silence must not be taken for "nothing changed"."""
        observer = self._observer
        return observer is not None and observer.is_alive() \
            and all(emitter.is_alive() for emitter in observer.emitters) \
            and all(thread.is_alive() for thread in self._threads)

    def check(self) -> None:
        """At every turn of the daemon's loop: an observer that lost a thread is replaced by polling
        (kept to the bounds, which no tree in the inbox can break), and the next scan walks the inbox.
        At most once per `rescan_s`: meanwhile the scans walk the inbox, as they do when the watcher
        cannot vouch for its list of changes."""
        now = time.monotonic()
        if self._observer is None or self.healthy() or now - self._replaced_at < self.settings.rescan_s:
            return
        self._replaced_at = now
        dead = sorted(t.name for t in self._threads if not t.is_alive())
        log.error("the inbox watcher stopped working; polling the inbox instead", mode=self.mode,
                  dead_threads=dead, poll_interval_s=self.settings.poll_interval_s,
                  hint="a folder nested too deep for the watcher? the scans skip and report it")
        self.stop()
        self.mode = "poll"
        self.start()
        self.lost()

    def lost(self) -> None:
        """Events were lost: the next scan walks the whole inbox."""
        self._changes.lost()
        self.changed.set()

    def start(self) -> None:
        from watchdog import events
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer
        from watchdog.observers.api import BaseObserver
        from watchdog.observers.polling import PollingObserverVFS

        changed, record = self.changed, self._changes.record
        # inotify does not follow an inbox that is a link to the share's folder: watch the folder
        # itself, and report its paths under the inbox's own name, as a scan spells them.
        inbox = str(self.settings.inbox)
        real = os.path.realpath(inbox)

        def spell(path: str) -> str:
            return inbox + path[len(real):] if path == real or path.startswith(real + os.sep) else path
        # Reads are no news: the scan's own opens would wake the daemon for another scan.
        wanted = [events.FileCreatedEvent, events.DirCreatedEvent, events.FileModifiedEvent,
                  events.DirModifiedEvent, events.FileDeletedEvent, events.DirDeletedEvent,
                  events.FileMovedEvent, events.DirMovedEvent, events.FileClosedEvent]

        class Record(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                record(spell(os.fsdecode(event.src_path)), spell(os.fsdecode(event.dest_path)))
                changed.set()

        def observe(mode: str) -> BaseObserver:
            observer = Observer() if mode == "inotify" else PollingObserverVFS(
                os.lstat, bounded_listdir(real), polling_interval=self.settings.poll_interval_s)
            try:
                observer.schedule(Record(), real, recursive=True, event_filter=wanted)
                observer.start()
            except BaseException:
                with contextlib.suppress(Exception):  # its threads may not have started
                    observer.stop()
                raise
            return observer

        self._changes.lost()  # what changed while no observer ran is unknown: the next scan walks
        ThreadDeath.install(self.changed)
        before = set(threading.enumerate())
        try:
            self._observer = observe(self.mode)
        except (OSError, RecursionError) as exc:
            # The inotify watch limit is reached, or watchdog's recursive walk met a tree too deep for
            # it. Polling is kept to the bounds (bounded_listdir): it never walks such a tree.
            log.warning("inotify unavailable, polling instead", error=str(exc) or type(exc).__name__)
            self.mode = "poll"
            self._observer = observe("poll")
        born = {t for t in set(threading.enumerate()) - before if _is_watchdogs(t)}
        self._threads = {t for t in self._threads if t.is_alive()} | born
        self._overflow.attach()

    def stop(self) -> None:
        self._overflow.detach()
        observer = self._observer
        if observer is not None:
            # Its own threads are done with, even one slow to end; the shared ones (watchdog's one
            # inotify reader) stay watched, by the next observer.
            self._threads -= {observer, *observer.emitters}
            with contextlib.suppress(Exception):  # an observer that lost a thread may fail to stop
                observer.stop()
                observer.join(timeout=5)
            self._observer = None
        self._changes.lost()


def _is_watchdogs(thread: threading.Thread | None) -> bool:
    return thread is not None and type(thread).__module__.startswith("watchdog")


class ThreadDeath:
    """A watchdog thread that dies of an error it does not catch is one error line in the log (not a
    traceback on stderr that reads like a crash of the daemon), and wakes the loop, whose
    `Watcher.check` replaces the observer. Other threads' errors go where they went before."""

    _installed: ClassVar[bool] = False
    _wake: ClassVar[weakref.WeakSet[threading.Event]] = weakref.WeakSet()  # each watcher's, while it lives

    @classmethod
    def install(cls, wake: threading.Event) -> None:
        cls._wake.add(wake)
        if cls._installed:
            return
        cls._installed = True
        previous = threading.excepthook

        def hook(args: Any) -> None:
            if not _is_watchdogs(args.thread):
                previous(args)
                return
            log.error("an inbox watcher thread died", thread=args.thread.name,
                      error=f"{args.exc_type.__name__}: {args.exc_value}")
            for event in list(cls._wake):
                event.set()

        threading.excepthook = hook


class ChangeLog:
    """The paths a watcher reported since they were last taken, and whether they are all that changed:
    not after a (re)start (what changed before it is unknown), nor after events were lost. Bounded:
    past `limit` paths a full walk is the cheaper way to catch up anyway."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._lock = threading.Lock()
        self._paths: set[str] = set()
        self._complete = False

    def record(self, *paths: str) -> None:
        with self._lock:
            if not self._complete:
                return  # the next take asks for a full walk anyway
            self._paths.update(p for p in paths if p)
            if len(self._paths) > self._limit:
                self._complete, self._paths = False, set()

    def take(self, watching: bool) -> set[str] | None:
        """The paths recorded since the last take; None when they may not be all. `watching`: the
        observer runs now, so the paths from now on are complete."""
        with self._lock:
            paths, complete = self._paths, self._complete and watching
            self._complete, self._paths = watching, set()
        return paths if complete else None

    def lost(self) -> None:
        with self._lock:
            self._complete, self._paths = False, set()


class OverflowCue(logging.Filter):
    """watchdog tells that the kernel's inotify queue overflowed (events were dropped) only in a log
    line: that line is the cue to call `lost`, so that the next scan walks the whole inbox."""

    LOGGER = "watchdog.observers.inotify_c"

    def __init__(self, lost: Callable[[], None]) -> None:
        super().__init__()
        self._lost = lost

    def attach(self) -> None:
        logging.getLogger(self.LOGGER).addFilter(self)

    def detach(self) -> None:
        logging.getLogger(self.LOGGER).removeFilter(self)

    def filter(self, record: logging.LogRecord) -> bool:
        if "overflow" in record.getMessage().lower():
            self._lost()
        return True
