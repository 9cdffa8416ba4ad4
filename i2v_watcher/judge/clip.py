"""The clip as the scores see it: the frames and the input image at a working size, in grey, the blank
frames set aside, and the dense optical flow between each kept frame and the one before it.

Working size: a short side of at most 256 pixels (INTER_AREA, never enlarged). VBench scales its motion
threshold to a 256-pixel short side; flow and SSIM at that size cost a few milliseconds a pair, and the
model's own fine texture (which differs from seed to seed) counts less against the input.

Flow: OpenCV's DIS optical flow (Kroeger et al. 2016, its "medium" preset), backward: `flows[i]` maps
each pixel of kept frame i+1 to where it was in kept frame i (`frame[i+1](p) ≈ frame[i](p + flows[i](p))`),
so the frame before can be warped onto the next one with cv2.remap. DIS rather than Farneback: on the
benchmark's clip (bench/judge.py, 256x256) a pair cost 13.5 ms of CPU against Farneback's 18 ms (3
levels, 15-pixel window, 3 iterations), with flows as close to the truth on the test clips (DIS's "fast"
preset was not: it lost the zoom); the scores' budget is a tenth of the clip's encode."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise

import cv2
import numpy as np

from i2v_watcher.judge import black

WORK_SHORT_SIDE = 256
# One thread: at a 256-pixel working size OpenCV's worker threads cost more CPU than they save (bench/
# judge.py: 12 % less CPU time in one thread), and the judge runs beside ffmpeg and the GPU's stage.
cv2.setNumThreads(1)


def working_size(height: int, width: int) -> tuple[int, int]:
    """(height, width) with the short side at most WORK_SHORT_SIDE, aspect kept."""
    scale = min(1.0, WORK_SHORT_SIDE / min(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize(picture: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    height, width = size
    if picture.shape[:2] == size:
        return picture
    return cv2.resize(picture, (width, height), interpolation=cv2.INTER_AREA)


def grey(picture: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(picture, cv2.COLOR_RGB2GRAY)


def solver() -> cv2.DISOpticalFlow:
    return cv2.DISOpticalFlow.create(cv2.DISOpticalFlow_PRESET_MEDIUM)


def flow(later: np.ndarray, earlier: np.ndarray, using: cv2.DISOpticalFlow | None = None) -> np.ndarray:
    """Backward flow (h, w, 2) float32 from grey `later` to grey `earlier`."""
    vectors = np.zeros((*later.shape[:2], 2), np.float32)
    return np.asarray((using or solver()).calc(later, earlier, vectors), dtype=np.float32)


def grid(size: tuple[int, int]) -> np.ndarray:
    """Each pixel's own (x, y) position, (h, w, 2) float32: a flow added to it is a cv2.remap map."""
    ys, xs = np.mgrid[0:size[0], 0:size[1]].astype(np.float32)
    return np.asarray(np.dstack([xs, ys]))


def inside(positions: np.ndarray) -> np.ndarray:
    """Which of the (h, w, 2) positions lie inside a picture of the same size."""
    height, width = positions.shape[:2]
    xs, ys = positions[..., 0], positions[..., 1]
    return np.asarray((xs >= 0) & (xs <= width - 1) & (ys >= 0) & (ys <= height - 1))


def warp(picture: np.ndarray, positions: np.ndarray) -> np.ndarray:
    return np.asarray(cv2.remap(picture, positions, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE))


@dataclass
class Clip:
    """The frames at the working size (T, h, w, 3) uint8, their grey, the input image likewise, the fps,
    which frames are not blank (`kept`) and the backward flow between consecutive kept frames."""

    frames: np.ndarray
    greys: np.ndarray
    image: np.ndarray
    image_grey: np.ndarray
    fps: float
    blank: list[bool]
    kept: list[int] = field(default_factory=list)
    flows: list[np.ndarray] = field(default_factory=list)

    @classmethod
    def prepare(cls, frames: np.ndarray, image: np.ndarray, fps: float) -> Clip:
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not len(frames):
            raise ValueError(f"frames must be (T, H, W, 3) uint8, not {frames.dtype} {frames.shape}")
        if image.shape != frames.shape[1:] or image.dtype != np.uint8:
            raise ValueError(f"the image must be {frames.shape[1:]} uint8 like a frame, not "
                             f"{image.dtype} {image.shape}")
        size = working_size(*frames.shape[1:3])
        small = np.stack([resize(frame, size) for frame in frames])
        greys = np.stack([grey(frame) for frame in small])
        image_small = resize(image, size)
        image_grey = grey(image_small)
        blank = black.blank_frames(greys, image_grey)
        kept = [index for index, empty in enumerate(blank) if not empty]
        using = solver()
        flows = [flow(greys[later], greys[earlier], using) for earlier, later in pairwise(kept)]
        return cls(small, greys, image_small, image_grey, fps, blank, kept, flows)

    @property
    def size(self) -> tuple[int, int]:
        return self.greys.shape[1], self.greys.shape[2]
