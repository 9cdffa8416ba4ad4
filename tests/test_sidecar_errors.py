"""A sidecar's mistakes caught at once and explained in plain words: through parse_sidecar/read_sidecar,
`i2v-watcher submit` (which writes nothing when it refuses) and the daemon's failed/ report."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from conftest import Daemon, Folders, cli, make_image
from i2v_watcher.backends.base import backend_options
from i2v_watcher.backends.preview import PreviewOptions
from i2v_watcher.errors import JobError
from i2v_watcher.explain.job import describe_validation_error, explain_errors
from i2v_watcher.job.spec import JobDefaults, JobParams, parse_sidecar, read_sidecar, resolve

Start = Callable[..., Daemon]
MAX = 64 * 1024
MOTIONS = "zoom-in, zoom-out, pan-left, pan-right, pan-up, pan-down, random"
# pydantic's own words, which no message may show a user.
INTERNALS = ("literal[", "constrained-str", "Input should", "Extra inputs", "<unicode string>", "Traceback")


def refusal(text: str, name: str | None = None) -> JobError:
    with pytest.raises(JobError) as caught:
        parse_sidecar(text.encode(), max_bytes=MAX, name=name)
    assert caught.value.stage == "sidecar"
    assert not [word for word in INTERNALS if word in caught.value.message], caught.value.message
    return caught.value


def plain(text: str) -> bool:
    return not [word for word in INTERNALS if word in text]


# --- parse_sidecar / read_sidecar ---------------------------------------------------------------------

def test_a_yes_no_word_where_text_belongs_says_to_quote_it() -> None:
    error = refusal("prompt: yes\n")
    assert error.message == ('invalid sidecar: prompt: yes was read by YAML as true (a yes/no, on/off or '
                             'true/false word): put it in quotes, prompt: "yes"')
    assert error.hint == ""  # the message says the fix; no list of keys for it
    assert 'put it in quotes, output_name: "2024"' in refusal("output_name: 2024\n").message
    assert "negative_prompt: Off was read by YAML as false" in refusal("negative_prompt: Off\n").message


def test_a_misspelt_key_gets_a_did_you_mean_and_the_list_of_keys() -> None:
    error = refusal("num_frame: 8\n")
    assert error.message == "invalid sidecar: num_frame: unknown key, did you mean num_frames?"
    assert error.hint.startswith("sidecar keys: prompt, negative_prompt, num_frames,")
    assert "did you mean guidance_scale?" in refusal("guidance: 7\n").message
    assert "did you mean seed?" in refusal("Seed: 7\n").message
    assert "did you mean" not in refusal("colour: red\n").message  # nothing close: no guess


def test_the_hint_fits_the_error() -> None:
    error = refusal("num_frames: 9999\n")
    assert error.message == "invalid sidecar: num_frames must be from 1 to 512 (got 9999)"
    assert error.hint == ""
    assert "fps must be more than 0 and at most 120 (got 0)" in refusal("fps: 0\n").message
    assert "must be a finite number (got nan)" in refusal("fps: .nan\n").message
    assert ('num_frames must be a whole number (got "16", which is text: write it without quotes)'
            in refusal("num_frames: '16'\n").message)
    assert "prompt must have at most 4000 characters (got 4001 characters)" in refusal(
        "prompt: " + "x" * 4001 + "\n").message


def test_every_schema_problem_is_reported_together() -> None:
    error = refusal("prompt: yes\nnum_frame: 12\nnum_frames: 9999\nfps: fast\n")
    assert error.message.startswith("invalid sidecar (4 problems): ")
    for part in ('prompt: "yes"', "did you mean num_frames?", "num_frames must be from 1 to 512",
                 'fps must be a number (got "fast")'):
        assert part in error.message
    assert len(error.problems) == 4


def test_unions_read_as_one_choice() -> None:
    assert "postprocess must be text or a list (got 3)" in refusal("postprocess: 3\n").message
    assert "postprocess[0] must be a name of at most 64 lower-case letters" in refusal(
        "postprocess: [Vertical]\n").message
    assert "postprocess must not be empty" in refusal("postprocess: []\n").message


def test_a_yaml_syntax_error_names_the_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text("prompt: a fox\nnum_frames: [1\nfps: 3\n")
    with pytest.raises(JobError) as caught:
        read_sidecar(path, max_bytes=MAX, name="sub/a.yaml")
    message = caught.value.message
    assert message.startswith("the sidecar sub/a.yaml is not valid YAML: line 3, column 4: "), message
    assert "(in the [ list that starts at line 2, column 13)" in message and plain(message)
    assert "close every [" in caught.value.hint
    colon = refusal("prompt: a fox: running\n", name="fox.yaml")
    assert colon.message.startswith("the sidecar fox.yaml is not valid YAML: line 1, column 14")
    assert 'must be in quotes: prompt: "a fox: running"' in colon.hint
    assert "YAML does not allow tabs" in refusal("prompt: x\n\tfps: 3\n").hint


def test_backend_options_are_explained_with_the_same_words() -> None:
    def params(options: dict[str, object]) -> JobParams:
        spec = parse_sidecar(json.dumps({"backend_options": options}).encode(), max_bytes=MAX)
        return resolve(spec, JobDefaults(), backend="preview", seed=1)

    with pytest.raises(JobError) as caught:
        backend_options(PreviewOptions, params({"motion": "spin", "zom": 1.2}))
    message = caught.value.message
    assert f'backend_options.motion must be one of {MOTIONS} (got "spin")' in message and plain(message)
    assert "backend_options.zom: unknown key, did you mean zoom?" in message
    assert caught.value.hint == "backend_options keys: motion, zoom"


def test_the_translator_serves_any_model_and_keeps_the_config_signature() -> None:
    class Table(BaseModel):
        model_config = ConfigDict(extra="forbid")
        settle_s: float = Field(default=1.0, ge=0, le=60)
        enabled: bool = True

    with pytest.raises(ValidationError) as caught:
        Table.model_validate({"settle_s": 99, "enabled": "maybe", "setle_s": 1})
    lines = [p.text for p in explain_errors(caught.value, model=Table)]
    assert lines == ["settle_s must be from 0 to 60 (got 99)",
                     'enabled must be true or false (got "maybe")',
                     "setle_s: unknown key, did you mean settle_s?"]
    message = describe_validation_error(caught.value, "configuration")  # as config.py calls it
    assert message.startswith("invalid configuration: settle_s must be at most 60 (got 99); ")
    assert "setle_s: unknown key" in message


# --- i2v-watcher submit ---------------------------------------------------------------------------------

def submit(folders: Folders, tmp_path: Path, *sets: str, image: Path | None = None) -> str:
    """A refused submit: exit 2, its message, and nothing written into the inbox."""
    picture = image or make_image(tmp_path / "a.png")
    args = [item for setting in sets for item in ("--set", setting)]
    result = cli("submit", str(picture), *args, "--config", str(folders.config))
    assert result.returncode == 2, result.stdout + result.stderr
    assert plain(result.stderr), result.stderr
    assert list(folders.inbox.iterdir()) == []
    return result.stderr


def test_submit_checks_presets_and_backend_options_as_the_daemon_will(folders: Folders,
                                                                      tmp_path: Path) -> None:
    said = submit(folders, tmp_path, "postprocess=vertical")
    assert "unknown post-processing preset 'vertical', did you mean vertical-1080x1920?" in said
    said = submit(folders, tmp_path, "backend_options={motion: spin}")
    assert f'backend_options.motion must be one of {MOTIONS} (got "spin")' in said


def test_submit_reports_every_problem_at_once(folders: Folders, tmp_path: Path) -> None:
    said = submit(folders, tmp_path, "num_frames=9999", "postprocess_overrides={encode: {crf: '20;x'}}",
                  "backend_options={motion: spin}", "num_frame=3", "prompt=yes", "motion=pan-left")
    assert "invalid job (6 problems):\n" in said
    for part in ("  - num_frames must be from 1 to 512 (got 9999)\n",
                 "encode.crf = '20;x' is refused: no paths, filters or ffmpeg options",
                 "backend_options.motion must be one of",
                 "num_frame: unknown key, did you mean num_frames?",
                 'prompt: yes was read by YAML as true (a yes/no, on/off or true/false word): put it in '
                 'quotes, prompt: "yes"',
                 "motion: unknown key; it is an option of the preview backend: write it under "
                 'backend_options, backend_options: {motion: "pan-left"}',
                 "  hint: sidecar keys: "):
        assert part in said, said


def test_submit_explains_overrides_with_the_same_words(folders: Folders, tmp_path: Path) -> None:
    said = submit(folders, tmp_path, "postprocess_overrides={encod: {crf: 20}, fade: {in: 1}}")
    assert "postprocess_overrides: step 'encod' cannot be overridden, did you mean encode?" in said
    assert "postprocess_overrides: fade.in cannot be overridden, did you mean in_s?" in said
    assert "hint: overridable: encode: crf; fade: in_s, out_s, color;" in said
    said = submit(folders, tmp_path, "postprocess_overrides={encode: {crf: 99}}", "crf=20")
    assert "postprocess_overrides.encode.crf must be from 0 to 63 (got 99)" in said
    assert ("crf: unknown key; it is a field of the encode step: write it under postprocess_overrides, "
            "postprocess_overrides: {encode: {crf: 20}}") in said


def test_submit_names_a_set_value_that_is_not_yaml(folders: Folders, tmp_path: Path) -> None:
    said = submit(folders, tmp_path, "prompt=[a fox", "fps=8")
    assert "--set prompt=[a fox is not valid YAML: line 1, column 7: expected ',' or ']'" in said


def test_submit_checks_the_image_with_the_sidecar(folders: Folders, tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    said = submit(folders, tmp_path, "fps=0", image=broken)
    assert "invalid job (2 problems):" in said and "fps must be more than 0" in said
    assert "broken.png: not a readable PNG, JPEG or WebP image" in said


# --- the daemon ----------------------------------------------------------------------------------------

def test_the_daemon_reports_all_of_a_sidecars_problems_at_once(folders: Folders, start: Start) -> None:
    sub = folders.inbox / "sub"
    make_image(sub / "bad.png")
    (sub / "bad.yaml").write_text(
        "prompt: yes\nnum_frame: 12\nnum_frames: 9999\npostprocess: [vertical-1080x1920]\n"
        "postprocess_overrides: {encode: {crf: '20;x'}, fade: {in_s: 1}}\n"
        "backend_options: {motion: spin}\n")
    make_image(folders.inbox / "syntax.png")
    (folders.inbox / "syntax.yaml").write_text("prompt: a fox\nnum_frames: [1\nfps: 3\n")
    daemon = start(folders.config, "--once")
    daemon.wait()
    report = folders.report("sub/bad")
    assert report["stage"] == "sidecar"
    assert report["message"].startswith("invalid sidecar sub/bad.yaml (6 problems): "), report["message"]
    assert report["problems"] == [
        'prompt: yes was read by YAML as true (a yes/no, on/off or true/false word): put it in quotes, '
        'prompt: "yes"',
        "num_frames must be from 1 to 512 (got 9999)",
        "num_frame: unknown key, did you mean num_frames?",
        f'backend_options.motion must be one of {MOTIONS} (got "spin")',
        "postprocess_overrides: encode.crf = '20;x' is refused: no paths, filters or ffmpeg options in a "
        "sidecar",
        "postprocess_overrides.fade: none of the chosen presets (vertical-1080x1920) has a fade step",
    ]
    assert report["hint"].startswith("sidecar keys: prompt, ")
    assert "choose a preset with that step, or remove the override" in report["hint"]
    syntax = folders.report("syntax")
    assert syntax["message"].startswith("the sidecar syntax.yaml is not valid YAML: line 3, column 4"), syntax
    assert "line 2, column 13" in syntax["message"] and plain(syntax["message"])
    assert folders.files("inbox") == [] and folders.files("outbox") == []
