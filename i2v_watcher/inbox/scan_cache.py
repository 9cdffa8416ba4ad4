"""What the inbox's scans learned, kept from one scan to the next.

A file whose inode, size and mtime are those it had at the last look keeps what was concluded about it
(settled since when, opened once, its sidecar's priority): a full walk costs one lstat per file and
nothing more, and a look narrowed to the paths the watcher reported costs nothing for the others. The
folders walked are remembered too, so that a narrowed look knows where the part it can trust ends.
What a walk no longer finds is forgotten: the memory follows the inbox, not its history.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from i2v_watcher.fs.atomic import open_nofollow
from i2v_watcher.inbox.bounds import PATH_MAX, beyond, skip_reason
from i2v_watcher.job.spec import read_sidecar

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
SIDECAR_SUFFIXES = (".yaml", ".yml")
APPROVE_SUFFIX = ".approve"  # `NAME.approve`: approve the draft NAME (run.drafts), a group of its own


def classify(rel: str, regular: bool) -> tuple[str, str]:
    """A file's job key and kind, from its path relative to the inbox. An image and its sidecar pair
    up by stem; any other file is a group of its own."""
    suffix = os.path.splitext(rel)[1].lower()
    if not regular:
        kind = "bad"
    elif suffix in IMAGE_SUFFIXES:
        kind = "image"
    elif suffix in SIDECAR_SUFFIXES:
        kind = "sidecar"
    elif suffix == APPROVE_SUFFIX:
        kind = "approve"
    else:
        kind = "other"
    paired = suffix in IMAGE_SUFFIXES + SIDECAR_SUFFIXES
    return (rel[: -len(suffix)] if paired else rel), kind


def identity(files: list[Path]) -> tuple[tuple[int, int, int], ...]:
    """The files' (inode, size, mtime) as they are now; zeros for one that is gone."""
    found = []
    for path in files:
        try:
            st = os.lstat(path)
        except OSError:
            found.append((0, 0, 0))
            continue
        found.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(found)


@dataclass(slots=True)
class FileInfo:
    path: Path
    key: str  # the group it belongs to: an image and its sidecar share one
    kind: str  # "image", "sidecar", "approve" (a marker), "other" (no job's file), "bad" (a link, a FIFO)
    ino: int
    size: int
    mtime_ns: int
    mtime: float
    ctime_ns: int  # when it arrived, as far as the share can tell: a rename or copy sets it, a user can't
    since: float  # monotonic time at which this version (inode, size, mtime) was first seen
    walk: int = 0  # the last walk that saw it: what a walk did not see is gone
    opened: bool = False  # this version could be opened once: it is never opened again
    priority: int | None = None  # a sidecar's `priority`, read once per version
    backend: str | None = None  # and its `backend` (None: not given, or not a valid sidecar)

    def same(self, st: os.stat_result) -> bool:
        return self.ino == st.st_ino and self.size == st.st_size and self.mtime_ns == st.st_mtime_ns

    def unsettled_until(self, now: float, settle_s: float, give_up_s: float) -> float | None:
        """None when this version has settled: stable for `settle_s` and opened once; else when to
        look again (`now` when it could not be opened: at the next look)."""
        settled_at = self.since + settle_s
        if now < settled_at:
            return settled_at
        if self.opened or self.kind == "bad":
            return None  # links, FIFOs, sockets: never opened, only reported
        try:  # a file still locked by its writer (SMB) cannot be opened yet
            with open(self.path, "rb", opener=open_nofollow) as handle:
                handle.read(1)
        except OSError:
            # Locked or unreadable: wait, but not forever; past that it is taken, and the job's
            # report then says why it cannot be read, instead of the file sitting here unexplained.
            return None if now >= settled_at + give_up_s else now
        self.opened = True
        return None

    def read_priority(self, max_bytes: int) -> int | None:
        """A sidecar's `priority` (and its `backend`, which says which workers may take the job), read
        once per version. Read like the job will read it (no links, size-capped, the strict parser); any
        problem counts as 0 and no backend: the job then fails properly, with a report, when it is run,
        by whichever worker takes it. None: it cannot be read now (offered as 0, read at the next scan)."""
        if self.priority is None:
            try:
                spec = read_sidecar(self.path, max_bytes=max_bytes)
            except OSError:
                return None  # not remembered: a share's hiccup is read again at the next scan
            except Exception:  # whatever is wrong with the sidecar is the job's error, reported when run
                self.priority = 0
            else:
                self.priority, self.backend = spec.priority or 0, spec.backend
        return self.priority


class Tree:
    """The inbox's files as last seen, grouped by job key; `dirty` names the groups changed since the
    caller last took it."""

    def __init__(self, root: Path, skip: Callable[[str], bool], room: int = PATH_MAX) -> None:
        self.root = str(root)
        self._prefix = os.path.join(self.root, "")
        self._skip = skip
        self._room = room  # bytes a folder's path below the root may have (bounds.folder_room)
        self.files: dict[str, FileInfo] = {}
        self.groups: dict[str, dict[str, FileInfo]] = {}
        # Folders walked, with (inode, mode): a folder replaced or made readable again is walked anew.
        self.folders: dict[str, tuple[int, int]] = {}
        self.errors: dict[str, str] = {}  # folders that could not be read, and why
        self.dirty: set[str] = set()
        self._walks = 0

    def inside(self, path: str) -> bool:
        return path == self.root or path.startswith(self._prefix)

    def take_dirty(self) -> set[str]:
        dirty, self.dirty = self.dirty, set()
        return dirty

    def walk(self, top: str, now: float, st: os.stat_result | None = None) -> None:
        """Look again at everything below `top` (the root: a full walk); forget what is not there.
        The root's errors are raised; anything below it that cannot be looked at (unreadable, a path
        too long, nested too deep: see bounds) is only recorded in `errors`, and skipped."""
        if top == self.root:
            st = os.stat(top)  # the inbox itself may be a link to the share's folder
        elif st is None:
            try:
                st = os.lstat(top)
            except OSError as exc:
                self._forget_below(top)
                if not isinstance(exc, FileNotFoundError):
                    self.errors[top] = skip_reason(exc)
                return
        if not stat.S_ISDIR(st.st_mode):
            self._forget_below(top)
            self._saw(top, st, now)
            return
        self._walks += 1
        walk = self._walks
        below = self._below(top)
        self.folders = {f: v for f, v in self.folders.items() if not below(f)}
        self.errors = {f: v for f, v in self.errors.items() if not below(f)}
        stack = [(top, (st.st_ino, st.st_mode))]
        while stack:
            folder, identity = stack.pop()
            self.folders[folder] = identity
            if folder != self.root and (why := beyond(self._prefix, folder, self._room)):
                self.errors[folder] = why  # what is below is never listed: no walk can run away
                continue
            try:
                listing = os.scandir(folder)
            except OSError as exc:
                if folder == self.root:
                    raise
                self.errors[folder] = skip_reason(exc)
                continue
            with listing as entries:
                for entry in entries:
                    path = entry.path
                    info = self.files.get(path)
                    if info is None and self._skip(entry.name):  # a name known here was not skipped
                        continue
                    try:
                        est = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    except OSError as exc:  # e.g. ENAMETOOLONG past PATH_MAX: this entry alone is skipped
                        self.errors[path] = skip_reason(exc)
                        continue
                    if stat.S_ISDIR(est.st_mode):
                        stack.append((path, (est.st_ino, est.st_mode)))
                        continue
                    if info is None or not info.same(est):
                        info = self._saw(path, est, now)
                    info.walk = walk
        for path in [p for p, info in self.files.items() if info.walk != walk and below(p)]:
            self._drop(path)

    def look(self, path: str, now: float) -> None:
        """Bring one path up to date (the watcher reported it): a file is looked at alone, a folder
        that is new, replaced or was unreadable is walked, a path that is gone is forgotten with what
        was below it. A path inside a folder not walked yet has that folder walked instead."""
        if not path.startswith(self._prefix):
            return
        parent = os.path.dirname(path)
        while parent != self.root and (parent not in self.folders or parent in self.errors):
            path, parent = parent, os.path.dirname(parent)
        if self._skip(os.path.basename(path)):
            return
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            self._forget_below(path)
            return
        except OSError:  # e.g. its folder lost its x bit: that folder's walk records why
            self.walk(parent, now)
            return
        if stat.S_ISDIR(st.st_mode):
            self._drop(path)
            if self.folders.get(path) != (st.st_ino, st.st_mode) or path in self.errors:
                self.walk(path, now, st)
            return
        if path in self.folders:
            self._forget_below(path)
        self._saw(path, st, now)

    def _saw(self, path: str, st: os.stat_result, now: float) -> FileInfo:
        info = self.files.get(path)
        if info is not None and info.same(st):
            return info
        rel = path[len(self._prefix):]
        key, kind = classify(rel, stat.S_ISREG(st.st_mode))
        if info is not None and info.key != key:
            self._drop(path)
        info = FileInfo(Path(path), key, kind, st.st_ino, st.st_size, st.st_mtime_ns, st.st_mtime,
                        st.st_ctime_ns, now)
        self.files[path] = info
        self.groups.setdefault(key, {})[path] = info
        self.dirty.add(key)
        return info

    def _drop(self, path: str) -> None:
        info = self.files.pop(path, None)
        if info is None:
            return
        group = self.groups.get(info.key)
        if group is not None:
            group.pop(path, None)
            if not group:
                del self.groups[info.key]
        self.dirty.add(info.key)

    def _forget_below(self, top: str) -> None:
        below = self._below(top)
        for path in [p for p in self.files if below(p)]:
            self._drop(path)
        self.folders = {f: v for f, v in self.folders.items() if not below(f)}
        self.errors = {f: v for f, v in self.errors.items() if not below(f)}

    def _below(self, top: str) -> Callable[[str], bool]:
        if top == self.root:
            return lambda path: True
        inside = os.path.join(top, "")
        return lambda path: path == top or path.startswith(inside)
