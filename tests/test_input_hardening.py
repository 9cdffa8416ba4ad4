"""Hostile or odd user input fails as a readable job error (or is mended), never as an unexpected error:
sidecar YAML, output names and file stems, 16-bit images, colour words in post-processing steps."""

from __future__ import annotations

import errno
import hashlib
import io
import random
import re
import subprocess
import unicodedata
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
import yaml
from PIL import Image

from i2v_watcher.config.settings import SHIPPED_PRESETS
from i2v_watcher.errors import JobError, is_transient
from i2v_watcher.job.spec import (
    MAX_DEPTH,
    MAX_INT_DIGITS,
    MAX_NAME_BYTES,
    JobSpec,
    check_output_name,
    parse_sidecar,
    safe_stem,
)
from i2v_watcher.media.images import decode_image, load_image
from i2v_watcher.steps import parse_chain, parse_step
from i2v_watcher.steps.base import FFMPEG_COLOR_NAMES, check_color

MAX = 64 * 1024


def parse(text: str) -> JobSpec:
    return parse_sidecar(text.encode(), max_bytes=MAX)


def refusal(text: str) -> str:
    with pytest.raises(JobError) as caught:
        parse(text)
    assert caught.value.stage == "sidecar"
    return caught.value.message


def nested(depth: int) -> str:
    return "backend_options: {x: " + "[" * (depth - 1) + "1" + "]" * (depth - 1) + "}\n"


# --- sidecar YAML -------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,needle", [
    ("? [a, b]\n: 1\n", "a key must be a single name"),
    ("{[a]: 1}\n", "a key must be a single name"),
    ("backend_options: {{a: 1}: 2}\n", "a key must be a single name"),
    ("? !!seq x\n: 1\n", "a key must be a single name"),
    ("seed: " + "1" * 5001 + "\n", f"more than {MAX_INT_DIGITS} digits"),
    ("seed: " + "1" * (MAX_INT_DIGITS + 1) + "\n", f"more than {MAX_INT_DIGITS} digits"),
    ("seed: 0x" + "f" * 40 + "\n", f"more than {MAX_INT_DIGITS} digits"),
    ("[" * 20_000, f"more than {MAX_DEPTH} levels"),
    ("{" * 20_000, f"more than {MAX_DEPTH} levels"),
    ("prompt: !!timestamp 2026-01-01\n", "!!timestamp values are not allowed"),
    ("backend_options: {x: !!binary /w==}\n", "!!binary values are not allowed"),
    ("backend_options: {x: !!set {a}}\n", "!!set values are not allowed"),
    ("backend_options: {x: !!omap [a: 1]}\n", "!!omap values are not allowed"),
    ("prompt: &a x\n", "aliases"),
])
def test_refused_yaml_is_a_sidecar_error(text: str, needle: str) -> None:
    assert needle in refusal(text)


def test_refusals_say_where() -> None:
    assert "(line 2, column 3)" in refusal("prompt: x\n? [a]\n: 1\n")


def test_nesting_up_to_the_limit_is_fine() -> None:
    assert parse(nested(MAX_DEPTH - 1)).backend_options["x"] is not None
    assert f"more than {MAX_DEPTH} levels" in refusal(nested(MAX_DEPTH))


def test_integers_up_to_the_limit_are_fine() -> None:
    digits = "9" * MAX_INT_DIGITS
    assert parse(f"backend_options: {{n: {digits}}}\n").backend_options["n"] == int(digits)
    assert parse("backend_options: {n: -1_000}\n").backend_options["n"] == -1000


@pytest.mark.parametrize("value", ["2026-02-30", "2026-01-01", "2026-01-01 10:00:00", "2026-01-01T10:00:00Z"])
def test_dates_stay_text(value: str) -> None:
    assert parse(f"prompt: {value}\n").prompt == value


def test_the_global_safe_loader_is_untouched() -> None:
    parse("prompt: 2026-02-30\nseed: 5\n")
    assert str(yaml.safe_load("d: 2026-01-01")["d"]) == "2026-01-01"
    assert type(yaml.safe_load("d: 2026-01-01")["d"]).__name__ == "date"
    assert yaml.safe_load("n: " + "1" * 40)["n"] == int("1" * 40)


@pytest.mark.parametrize("text", ["prompt: !!float abc\n", "prompt: !!bool maybe\n", "seed: !!int abc\n"])
def test_anything_else_the_loader_raises_is_a_sidecar_error(text: str) -> None:
    assert refusal(text).startswith("the sidecar could not be read: ")


def test_anything_validation_raises_is_a_sidecar_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(raw: object) -> JobSpec:
        raise RuntimeError("boom")

    monkeypatch.setattr(JobSpec, "model_validate", broken)
    assert refusal("prompt: x\n") == "the sidecar could not be read: RuntimeError: boom"


@pytest.mark.parametrize("text,key", [
    ("seed: 99999999999999999999\n", "seed"),
    ("prompt: {a: 1}\n", "prompt"),
    ("1: x\n", "1"),
    ("output_name: \"gnp.\\u202eexe\"\n", "output_name"),
])
def test_validation_errors_still_name_the_key(text: str, key: str) -> None:
    message = refusal(text)
    assert message.startswith((f"invalid sidecar: {key} must ", f"invalid sidecar: {key}: ")), message


# --- output names ---------------------------------------------------------------------------------------

JAPANESE = "猫が走る春の野原で"  # 3 bytes a character
FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # one emoji made of three, joined by ZWJ


@pytest.mark.parametrize("name", [
    "cat clip", "猫が走る", FAMILY, "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",  # ZWNJ in Persian
    "x" * MAX_NAME_BYTES, ("猫" * (MAX_NAME_BYTES // 3)), "a.b.c", "caf\u00e9-2026_01",
])
def test_good_names_pass(name: str) -> None:
    assert check_output_name(name) == name


@pytest.mark.parametrize("char", [
    "\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069", "\u200e",
    "\u200f", "\ufeff", "\x7f", "\x1b", "\n", "\u2028", "\u2029", "\ue000", "\u0378", "\udcff",
])
def test_invisible_and_control_characters_are_refused_by_code_point(char: str) -> None:
    with pytest.raises(ValueError, match=f"U\\+{ord(char):04X}"):
        check_output_name(f"gnp.{char}exe")


def test_rlo_is_named() -> None:
    with pytest.raises(ValueError, match=r"U\+202E \(RIGHT-TO-LEFT OVERRIDE\)"):
        check_output_name("gnp.\u202eexe")


@pytest.mark.parametrize("name", ["x" * (MAX_NAME_BYTES + 1), "猫" * (MAX_NAME_BYTES // 3 + 1),
                                  JAPANESE * 10, "\U0001f600" * (MAX_NAME_BYTES // 4 + 1)])
def test_names_are_limited_in_bytes(name: str) -> None:
    with pytest.raises(ValueError, match=f"at most {MAX_NAME_BYTES} bytes"):
        check_output_name(name)


@pytest.mark.parametrize("name", ["", " x", "x ", "a/b", "a\\b", "a..b", "..", ".", ".hidden", "a\x00b"])
def test_the_old_rules_still_hold(name: str) -> None:
    with pytest.raises(ValueError):
        check_output_name(name)


def distinct_tail(stem: str) -> str:
    return "~" + hashlib.sha256(stem.encode("utf-8", "surrogatepass")).hexdigest()[:8]


@pytest.mark.parametrize("stem,expected", [
    ("cat", "cat"),
    ("gnp.\u202eexe", "gnp._exe"),
    ("a\x7fb\tc", "a_b_c"),
    ("../../etc/passwd", "_._etc_passwd"),
    ("a\\b", "a_b"),
    (".hidden", "hidden"),
    (" . .x ", "x"),
    ("...", "clip"),
    ("  ", "clip"),
    ("", "clip"),
    ("a....b", "a.b"),
    (FAMILY + " party", FAMILY + " party"),
    ("\udcff\udcfe", "__"),  # os.fsdecode of bytes that are not UTF-8
    ("x" * MAX_NAME_BYTES, "x" * MAX_NAME_BYTES),
])
def test_safe_stem_mends(stem: str, expected: str) -> None:
    assert safe_stem(stem) == expected


def test_safe_stem_shortens_long_names_and_keeps_them_distinct() -> None:
    first, second = JAPANESE * 9 + "一", JAPANESE * 9 + "二"  # 246 bytes each, alike up to the last character
    assert len(first.encode()) > 240
    mended = [safe_stem(first), safe_stem(second)]
    assert mended[0] != mended[1]
    for stem, name in zip([first, second], mended, strict=True):
        assert len(name.encode()) <= MAX_NAME_BYTES and check_output_name(name) == name
        assert name.endswith(distinct_tail(stem)) and stem.startswith(name[:-9])
    assert safe_stem(first) == mended[0]  # the same stem gives the same name on every run


def test_safe_stem_cuts_on_a_character_boundary() -> None:
    stem = "a" + "\U0001f600" * 50  # 4-byte characters that do not line up with the cut
    name = safe_stem(stem)
    assert name == "a" + "\U0001f600" * 35 + distinct_tail(stem)
    assert len(name.encode()) <= MAX_NAME_BYTES
    assert len(safe_stem("x" * (MAX_NAME_BYTES + 1)).encode()) == MAX_NAME_BYTES


def test_safe_stem_always_gives_a_usable_name() -> None:
    alphabet = ["a", "猫", " ", ".", "/", "\\", "\x00", "\x7f", "\u202e", "\u200d", "\U0001f600", "\udcff",
                "\u3000", "\u2028", "\ue000", "\u0378", "~", "-"]
    rng = random.Random(1234)
    for _ in range(2000):
        stem = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 120)))
        name = safe_stem(stem)
        assert check_output_name(name) == name, repr(stem)


def test_every_refused_category_is_mended() -> None:
    samples = {unicodedata.category(c): c for c in map(chr, range(0x110000))
               if unicodedata.category(c) in {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
               and c not in "\u200c\u200d"}
    assert len(samples) == 7
    for char in samples.values():
        assert safe_stem(f"a{char}b") == "a_b"


# --- images ---------------------------------------------------------------------------------------------

def png_bit_depth(path: Path) -> int:
    return path.read_bytes()[24]  # the IHDR chunk's bit depth


def grey16(path: Path, pixels: np.ndarray) -> Path:
    Image.fromarray(pixels.astype(np.uint16)).save(path)
    assert png_bit_depth(path) == 16
    with Image.open(path) as reopened:
        assert reopened.mode in {"I;16", "I;16B", "I"}
    return path


def load(path: Path) -> np.ndarray:
    image = load_image(path, max_pixels=10**7, max_bytes=10**8)
    assert image.mode == "RGB"
    return np.asarray(image).astype(np.int64)


def test_sixteen_bit_grey_gradient_keeps_its_levels(tmp_path: Path) -> None:
    ramp = np.linspace(0, 65535, 256).round()
    pixels = load(grey16(tmp_path / "ramp.png", np.tile(ramp, (8, 1))))
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 0] == pixels[..., 2]).all()
    assert (pixels[:, 0] == 0).all() and (pixels[:, -1] == 255).all()
    assert (pixels[0, :, 0] == np.arange(256)).all()  # an even ramp stays an even ramp, level for level
    assert abs(pixels.mean() - 127.5) < 0.01


@pytest.mark.parametrize("level,expected", [(0, 0), (257, 1), (32768, 128), (65535, 255)])
def test_sixteen_bit_grey_flat(tmp_path: Path, level: int, expected: int) -> None:
    pixels = load(grey16(tmp_path / "flat.png", np.full((6, 9), level)))
    assert (pixels == expected).all()


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "1"])
def test_other_modes_keep_pillows_conversion(tmp_path: Path, mode: str) -> None:
    rng = np.random.default_rng(3)
    source = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).convert(mode)
    source.save(tmp_path / "in.png")
    with Image.open(tmp_path / "in.png") as reopened:
        expected = np.asarray(reopened.convert("RGB")).astype(np.int64)
    assert (load(tmp_path / "in.png") == expected).all()


# --- colours --------------------------------------------------------------------------------------------

def test_colour_names_are_ffmpegs() -> None:
    listing = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-colors"],
                             capture_output=True, text=True, check=True, timeout=60).stdout
    names = {line.split()[0].lower() for line in listing.splitlines()[1:] if line}
    assert names == FFMPEG_COLOR_NAMES


@pytest.mark.parametrize("color", ["black", "White", "NAVY", "lightgrey", "#1e1e1e", "#ABCDEF"])
def test_good_colours(color: str) -> None:
    assert check_color(color) == color
    assert parse_step({"step": "fade", "color": color}).model_dump()["color"] == color


@pytest.mark.parametrize("color", ["blurple", "grey", "#12345", "#1234567", "#gggggg", "random", "",
                                   "black:movie=/etc/passwd", "-y", "../x", "black@0.5"])
def test_bad_colours_fail_when_the_step_is_read(color: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"unknown colour {color!r}")):
        check_color(color)
    for step in ({"step": "fade"}, {"step": "scale_pad", "width": 64, "height": 64}):
        with pytest.raises(ValueError, match=r"color: .*unknown colour"):
            parse_step({**step, "color": color})


def test_colour_message() -> None:
    with pytest.raises(ValueError) as caught:
        check_color("blurple")
    assert str(caught.value) == ("unknown colour 'blurple': use #rrggbb or an ffmpeg colour name such as "
                                 "black, white, navy")


def test_shipped_presets_still_validate() -> None:
    for name, preset in SHIPPED_PRESETS.items():
        assert parse_chain(preset.steps), name


class ShortOfDescriptors(io.BytesIO):
    """A file whose read fails as it does when the process has no descriptor left (EMFILE)."""

    def read(self, size: int | None = -1, /) -> bytes:
        raise OSError(errno.EMFILE, "Too many open files")


def test_a_host_out_of_descriptors_is_retried_not_reported_as_a_damaged_image(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.effect_noise((64, 48), 60).convert("RGB").save(buffer, "PNG")
    handle = ShortOfDescriptors(buffer.getvalue())
    with pytest.raises(OSError) as raised:
        decode_image(handle, max_pixels=10_000, max_bytes=1 << 20)
    assert not isinstance(raised.value, JobError) and is_transient(raised.value)
    # A real fault of the file stays the job's.
    truncated = io.BytesIO(buffer.getvalue()[:len(buffer.getvalue()) // 2])
    with pytest.raises(JobError, match="damaged or truncated"):
        decode_image(truncated, max_pixels=10_000, max_bytes=1 << 20)


def test_a_small_limit_is_this_decode_s_and_not_the_process_s(tmp_path: Path) -> None:
    """Pillow's own limit is global: a job's small max_image_pixels must not make the daemon's next
    unrelated open (a frame, a thumbnail) a decompression bomb."""
    small, big = io.BytesIO(), tmp_path / "big.png"
    Image.new("RGB", (32, 32)).save(small, "PNG")
    Image.new("RGB", (400, 300)).save(big)
    decode_image(small, max_pixels=4096, max_bytes=1 << 20)
    with Image.open(big) as reopened:  # 120,000 pixels: 29x the limit just used
        reopened.load()
    with pytest.raises(JobError, match=r"400x300 = 120000 pixels, over the limit of 4096"):
        load_image(big, max_pixels=4096, max_bytes=1 << 20)
