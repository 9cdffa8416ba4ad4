"""The sidecar schema and its safe loader: strict, and every problem a readable JobError."""

from __future__ import annotations

import pytest

from i2v_watcher.errors import JobError
from i2v_watcher.job.spec import JobDefaults, JobSpec, normalise_resolution, parse_sidecar, resolve

MAX = 64 * 1024


def parse(text: str) -> JobSpec:
    return parse_sidecar(text.encode(), max_bytes=MAX)


def test_full_sidecar_is_parsed() -> None:
    spec = parse("prompt: a cat\nnegative_prompt: blur\nnum_frames: 24\nfps: 12\nsteps: 30\n"
                 "guidance_scale: 7.5\nresolution: 768p\nseed: 42\nbackend: preview\n"
                 "postprocess: default\noutput_name: cat clip\nbackend_options: {motion: pan-left}\n")
    assert spec.num_frames == 24 and spec.fps == 12.0 and spec.resolution == "768p" and spec.seed == 42
    assert spec.output_name == "cat clip" and spec.backend_options == {"motion": "pan-left"}


def test_empty_sidecar_means_defaults() -> None:
    assert parse("") == JobSpec()
    params = resolve(parse(""), JobDefaults(), backend="preview", seed=7)
    assert (params.num_frames, params.fps, params.steps, params.guidance_scale, params.resolution) == \
        (16, 8.0, 50, 9.0, "512p")
    assert params.explicit == frozenset()


def test_sidecar_overrides_defaults_and_records_what_it_set() -> None:
    params = resolve(parse("num_frames: 4\nprompt: x\n"), JobDefaults(fps=24), backend="preview", seed=1)
    assert params.num_frames == 4 and params.fps == 24 and params.prompt == "x"
    assert params.explicit == {"num_frames", "prompt"}


@pytest.mark.parametrize("resolution,expected", [("512p", "512p"), (256, "256p"), ("1024", "1024p"),
                                                 ("AUTO", "auto")])
def test_resolution_forms(resolution: object, expected: str) -> None:
    assert normalise_resolution(resolution) == expected


@pytest.mark.parametrize("text,needle", [
    ("colour: red\n", "colour: unknown key"),
    ("num_frames: 0\n", "num_frames"),
    ("num_frames: 100000\n", "num_frames"),
    ("num_frames: '16'\n", "num_frames"),  # strict: a string is not a number
    ("fps: -1\n", "fps"),
    ("guidance_scale: 1000\n", "guidance_scale"),
    ("resolution: 99999p\n", "resolution"),
    ("resolution: true\n", "resolution"),
    ("seed: -5\n", "seed"),
    ("backend: '../x'\n", "backend"),
    ("output_name: ../../etc/passwd\n", "output_name"),
    ("output_name: /abs/path\n", "output_name"),
    ("output_name: .hidden\n", "output_name"),
    ("output_name: 'a\\\\b'\n", "output_name"),
    ("- a list\n- not a mapping\n", "mapping"),
    ("prompt: [unclosed\n", "not valid YAML"),
    ("prompt: a\nprompt: b\n", "duplicate key"),
])
def test_bad_sidecars_are_refused_with_a_reason(text: str, needle: str) -> None:
    with pytest.raises(JobError) as caught:
        parse(text)
    assert needle in caught.value.message
    assert caught.value.stage == "sidecar"


def test_yaml_object_tags_are_refused() -> None:
    with pytest.raises(JobError, match="not valid YAML"):
        parse("prompt: !!python/object/apply:os.system ['touch /tmp/pwned']\n")


def test_alias_bomb_is_refused_before_it_expands() -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(8))
    with pytest.raises(JobError, match="aliases"):
        parse(bomb)


def test_size_cap() -> None:
    with pytest.raises(JobError, match="larger than"):
        parse_sidecar(b"prompt: " + b"x" * 2000, max_bytes=1000)


def test_not_utf8() -> None:
    with pytest.raises(JobError, match="UTF-8"):
        parse_sidecar(b"prompt: \xff\xfe\n", max_bytes=MAX)


def test_utf8_bom_and_unicode_prompt() -> None:
    assert parse_sidecar("\ufeffprompt: 猫が走る ✨\n".encode(), max_bytes=MAX).prompt == "猫が走る ✨"
