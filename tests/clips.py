"""Test clips with known defects, built in code: deterministic, 16 frames of 96x128 at 8 fps, each with
the input image it was made from (what the backend would have resized to the frame size).

A backend can build each clip from the picture it is given (`picture`, H x W: the clip starts from it,
as a model's clip starts from its input image; tests/plugins/defects_backend.py); without one, each makes
its own picture from a seed.

Every clip carries a little per-frame grain (sigma 1.5 levels), as a model's frames do, so that only a real
repetition is `frozen`. The good clips move by VBench's rule (a pan, an object crossing a still
background, a zoom rendered from a finer source, as a model renders detail at its own size); each
defective one has one defect: `CLIPS[name] = (frames, image, expected symptoms)`."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

H, W, T, FPS = 96, 128, 16, 8.0
Clip = tuple[np.ndarray, np.ndarray]


def texture(height: int, width: int, seed: int) -> np.ndarray:
    """A photo-like RGB picture: smooth colour fields, texture at several scales, and a few hard shapes."""
    rng = np.random.default_rng(seed)
    picture = np.zeros((height, width, 3), np.float32)
    for sigma, weight in ((24, 70), (8, 40), (2.5, 28), (1.0, 14)):
        noise = rng.normal(0, 1, (height, width, 3)).astype(np.float32)
        field = cv2.GaussianBlur(noise, (0, 0), sigma)
        picture += weight * field / (field.std() + 1e-6)
    picture += np.array([120, 110, 95], np.float32)
    for _ in range(max(3, height * width // 4000)):
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        colour = tuple(float(c) for c in rng.integers(20, 235, 3))
        if rng.random() < 0.5:
            cv2.circle(picture, centre, int(rng.integers(6, 18)), colour, -1)
        else:
            corner = (centre[0] + int(rng.integers(8, 30)), centre[1] + int(rng.integers(8, 30)))
            cv2.rectangle(picture, centre, corner, colour, -1)
    return picture.clip(0, 255).astype(np.uint8)


def grain(frames: np.ndarray, seed: int, sigma: float = 1.5) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, frames.shape)
    return (frames.astype(np.float32) + noise).clip(0, 255).round().astype(np.uint8)


def around(picture: np.ndarray) -> np.ndarray:
    """A canvas 40 pixels taller and 80 wider than `picture`, the picture at (8, 8), its borders mirrored:
    a pan across it starts on the picture."""
    return cv2.copyMakeBorder(picture, 8, 32, 8, 72, cv2.BORDER_REFLECT_101)


def pan(speed: int = 3, seed: int = 1, picture: np.ndarray | None = None) -> Clip:
    """The camera pans right and down across a larger picture: `speed` and 1 pixels a frame."""
    canvas = texture(H + 40, W + 80, seed) if picture is None else around(picture)  # whole-pixel steps
    frames = []
    for t in range(T):
        shift = np.float32([[1, 0, -speed * t - 8], [0, 1, -t - 8]])
        frames.append(cv2.warpAffine(canvas, shift, (W, H), flags=cv2.INTER_LINEAR))
    stack = np.stack(frames)
    return grain(stack, seed), stack[0]


def moving_object(seed: int = 2, picture: np.ndarray | None = None) -> Clip:
    """A textured disc crosses a still background, 4 pixels a frame."""
    scene = texture(H, W, seed) if picture is None else picture
    sprite = texture(40, 40, seed + 100)
    mask = np.zeros((40, 40), np.uint8)
    cv2.circle(mask, (20, 20), 17, 1, -1)
    frames = []
    for t in range(T):
        frame = scene.copy()
        x, y = 14 + 4 * t, 30 + t
        region = frame[y:y + 40, x:x + 40]
        region[mask == 1] = sprite[mask == 1]
        frames.append(frame)
    stack = np.stack(frames)
    return grain(stack, seed), stack[0]


def finer(picture: np.ndarray, seed: int) -> np.ndarray:
    """`picture` at 4x its size with fine detail of its own (a texture's high frequencies), as a model
    renders detail where it zooms in: an enlargement alone is blurred."""
    detail = texture(4 * H, 4 * W, seed).astype(np.float32)
    detail -= cv2.GaussianBlur(detail, (0, 0), 4)
    larger = cv2.resize(picture, (4 * W, 4 * H), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    return (larger + detail / 2).clip(0, 255).astype(np.uint8)  # half: as sharp as the picture, not more


def zoom(seed: int = 3, end: float = 1.8, picture: np.ndarray | None = None) -> Clip:
    """A zoom into the centre, each frame rendered from a 4x finer source (no enlargement blur)."""
    fine = texture(4 * H, 4 * W, seed) if picture is None else finer(picture, seed)
    frames = []
    for t in range(T):
        scale = end ** (t / (T - 1))
        height, width = 4 * H / scale, 4 * W / scale
        top, left = (4 * H - height) / 2, (4 * W - width) / 2
        crop = fine[int(top):int(top + height), int(left):int(left + width)]
        frames.append(cv2.resize(crop, (W, H), interpolation=cv2.INTER_AREA))
    stack = np.stack(frames)
    return grain(stack, seed), stack[0]


def frozen(picture: np.ndarray | None = None) -> Clip:
    """The pan stalls: frame 5 is shown six times, then the pan goes on."""
    frames, image = pan(seed=4, picture=picture)
    order = [0, 1, 2, 3, 4, 5, 5, 5, 5, 5, 5, 6, 7, 8, 9, 10]
    return frames[order], image


def flickering(picture: np.ndarray | None = None) -> Clip:
    """The moving object, each frame's brightness and colour jumping by up to ±8 levels."""
    frames, image = moving_object(seed=5, picture=picture)
    jumps = np.random.default_rng(5).uniform(-8, 8, (T, 1, 1, 3)) + np.random.default_rng(6).uniform(
        -4, 4, (T, 1, 1, 1))
    return (frames.astype(np.float32) + jumps).clip(0, 255).round().astype(np.uint8), image


def black_flashes(picture: np.ndarray | None = None) -> Clip:
    """The pan with two black frames (6 and 11), a float16 overflow's look."""
    frames, image = pan(seed=6, picture=picture)
    frames = frames.copy()
    frames[[6, 11]] = grain(np.zeros((2, H, W, 3), np.uint8), 6)
    return frames, image


def no_motion(picture: np.ndarray | None = None) -> Clip:
    """The picture barely sways (a third of a pixel): alive, but nothing moves."""
    image = texture(H, W, 7) if picture is None else picture
    frames = [cv2.warpAffine(image, np.float32([[1, 0, 0.33 * np.sin(t / 2)], [0, 1, 0]]), (W, H),
                             borderMode=cv2.BORDER_REFLECT) for t in range(T)]
    return grain(np.stack(frames), 7), image


def colour_drift(picture: np.ndarray | None = None) -> Clip:
    """The pan slowly turns red and loses blue: by the end it is not the picture's colours."""
    frames, image = pan(seed=8, picture=picture)
    ramp = np.linspace(0, 1, T).reshape(T, 1, 1, 1)
    shift = ramp * np.array([40, 0, -35], np.float32)
    return (frames.astype(np.float32) + shift).clip(0, 255).round().astype(np.uint8), image


def structure_drift(picture: np.ndarray | None = None) -> Clip:
    """The object crosses a background that turns, frame by frame, into another picture of the same
    colours: the subject's world is replaced."""
    first, image = moving_object(seed=9, picture=picture)
    background = texture(H, W, 99).astype(np.float32)
    own = (texture(H, W, 9) if picture is None else picture).astype(np.float32)
    background = (background - background.mean((0, 1))) / background.std((0, 1)) * own.std((0, 1)) \
        + own.mean((0, 1))
    other, _ = moving_object(seed=9, picture=background.clip(0, 255).astype(np.uint8))
    ramp = np.clip(np.linspace(-0.3, 1.2, T), 0, 1).reshape(T, 1, 1, 1)
    mixed = first.astype(np.float32) * (1 - ramp) + other.astype(np.float32) * ramp
    return mixed.round().astype(np.uint8), image


def blurred(picture: np.ndarray | None = None) -> Clip:
    """The pan goes soft: from frame 2 on, a Gaussian blur of sigma 2."""
    frames, image = pan(seed=10, picture=picture)
    soft = frames.copy()
    for t in range(2, T):
        soft[t] = cv2.GaussianBlur(frames[t], (0, 0), 2.0)
    return soft, image


GOOD: dict[str, Callable[..., Clip]] = {"pan": pan, "moving_object": moving_object, "zoom": zoom}
DEFECTIVE: dict[str, tuple[Callable[..., Clip], list[str]]] = {
    "frozen": (frozen, ["frozen"]),
    "flicker": (flickering, ["flicker"]),
    "black_flashes": (black_flashes, ["black"]),
    "no_motion": (no_motion, ["no_motion"]),
    "colour_drift": (colour_drift, ["drift"]),
    "structure_drift": (structure_drift, ["drift"]),
    "blur": (blurred, ["blur"]),
}
CLIPS: dict[str, tuple[Callable[..., Clip], list[str]]] = {
    **{name: (make, []) for name, make in GOOD.items()}, **DEFECTIVE}
