"""Decode an untrusted input image: size limits before decoding, EXIF orientation applied, RGB out."""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from i2v_watcher.errors import JobError, is_transient
from i2v_watcher.fs.atomic import open_nofollow
from i2v_watcher.fs.inputs import InputRead

FORMATS = ["PNG", "JPEG", "WEBP"]


@dataclass(frozen=True)
class Source:
    """The image a job generates from, with the digest and count of exactly the bytes it was decoded
    from: the provenance its metadata records."""

    image: Image.Image
    sha256: str
    size: int


def decode_input(read: InputRead, *, max_pixels: int, max_bytes: int) -> Source:
    """A job's image from the bytes read once (fs.inputs.read_input), under the limits."""
    check_file_size(read.size, max_bytes)
    image = decode_image(io.BytesIO(read.data), max_pixels=max_pixels, max_bytes=max_bytes)
    return Source(image, hashlib.sha256(read.data).hexdigest(), len(read.data))


def load_image(path: Path, *, max_pixels: int, max_bytes: int) -> Image.Image:
    with open(path, "rb", opener=open_nofollow) as handle:
        return decode_image(handle, max_pixels=max_pixels, max_bytes=max_bytes)


def decode_image(handle: BinaryIO, *, max_pixels: int, max_bytes: int,
                 size_to: tuple[int, int] | None = None) -> Image.Image:
    """An open image file, decoded under the limits; `size_to`: a thumbnail no larger than that, which
    JPEG decodes at a fraction of the cost (draft mode)."""
    def fail(message: str, hint: str = "") -> JobError:
        return JobError(message, stage="load", hint=hint)

    check_file_size(handle.getbuffer().nbytes if isinstance(handle, io.BytesIO)
                    else os.fstat(handle.fileno()).st_size, max_bytes)
    try:
        # Pillow's limit is process-wide: only ever raised to ours, so our check below (with its clear
        # message) is what refuses an input, and a small limit never fails an unrelated open elsewhere.
        Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, max_pixels)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(handle, formats=FORMATS)
            width, height = image.size  # read from the header: nothing is decoded yet
            if width * height > max_pixels:
                raise fail(
                    f"the image is {width}x{height} = {width * height} pixels, over the limit of "
                    f"{max_pixels} (max_image_pixels)", "scale it down before dropping it")
            if size_to is not None:  # reduced before it is turned: the full size is never copied
                image.draft("RGB", size_to)
                image.thumbnail(size_to)
            ImageOps.exif_transpose(image, in_place=True)  # in place: no second full-size copy
    except JobError:
        raise
    except UnidentifiedImageError as exc:
        raise fail("not a readable PNG, JPEG or WebP image (the file's content is not an image of "
                   "these formats, whatever its name says)",
                   "check that the file opens in an image viewer") from exc
    except Image.DecompressionBombError as exc:
        raise fail(f"the image has too many pixels, over the limit of {max_pixels} (max_image_pixels): "
                   f"{exc}", "scale it down before dropping it") from exc
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt data
        if is_transient(exc):  # the host ran short (descriptors, an NFS hiccup), not the file: retried
            raise
        raise fail(f"the image is damaged or truncated: {exc}",
                   "the upload may have been cut off; drop it again") from exc
    return to_rgb(image)


def check_file_size(size: int, max_bytes: int) -> None:
    if size == 0:
        raise JobError("the image file is empty (0 bytes)", stage="load",
                       hint="the upload may have failed; drop it again")
    if size > max_bytes:
        raise JobError(f"the image file is {size} bytes, over the limit of {max_bytes} (max_image_bytes)",
                       stage="load")


# Pillow's convert("RGB") clips these modes at 255 instead of scaling them, so a 16-bit greyscale PNG
# (mode "I;16"/"I;16B" in recent Pillow, "I" in older ones) comes out nearly white.
_WIDE_GREY = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
_WIDE_MAX = 65535


def to_rgb(image: Image.Image) -> Image.Image:
    """Any decoded mode as 8-bit RGB. Wide greyscale is scaled from 0..65535: that is the range of every
    16-bit PNG, the only source of "I" among the formats we open; none of them yields "F" (floating
    point), which is read on the same scale rather than stretched from its own min and max, so a dark
    image stays dark. Other modes (palette, L, LA, RGBA, CMYK) keep Pillow's conversion."""
    if image.mode == "RGB":
        return image
    if image.mode not in _WIDE_GREY:
        return image.convert("RGB")
    wide = np.clip(np.asarray(image), 0, _WIDE_MAX).astype(np.uint32)
    # Rounded to the nearest level: 0 → 0, 32768 → 128, 65535 → 255.
    grey = ((wide * 255 + _WIDE_MAX // 2) // _WIDE_MAX).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")
