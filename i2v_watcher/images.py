"""Decode an untrusted input image: size limits before decoding, EXIF orientation applied, RGB out."""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from i2v_watcher.errors import JobError
from i2v_watcher.fsutil import open_nofollow

FORMATS = ["PNG", "JPEG", "WEBP"]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


def load_image(path: Path, *, max_pixels: int, max_bytes: int) -> Image.Image:
    def fail(message: str, hint: str = "") -> JobError:
        return JobError(message, stage="load", hint=hint)

    with open(path, "rb", opener=open_nofollow) as handle:
        size = os.fstat(handle.fileno()).st_size
        if size == 0:
            raise fail("the image file is empty (0 bytes)", "the upload may have failed; drop it again")
        if size > max_bytes:
            raise fail(f"the image file is {size} bytes, over the limit of {max_bytes} (max_image_bytes)")
        try:
            Image.MAX_IMAGE_PIXELS = max_pixels  # our own check below runs first; this is a backstop
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image: Image.Image = Image.open(handle, formats=FORMATS)
                width, height = image.size  # read from the header: nothing is decoded yet
                if width * height > max_pixels:
                    raise fail(
                        f"the image is {width}x{height} = {width * height} pixels, over the limit of "
                        f"{max_pixels} (max_image_pixels)", "scale it down before dropping it")
                image = ImageOps.exif_transpose(image)
                image.load()
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
            raise fail(f"the image is damaged or truncated: {exc}",
                       "the upload may have been cut off; drop it again") from exc
    return image if image.mode == "RGB" else image.convert("RGB")
