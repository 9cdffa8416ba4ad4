"""Crash-safe file operations: every visible name appears complete, in one rename, and never replaces a
name that is already there. Nothing the inbox holds is trusted: links are never followed, and only
regular files are ever opened."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import hashlib
import json
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from i2v_watcher.fs.perms import narrow_to

# The input files whose permission bits a written file must not exceed (fs.perms.reach_mask).
Within = Sequence[os.stat_result]

NAME_MAX = 255  # bytes, on every filesystem the daemon is meant for
_NO_HARD_LINKS = (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS)
_RENAME_NOREPLACE = 1
_AT_FDCWD = -100


class NotRegularFile(OSError):
    """A link, FIFO, socket, device or folder where a regular file was expected: never opened."""

    def __init__(self, path: str | Path, what: str) -> None:
        super().__init__(errno.EINVAL, f"not a regular file ({what})", str(path))


class FolderBlocked(OSError):
    """Something that is not a folder (a file, a link, a FIFO…) stands where a sub-folder of a shared
    folder must be: put there by a user, so the problem of the job that needs the folder, never an
    outage. `what` says what it is (kind_of)."""

    def __init__(self, path: str | Path, what: str, code: int) -> None:
        super().__init__(code, f"{what} where a folder was expected", str(path))
        self.what = what


def kind_of(mode: int) -> str:
    for test, what in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return what
    return "a regular file" if stat.S_ISREG(mode) else "a special file"


def open_nofollow(path: str, flags: int) -> int:
    """An `opener` for open(): a symbolic link is refused, never followed, and anything but a regular
    file is refused before it can block (a FIFO would wait for a writer forever)."""
    return open_regular(path, flags | os.O_NOFOLLOW)


def open_regular(path: str, flags: int) -> int:
    """An `opener` for open() that follows links (for a file the operator names, such as the config)
    but refuses anything other than a regular file before it can block."""
    fd = os.open(path, flags | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(path, kind_of(mode))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:  # some network filesystems refuse fsync on a directory
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def fit_name(name: str, tail: str) -> str:
    """`.<name><tail>`, hidden; a name too long for the filesystem is replaced by its hash."""
    hidden = f".{name}{tail}"
    if len(os.fsencode(hidden)) <= NAME_MAX:
        return hidden
    return f".{hashlib.sha256(os.fsencode(name)).hexdigest()[:24]}{tail}"


def temp_name(final: Path, token: str | None = None) -> Path:
    """`.clip.mp4.<token>.part`: hidden, matched by no `*.mp4` glob of a consumer, and unique to its
    writer (a job passes its id, so a resumed job finds and replaces its own leftover)."""
    token = token or f"{os.getpid():x}-{secrets.token_hex(4)}"
    return final.with_name(fit_name(final.name, f".{token}.part"))


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _renameat2_noreplace(source: Path, target: Path) -> None:
    fn = getattr(_libc(), "renameat2", None)
    if fn is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available")
    if fn(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), _RENAME_NOREPLACE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(target))


def rename_noreplace(source: Path, target: Path) -> None:
    """Rename, but never onto an existing name (FileExistsError): a file another process put there is
    never replaced. renameat2(RENAME_NOREPLACE) where the filesystem has it, else a hard link and
    unlink (NFS), else a check and a plain rename (the only racy fallback, for filesystems with
    neither, such as some SMB servers)."""
    try:
        _renameat2_noreplace(source, target)
        return
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    try:
        os.link(source, target, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        if os.path.lexists(target):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(target)) from exc
        os.rename(source, target)
        return
    os.unlink(source)


def set_group_mode(fd: int, path: Path, mode: int | None = None, gid: int | None = None) -> None:
    """Give an open file or folder a group and permission bits (None: leave as is). On the open fd, so
    the name is never followed, and a file gets them before it is renamed into view. The group is set
    first: chown may clear set-id bits that chmod then sets."""
    if gid is not None:
        try:
            os.fchown(fd, -1, gid)
        except PermissionError as exc:
            raise PermissionError(exc.errno, f"cannot give it group {gid} (output_group): the daemon's "
                                  "user must be root or a member of that group", str(path)) from exc
    if mode is not None:
        os.fchmod(fd, mode)


def _write_temp(final: Path, token: str | None, fill: Callable[[Any], None], mode: int | None = None,
                gid: int | None = None, within: Within = ()) -> Path:
    tmp = temp_name(final, token)
    try:
        with open(tmp, "wb", opener=_create_private) as handle:
            fill(handle)
            handle.flush()
            set_group_mode(handle.fileno(), tmp, mode, gid)
            if within:
                narrow_to(handle.fileno(), within)
            os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)  # a partial file never stays behind (a full disk must not poison the next job)
        raise
    return tmp


def _create_private(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)


def _install(tmp: Path, final: Path, replace: bool) -> None:
    try:
        if replace:
            os.replace(tmp, final)
        else:
            rename_noreplace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(final.parent)


def write_bytes_atomic(final: Path, data: bytes, *, token: str | None = None, replace: bool = True,
                       mode: int | None = None, gid: int | None = None, within: Within = ()) -> None:
    """Write a file under a hidden temporary name, then rename it into place. `replace=False` never
    replaces an existing file (FileExistsError): for the shared folders, where another process may
    have written the name meanwhile. Our own state files are replaced. `mode` and `gid`, when given,
    are set on the temporary file, so the name appears with them, and so is `within` (never readable by
    anyone who could not read those files)."""
    _install(_write_temp(final, token, lambda handle: handle.write(data), mode, gid, within), final, replace)


def write_durably(final: Path, fill: Callable[[Any], None]) -> None:
    """Our own file (not in a shared folder), filled by `fill(handle)`: whole or absent after a crash."""
    _install(_write_temp(final, None, fill), final, replace=True)


def write_json_atomic(final: Path, payload: dict[str, Any], *, token: str | None = None,
                      replace: bool = True, mode: int | None = None, gid: int | None = None,
                      within: Within = ()) -> None:
    write_bytes_atomic(final, (json.dumps(payload, indent=2, sort_keys=False) + "\n").encode(),
                       token=token, replace=replace, mode=mode, gid=gid, within=within)


def read_json(path: Path, max_bytes: int = 16 * 1024 * 1024) -> dict[str, Any]:
    """A JSON object from a file in the shared folders (untrusted: never through a link, size-capped).
    A stale NFS handle (the file was replaced by another host's rename) is read once more."""
    try:
        raw = _read_capped(path, max_bytes)
    except OSError as exc:
        if exc.errno != errno.ESTALE:
            raise
        raw = _read_capped(path, max_bytes)
    if len(raw) > max_bytes:
        raise ValueError(f"{path} is larger than {max_bytes} bytes")
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    return data


def _read_capped(path: Path, max_bytes: int) -> bytes:
    """At most max_bytes + 1 bytes (one more tells a file too large), asked for by the file's size:
    a buffer of the cap for every small record costs more than reading it (the catalog reads
    100,000). A file that grows after the fstat reads as its first bytes, so as broken this time."""
    with open(path, "rb", opener=open_nofollow) as handle:
        return handle.read(min(os.fstat(handle.fileno()).st_size, max_bytes) + 1)


def copy_atomic(source: Path, final: Path, *, token: str | None = None, replace: bool = False,
                mode: int | None = None, gid: int | None = None, within: Within = ()) -> None:
    """Copy a regular file under a temporary name, flush, then rename: works across filesystems.
    `mode`, `gid` and `within`, when given, are set on the temporary file, so the name appears with them."""
    with open(source, "rb", opener=open_nofollow) as src:
        times = os.fstat(src.fileno())
        tmp = _write_temp(final, token, lambda dst: shutil.copyfileobj(src, dst, 1024 * 1024), mode, gid,
                          within)
    with contextlib.suppress(OSError):
        os.utime(tmp, ns=(times.st_atime_ns, times.st_mtime_ns))
    _install(tmp, final, replace)


def move(source: Path, final: Path, *, token: str | None = None) -> None:
    """Move without replacing anything. A rename where possible; across filesystems a regular file is
    copied atomically, then the source removed. A link or special file is only ever renamed: across
    filesystems it raises NotRegularFile and stays where it is (copying would mean opening it). A copy is
    never readable by more people than the source was (a rename keeps the file's own bits)."""
    try:
        rename_noreplace(source, final)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        found = os.lstat(source)
        if not stat.S_ISREG(found.st_mode):
            raise NotRegularFile(source, kind_of(found.st_mode)) from exc
        copy_atomic(source, final, token=token, within=(found,))
        os.unlink(source)
    fsync_dir(final.parent)


def same_content(a: Path, b: Path) -> bool:
    """Whether two regular files hold the same bytes (a resumed publish recognises its own file)."""
    try:
        with open(a, "rb", opener=open_nofollow) as fa, open(b, "rb", opener=open_nofollow) as fb:
            if os.fstat(fa.fileno()).st_size != os.fstat(fb.fileno()).st_size:
                return False
            while True:
                block = fa.read(1024 * 1024)
                if block != fb.read(1024 * 1024):
                    return False
                if not block:
                    return True
    except OSError:
        return False


def safe_subdir(root: Path, rel: PurePosixPath | str, *, mode: int | None = None,
                gid: int | None = None) -> Path:
    """root/rel, creating the missing folders below root; every component must be a real folder (a
    link planted in a shared folder would lead writes outside it). The root itself must exist: an
    unmounted share is never re-created as a local folder. `mode` and `gid`, when given, are set on
    the folders this call creates (never on ones that were there)."""
    if not root.is_dir():
        raise FileNotFoundError(errno.ENOENT, "the folder is missing (is the share mounted?)", str(root))
    path = root
    for part in PurePosixPath(rel).parts:
        if part in ("", ".", "..", "/"):
            if part == "..":
                raise OSError(errno.EINVAL, "'..' in a sub-folder name", str(rel))
            continue
        path = path / part
        try:
            os.mkdir(path)
        except FileExistsError:
            pass
        else:
            if mode is not None or gid is not None:
                _set_folder_group_mode(path, mode, gid)
        found = os.lstat(path).st_mode
        if not stat.S_ISDIR(found):
            raise FolderBlocked(path, kind_of(found), errno.ELOOP if stat.S_ISLNK(found) else errno.ENOTDIR)
    return path


def _set_folder_group_mode(path: Path, mode: int | None, gid: int | None) -> None:
    # O_NOFOLLOW: a link planted in place of the new folder is refused (ELOOP), never followed.
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        set_group_mode(fd, path, mode, gid)
    finally:
        os.close(fd)


def same_filesystem(a: Path, b: Path) -> bool:
    return os.stat(a).st_dev == os.stat(b).st_dev


def walk_files(root: Path, skip: Callable[[str], bool],
               on_error: Callable[[Path, OSError], None] | None = None) \
        -> Iterator[tuple[Path, os.stat_result]]:
    """Every file (and symbolic link) below root with its lstat; links are never followed and
    folders whose name `skip` accepts are not entered. A sub-folder that cannot be read goes to
    `on_error` and is skipped (one folder's problem is not the inbox's); the root's error is raised."""
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            listing = os.scandir(folder)
        except OSError as exc:
            if folder == root or on_error is None:
                raise
            on_error(folder, exc)
            continue
        with listing as entries:
            for entry in entries:
                if skip(entry.name):
                    continue
                path = Path(entry.path)
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    stack.append(path)
                else:
                    yield path, st
