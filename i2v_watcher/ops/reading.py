"""Reading the shared folders from any host, as untrusted input: names made safe for a terminal,
why a file could not be used, folder walks that skip what cannot be read (with a warning)."""

from __future__ import annotations

import errno
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from i2v_watcher.fs.atomic import walk_files
from i2v_watcher.job.spec import unsafe_char

Warn = Callable[[str], None]


# What reading an untrusted JSON file can raise: missing, a link, too large, not JSON, nested too deep.
UNREADABLE = (OSError, ValueError, RecursionError)


def reason(exc: BaseException) -> str:
    """Why a file could not be used, in a person's words."""
    if isinstance(exc, OSError):
        text = exc.strerror or str(exc)
        if exc.errno == errno.ELOOP and text == os.strerror(errno.ELOOP):
            text = "a symbolic link, never followed"  # what O_NOFOLLOW reports for a link
        return f"{exc.filename}: {text}" if exc.filename else text
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON ({exc})"
    if isinstance(exc, RecursionError):
        return "JSON nested too deeply"
    return str(exc)


def printable(text: str) -> str:
    """Names and messages from the shared folders, safe for a terminal and a page: control characters
    (an escape sequence in a file name), invisible formatting (a U+202E makes `gnp.exe` read as
    `exe.png`) and undecodable bytes are shown escaped as Python writes them (`\\x1b`, `\\u202e`),
    never sent as they are. The same characters that an output name may not contain."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return "".join(_escaped(c) if unsafe_char(c) else c for c in text)


def _escaped(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def warn(message: str) -> None:
    """A problem that does not stop the command, on stderr (stdout stays machine-readable)."""
    print(f"i2v-watcher: warning: {printable(message)}", file=sys.stderr)


def folder_exists(what: str, root: Path, warn: Warn) -> bool:
    if root.is_dir():
        return True
    warn(f"the {what} folder {root} does not exist: is the share mounted? (or no daemon has created it yet)")
    return False


def walk_folder(what: str, root: Path, skip: Callable[[str], bool],
          warn: Warn) -> list[tuple[Path, os.stat_result]]:
    """The files below root, relative to it, with their lstat; unreadable sub-folders are skipped with
    a warning."""
    if not folder_exists(what, root, warn):
        return []

    def unreadable(folder: Path, exc: OSError) -> None:
        warn(f"skipped the unreadable folder {folder}: {exc.strerror or exc}")

    try:
        return [(path.relative_to(root), st) for path, st in walk_files(root, skip, unreadable)]
    except OSError as exc:
        warn(f"cannot read the {what} folder: {reason(exc)}")
        return []


def list_files(what: str, root: Path, skip: Callable[[str], bool], warn: Warn) -> list[Path]:
    return sorted(path for path, _ in walk_folder(what, root, skip, warn))


def subfolders(folder: Path, warn: Warn) -> list[Path]:
    """Real sub-folders only: a link in a shared folder is never followed."""
    try:
        with os.scandir(folder) as entries:
            return sorted(Path(e.path) for e in entries if e.is_dir(follow_symlinks=False))
    except OSError as exc:
        warn(f"skipped the unreadable folder {folder}: {exc.strerror or exc}")
        return []


