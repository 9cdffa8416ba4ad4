"""A prompt for an image that has none: the template, the captioner loaded through transformers' generic
classes from a tiny random BLIP folder built in code (tests/tiny_models.py), and the job-level rules
(a caption made once and kept in the job's state; a captioner that fails fails the job)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from i2v_watcher.backends.caption import Captioner, caption_model_problem
from i2v_watcher.backends.preview import PreviewBackend
from i2v_watcher.backends.wan_i2v import WanImageToVideoBackend
from i2v_watcher.config.caption import DEFAULT_TEMPLATE, CaptionSettings
from i2v_watcher.config.models import DiffusionSettings
from i2v_watcher.config.settings import Settings
from i2v_watcher.errors import JobError, StartupError
from i2v_watcher.job.spec import JobDefaults, JobSpec, resolve
from i2v_watcher.job.state import Job, JobState, new_job_id
from i2v_watcher.run.prompting import Prompter, motion_prompt, prompt_source, subject_of
from tiny_models import CAPTION_WORDS, build_captioner, build_florence2

CPU = DiffusionSettings(device="cpu")
IMAGE = Image.new("RGB", (96, 72), (200, 30, 30))


@pytest.mark.parametrize("caption,subject", [
    ("A red fox sitting in the snow. The sky is grey.", "A red fox sitting in the snow"),
    ("a cat on green grass", "a cat on green grass"),
    (". in green sits fox red.", "in green sits fox red"),  # nonsense: the first sentence with words
    ("...", "..."),
])
def test_the_subject_is_the_first_sentence_with_words(caption: str, subject: str) -> None:
    assert subject_of(caption) == subject


def test_the_motion_prompt_adds_motion_camera_and_slow_motion_to_the_subject() -> None:
    prompt = motion_prompt("A red fox sitting in the snow. The sky is grey.", DEFAULT_TEMPLATE)
    assert prompt == ("A red fox sitting in the snow, moving naturally and smoothly, with gentle lifelike "
                      "motion; the camera slowly pushes in; cinematic, slow motion.")
    # a caption's braces are text, never placeholders; its whitespace is folded
    folded = motion_prompt("a {subject}\n sign", "{caption} | {subject}")
    assert folded == "a {subject} sign | a {subject} sign"


def captioner(folder: Path, **settings: object) -> Captioner:
    loaded = Captioner(CaptionSettings(model=str(folder), **settings), CPU)  # type: ignore[arg-type]
    loaded.load()
    return loaded


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_captioner(tmp_path_factory.mktemp("captioner") / "blip")


def test_a_tiny_captioner_loads_through_the_auto_classes_and_captions_the_same_way_twice(tiny: Path) -> None:
    loaded = captioner(tiny, max_new_tokens=12)
    assert type(loaded.model).__name__ == "BlipForConditionalGeneration" and loaded.task == ""  # BLIP's own
    text = loaded.caption(IMAGE)
    assert text and set(text.replace(".", " . ").split()) <= set(CAPTION_WORDS), text
    assert loaded.caption(IMAGE.copy()) == text  # greedy: the same image, the same words
    assert caption_model_problem(loaded.settings) is None  # doctor agrees


def test_florence2_gets_its_detailed_caption_task_and_writes_only_its_answer(tmp_path: Path) -> None:
    loaded = captioner(build_florence2(tmp_path / "florence2"), max_new_tokens=8)
    assert type(loaded.model).__name__ == "Florence2ForConditionalGeneration"
    assert loaded.task == "<DETAILED_CAPTION>"  # the family's own; the processor asks it in words
    text = loaded.caption(IMAGE)
    asked = {"describe", "in", "detail", "what", "is", "shown", "image"}  # the words of its question
    assert text and set(text.replace(".", " . ").split()) <= set(CAPTION_WORDS) | asked, text


def test_a_missing_folder_or_one_without_a_captioner_stops_the_start(tmp_path: Path) -> None:
    from transformers import BertConfig, BertModel

    with pytest.raises(StartupError, match=r"set \[caption\] model"):
        captioner(tmp_path / "nowhere")
    text_only = tmp_path / "bert"
    BertModel(BertConfig(vocab_size=16, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=16)).save_pretrained(text_only)
    with pytest.raises(StartupError, match=r"(not|as) an image captioner"):
        captioner(text_only)
    assert "is a bert model, not an image captioner" in str(
        caption_model_problem(CaptionSettings(model=str(text_only))))
    assert "does not exist" in str(caption_model_problem(CaptionSettings(model=str(tmp_path / "nowhere"))))


def test_doctor_checks_the_caption_model_when_one_is_set(tmp_path: Path, tiny: Path) -> None:
    from i2v_watcher.ops.findings import Context
    from i2v_watcher.ops.model_check import check_caption

    settings = settings_in(tmp_path)
    assert check_caption(Context(settings)) == []  # off: nothing to check

    def finding(model: Path) -> tuple[str, str]:
        caption = CaptionSettings(model=str(model))
        (found,) = check_caption(Context(settings.model_copy(update={"caption": caption})))
        return found.status, found.message

    assert finding(tiny) == ("ok", f"caption model {tiny}")
    status, message = finding(tmp_path / "nowhere")
    assert status == "error" and "does not exist" in message


def make_job(tmp_path: Path) -> Job:
    folder = tmp_path / "job"
    folder.mkdir()
    job = Job(folder, JobState(job_id=new_job_id(), worker_id="w", stage="claimed", key="a",
                               inputs=["a.png"]))
    job.save()
    return job


def settings_in(tmp_path: Path) -> Settings:
    return Settings(**{name: tmp_path / name for name in ("inbox", "outbox", "failed", "done", "work")})


def params_for(prompt: str | None = None):  # type: ignore[no-untyped-def]
    return resolve(JobSpec(prompt=prompt), JobDefaults(), backend="wan-i2v", seed=1)


def test_a_job_is_captioned_once_and_the_sidecar_or_an_image_only_backend_needs_none(
        tmp_path: Path, tiny: Path) -> None:
    settings = settings_in(tmp_path)
    wan, preview = WanImageToVideoBackend(settings), PreviewBackend(settings)
    job = make_job(tmp_path)
    prompter = Prompter(captioner(tiny, max_new_tokens=12), DEFAULT_TEMPLATE)
    given = params_for("a fox runs")
    assert prompter.prompted(job, given, wan, IMAGE) is given and job.state.caption is None
    assert prompter.prompted(job, params_for(), preview, IMAGE).prompt == ""  # preview ignores prompts
    made = prompter.prompted(job, params_for("  "), wan, IMAGE)
    record = job.state.caption
    assert record is not None and made.prompt == record.prompt == motion_prompt(record.text, DEFAULT_TEMPLATE)
    assert prompt_source(job, made) == "caption" and prompt_source(job, given) == "sidecar"
    # After a restart the state's caption is used: a captioner that was never loaded is never asked.
    again = Prompter(Captioner(CaptionSettings(model=str(tiny)), CPU), DEFAULT_TEMPLATE)
    assert again.prompted(Job.load(job.dir), params_for(), wan, IMAGE).prompt == made.prompt


def test_a_captioner_that_fails_fails_the_job_with_a_readable_report(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    short = build_captioner(tmp_path / "short", positions=4)  # a caption past 4 tokens breaks generate
    prompter = Prompter(captioner(short, max_new_tokens=12), DEFAULT_TEMPLATE)
    job = make_job(tmp_path)
    with pytest.raises(JobError) as caught:
        prompter.prompted(job, params_for(), WanImageToVideoBackend(settings), IMAGE)
    assert caught.value.stage == "caption" and "failed on this image: IndexError" in caught.value.message
    assert "prompt:" in caught.value.hint and job.state.caption is None
