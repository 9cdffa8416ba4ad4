"""Serving files from the shared folders to a browser, which is where web file servers go wrong.

A URL never names a file system path: it names a file *relative to one of our folders*, and that name
is checked component by component and opened one folder at a time with O_NOFOLLOW, so `..`, absolute
paths, hidden names, encoded variants (they arrive decoded, and are checked after decoding) and links
planted anywhere on the way (a folder or the file itself) are all refused. What is served is the open
descriptor, never a path opened again, so nothing can be swapped in between the check and the read.
"""

from __future__ import annotations

import errno
import io
import os
import re
import stat
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, BinaryIO

import anyio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from i2v_watcher.config.settings import Settings
from i2v_watcher.errors import JobError
from i2v_watcher.media.images import decode_image

CHUNK = 256 * 1024
THUMB_SIZE = (320, 320)
THUMBS_KEPT = 512
DECODES_AT_ONCE = 2  # full-size image decodes in the process at one time (thumbnails, submit checks)
MEDIA_TYPES = {".mp4": "video/mp4", ".webm": "video/webm", ".mov": "video/quicktime", ".gif": "image/gif",
               ".webp": "image/webp", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png",
               ".json": "application/json"}
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$", re.ASCII)
MAX_OFFSET_DIGITS = 18  # up to 10**18 - 1: more than any file; longer strings are never converted
BEYOND_ANY_FILE = 10**18


class Refused(Exception):
    """A name that can only mean something outside the folder, or a file that is not a plain file."""


def check_rel(rel: str) -> list[str]:
    """The components of a relative name, each a plain, visible file or folder name."""
    if not rel or rel.startswith("/") or "\\" in rel or "\x00" in rel:
        raise Refused("not a relative name")
    parts = rel.split("/")
    for part in parts:
        if part in ("", ".", "..") or part.startswith(".") or any(ord(c) < 32 for c in part):
            raise Refused(f"not a plain name: {part!r}")
    return parts


def open_inside(root: Path, rel: str) -> int:
    """A read-only descriptor of the regular file root/rel, opened without following any link."""
    parts = check_rel(rel)
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    folder = os.open(root, flags | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            inner = os.open(part, flags | os.O_DIRECTORY, dir_fd=folder)
            os.close(folder)
            folder = inner
        fd = os.open(parts[-1], flags | os.O_NONBLOCK, dir_fd=folder)  # a FIFO must not block us
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            raise Refused("a link or not a folder on the way") from exc
        raise
    finally:
        os.close(folder)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise Refused("not a regular file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


class FileSlice(StreamingResponse):
    """Bytes [start, start + length) of an open file, which this response owns and closes when it ends,
    however it ends: sent, the client gone (before the first byte or after), cancelled. One that is
    never sent at all is closed when it is dropped (a FileIO's finalizer), never leaked."""

    def __init__(self, handle: io.FileIO, start: int, length: int, **kwargs: Any) -> None:
        self.handle = handle
        super().__init__(self._chunks(start, length), **kwargs)

    async def _chunks(self, start: int, length: int) -> AsyncIterator[bytes]:
        while length > 0:
            data = await anyio.to_thread.run_sync(os.pread, self.handle.fileno(), min(CHUNK, length), start)
            if not data:
                return
            start += len(data)
            length -= len(data)
            yield data

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:  # a read in a thread is never abandoned (run_sync waits for it): nothing uses it now
            self.handle.close()


def file_response(request: Request, fd: int, name: str, *, download: bool = False) -> Response:
    """The open file, with single byte ranges (a <video> seeks with them); takes the descriptor over,
    and closes it on every path."""
    handle = open(fd, "rb", buffering=0)  # noqa: SIM115 (owned by the response that ends it)
    try:
        return _file_response(request, handle, name, download)
    except BaseException:
        handle.close()
        raise


def _file_response(request: Request, handle: io.FileIO, name: str, download: bool) -> Response:
    size = os.fstat(handle.fileno()).st_size
    media_type = MEDIA_TYPES.get(os.path.splitext(name)[1].lower(), "application/octet-stream")
    headers = {"Accept-Ranges": "bytes", "X-Content-Type-Options": "nosniff",
               "Cache-Control": "private, max-age=60"}
    if download:
        headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{_quoted(name)}"
    start, length, status = 0, size, 200
    wanted = request.headers.get("range")
    if wanted is not None and request.method == "GET":
        try:
            span = byte_range(wanted, size)
        except Unsatisfiable:
            handle.close()
            return Response(status_code=416, headers={"Content-Range": f"bytes */{size}"})
        if span is not None:
            start, length, status = span[0], span[1], 206
            headers["Content-Range"] = f"bytes {start}-{start + length - 1}/{size}"
    headers["Content-Length"] = str(length)
    if request.method == "HEAD":
        handle.close()
        return Response(status_code=status, headers=headers, media_type=media_type)
    return FileSlice(handle, start, length, status_code=status, headers=headers, media_type=media_type)


class Unsatisfiable(Exception):
    """A range that starts past the end of the file (416)."""


def byte_range(header: str, size: int) -> tuple[int, int] | None:
    """(start, length) of a single `bytes=` range; None for a header we do not serve ranges for
    (malformed, several ranges: the whole file then, as RFC 9110 allows); Unsatisfiable for a 416.
    A number longer than any file size is read as "beyond the end" without converting it: Python
    refuses to convert a 5,000-digit string at all, and that must not become a 500."""
    match = _RANGE.match(header.strip())
    if match is None or not (match.group(1) or match.group(2)):
        return None
    first, last = (_offset(group) if group else None for group in match.groups())
    if first is None:  # "-N": the last N bytes
        assert last is not None
        start, end = max(0, size - last), size - 1
    else:
        start, end = first, size - 1 if last is None else min(last, size - 1)
    if start >= size or end < start:
        raise Unsatisfiable(header)
    return start, end - start + 1


def _offset(digits: str) -> int:
    return int(digits) if len(digits) <= MAX_OFFSET_DIGITS else BEYOND_ANY_FILE


def _quoted(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")


Identity = tuple[int, int, int, int, int]  # device, inode, size, mtime, ctime: one version of one file


class Thumbnails:
    """Small JPEGs of input images, decoded under the daemon's own limits, remembered by the file's
    identity so that a page of thumbnails costs one decode per image, not one per visit.

    A decode costs memory in proportion to the image's pixels (a PNG has no reduced decode; a JPEG is
    decoded at 1/8 scale in draft mode), up to max_image_pixels, which is checked from the header
    first. So decodes are bounded: `slots` (the submit check takes them too) admits DECODES_AT_ONCE in
    the whole process, and requests for the same file wait for the one decode of it, then find its result.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.slots = anyio.CapacityLimiter(DECODES_AT_ONCE)  # the submit check takes these too
        self._kept: OrderedDict[Identity, bytes | str] = OrderedDict()  # a str: why there is none
        self._lock = threading.Lock()
        self._decoding: dict[tuple[str, str], anyio.Lock] = {}  # touched on the event loop alone

    async def jpeg(self, root: Path, rel: str) -> bytes:
        """Raises Refused, OSError, or JobError (not an image, too large)."""
        known = await anyio.to_thread.run_sync(self._made, root, rel, False)
        if known is not None:
            return known
        name = (str(root), rel)
        one = self._decoding.setdefault(name, anyio.Lock())
        try:
            async with one:
                made = await anyio.to_thread.run_sync(self._made, root, rel, True, limiter=self.slots)
        finally:
            if not one.locked() and not one.statistics().tasks_waiting:
                self._decoding.pop(name, None)
        assert made is not None
        return made

    def _made(self, root: Path, rel: str, decode: bool) -> bytes | None:
        """The thumbnail of this version of the file: remembered, or decoded now if `decode`."""
        with open(open_inside(root, rel), "rb") as handle:
            st = os.fstat(handle.fileno())
            key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            with self._lock:
                known = self._kept.get(key)
                if known is not None:
                    self._kept.move_to_end(key)
            if known is None and decode:
                known = self._decode(handle)
                with self._lock:
                    self._kept[key] = known
                    while len(self._kept) > THUMBS_KEPT:
                        self._kept.popitem(last=False)
        if isinstance(known, str):
            raise JobError(known, stage="load")
        return known

    def _decode(self, handle: BinaryIO) -> bytes | str:
        try:
            image = decode_image(handle, max_pixels=self.settings.max_image_pixels,
                                 max_bytes=self.settings.max_image_bytes, size_to=THUMB_SIZE)
        except JobError as exc:  # remembered too: the same file is not decoded again to fail again
            return exc.message
        out = io.BytesIO()
        image.save(out, "JPEG", quality=80)
        return out.getvalue()


async def thumbnail_response(thumbs: Thumbnails, root: Path, rel: str) -> Response:
    try:
        data = await thumbs.jpeg(root, rel)
    except (Refused, FileNotFoundError):
        return Response("not found", status_code=404, media_type="text/plain")
    except (OSError, JobError) as exc:
        message = exc.message if isinstance(exc, JobError) else (exc.strerror or str(exc))
        return Response(f"no thumbnail: {message}", status_code=422, media_type="text/plain")
    return Response(data, media_type="image/jpeg",
                    headers={"Cache-Control": "private, max-age=60", "X-Content-Type-Options": "nosniff"})
