"""How far below the inbox the daemon looks. A user can move any tree into the inbox: one nested 1,200
folders deep, or one whose paths are longer than the system allows (PATH_MAX). No real job is nested
like that (and past PATH_MAX none could even be opened by its path), and walking such a tree without
a bound is what breaks walkers (recursion limits, ENAMETOOLONG). So a folder nested deeper than
MAX_DEPTH, and any entry whose path is too long, is skipped and reported; the rest of the inbox is
served as usual. Too long is measured against the longest of the folders a job's files go to (a job's
sub-folder is kept in the outbox, done/ and failed/), so that every job taken can also be published
or reported.

Both the scan (scan_cache.Tree) and the polling watcher (events.Watcher, through `bounded_listdir`)
keep to these bounds, so neither ever walks into such a subtree.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from i2v_watcher.fs.atomic import NAME_MAX

# Folder levels below the inbox that are looked into: inbox/1/2/.../100/photo.png is a job, a folder at
# level 101 is skipped. Far more than any real folder layout; far less than Python's recursion limit
# (1,000), which library walkers (watchdog's) run into.
MAX_DEPTH = 100
try:
    PATH_MAX = os.pathconf("/", "PC_PATH_MAX")  # bytes, the terminating NUL included: 4096 on Linux
except (OSError, ValueError):  # pragma: no cover - every POSIX system answers
    PATH_MAX = 4096
# A folder's copy in failed/ or done/ may take a detour name (`<name>-<tag>`, fs.detours): room for it.
DETOUR_ROOM = 64
TOO_DEEP = f"nested more than {MAX_DEPTH} folders below the inbox: not looked into"
TOO_LONG = (f"its path is too long (the system allows {PATH_MAX} bytes, and its copies in the outbox, "
            "done/ and failed/ must fit too): not looked into")
BOUND_REASONS = (TOO_DEEP, TOO_LONG)
SHOWN_CHARS = 160  # a path longer than this is shown with its middle left out


def depth(root_prefix: str, path: str) -> int:
    """How many levels below the inbox `path` is (`root_prefix`: the inbox's path with a trailing
    separator): inbox/a is 1, inbox/a/b is 2."""
    return path.count(os.sep, len(root_prefix)) + 1


def too_long(path: str) -> bool:
    return len(os.fsencode(path)) >= PATH_MAX


def folder_room(roots: Iterable[Path]) -> int:
    """How long (in bytes) the path of a folder below the inbox may be: the same folder below each of
    `roots` (the inbox, outbox, done/, failed/: a job's outputs and inputs keep its sub-folder) must
    still hold a file of any name. A deeper job could be claimed, and then never be published or
    reported."""
    longest = max(len(os.fsencode(os.path.abspath(root))) for root in roots)
    # The NUL, the separators, a whole file name, and a detour's tag on one of the folders.
    return PATH_MAX - 1 - longest - 1 - NAME_MAX - 1 - DETOUR_ROOM


def beyond(root_prefix: str, folder: str, room: int) -> str | None:
    """Why a folder below the inbox is past the bounds (TOO_DEEP, TOO_LONG), or None."""
    if depth(root_prefix, folder) > MAX_DEPTH:
        return TOO_DEEP
    if len(os.fsencode(folder)) - len(os.fsencode(root_prefix)) > room:
        return TOO_LONG
    return None


def skip_reason(exc: OSError) -> str:
    """Why an entry of the inbox was skipped, from the error met when looking at it."""
    if exc.errno == errno.ENAMETOOLONG:
        return TOO_LONG
    return exc.strerror or str(exc)


def shorten(path: str) -> str:
    """A path short enough for a log line or a status line: a 4 KB path is shown by its two ends."""
    if len(path) <= SHOWN_CHARS:
        return path
    half = SHOWN_CHARS // 2
    return f"{path[:half]}…{path[-half:]} ({len(os.fsencode(path))} bytes)"


def bounded_listdir(root: str) -> Callable[[str | None], Iterator[os.DirEntry[str]]]:
    """os.scandir for watchdog's polling observer, kept to the bounds: a folder too deep or an entry
    whose path is too long is left out, and a sub-folder that cannot be listed reads as empty (only the
    inbox itself failing is an error), so that no subtree stops the observer."""
    prefix = os.path.join(root, "")

    def listdir(path: str | None) -> Iterator[os.DirEntry[str]]:
        folder = os.fspath(path or ".")
        try:
            listing = os.scandir(folder)
        except OSError:
            if folder == root:
                raise
            return
        with listing as entries:
            for entry in entries:
                if too_long(entry.path):
                    continue
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    continue
                if is_dir and depth(prefix, entry.path) > MAX_DEPTH:
                    continue
                yield entry

    return listdir
