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
from collections.abc import Iterator
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from i2v_watcher.config.settings import Settings
from i2v_watcher.errors import JobError
from i2v_watcher.media.images import decode_image

CHUNK = 256 * 1024
THUMB_SIZE = (320, 320)
THUMBS_KEPT = 512
MEDIA_TYPES = {".mp4": "video/mp4", ".webm": "video/webm", ".mov": "video/quicktime", ".gif": "image/gif",
               ".webp": "image/webp", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png",
               ".json": "application/json"}
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


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
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise Refused("not a regular file")
    os.set_blocking(fd, True)
    return fd


def _chunks(fd: int, start: int, length: int) -> Iterator[bytes]:
    try:
        while length > 0:
            data = os.pread(fd, min(CHUNK, length), start)
            if not data:
                return
            start += len(data)
            length -= len(data)
            yield data
    finally:
        os.close(fd)


def file_response(request: Request, fd: int, name: str, *, download: bool = False) -> Response:
    """The open file, with single byte ranges (a <video> seeks with them); takes the descriptor over."""
    size = os.fstat(fd).st_size
    media_type = MEDIA_TYPES.get(os.path.splitext(name)[1].lower(), "application/octet-stream")
    headers = {"Accept-Ranges": "bytes", "X-Content-Type-Options": "nosniff",
               "Cache-Control": "private, max-age=60"}
    if download:
        headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{_quoted(name)}"
    start, length, status = 0, size, 200
    wanted = request.headers.get("range")
    if wanted is not None and request.method == "GET":
        match = _RANGE.match(wanted.strip())
        first, last = (match.group(1), match.group(2)) if match else ("", "")
        if match and (first or last):
            if first:
                start, end = int(first), min(int(last), size - 1) if last else size - 1
            else:
                start, end = max(0, size - int(last)), size - 1
            if start >= size or end < start:
                os.close(fd)
                return Response(status_code=416, headers={"Content-Range": f"bytes */{size}"})
            length, status = end - start + 1, 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    headers["Content-Length"] = str(length)
    if request.method == "HEAD":
        os.close(fd)
        return Response(status_code=status, headers=headers, media_type=media_type)
    return StreamingResponse(_chunks(fd, start, length), status_code=status, headers=headers,
                             media_type=media_type)


def _quoted(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")


class Thumbnails:
    """Small JPEGs of input images, decoded under the daemon's own limits, remembered by the file's
    identity so that a page of thumbnails costs one decode per image, not one per visit."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._kept: OrderedDict[tuple[str, str, int, int, int], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def jpeg(self, root: Path, rel: str) -> bytes:
        """Raises Refused, OSError, or JobError (not an image, too large)."""
        fd = open_inside(root, rel)
        with open(fd, "rb") as handle:
            st = os.fstat(fd)
            key = (str(root), rel, st.st_ino, st.st_size, st.st_mtime_ns)
            with self._lock:
                if key in self._kept:
                    self._kept.move_to_end(key)
                    return self._kept[key]
            image = decode_image(handle, max_pixels=self.settings.max_image_pixels,
                                 max_bytes=self.settings.max_image_bytes, size_to=THUMB_SIZE)
        out = io.BytesIO()
        image.save(out, "JPEG", quality=80)
        data = out.getvalue()
        with self._lock:
            self._kept[key] = data
            while len(self._kept) > THUMBS_KEPT:
                self._kept.popitem(last=False)
        return data


def thumbnail_response(thumbs: Thumbnails, root: Path, rel: str) -> Response:
    try:
        data = thumbs.jpeg(root, rel)
    except (Refused, FileNotFoundError):
        return Response("not found", status_code=404, media_type="text/plain")
    except (OSError, JobError) as exc:
        message = exc.message if isinstance(exc, JobError) else (exc.strerror or str(exc))
        return Response(f"no thumbnail: {message}", status_code=422, media_type="text/plain")
    return Response(data, media_type="image/jpeg",
                    headers={"Cache-Control": "private, max-age=60", "X-Content-Type-Options": "nosniff"})
