"""The judge: each test clip (tests/clips.py) gets exactly its symptoms, the scores keep their
directions, and a re-roll changes what the WebUI's table says for each symptom and backend."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import pytest
from clips import CLIPS, FPS, Clip, H, T, W, pan, texture

from i2v_watcher.config.gate import GateOverride, QualityGate, Thresholds, check_gate_tables
from i2v_watcher.errors import StartupError
from i2v_watcher.judge import SCORES, SYMPTOMS, score
from i2v_watcher.judge.advice import ADVICE, advice, reroll_changes, with_motion_words

PROMPTED = {"prompt", "negative_prompt", "guidance_scale", "steps", "num_frames", "fps"}
SVD = {"num_frames", "fps", "steps", "guidance_scale", "decode_chunk_size"}


@pytest.mark.parametrize("name", list(CLIPS))
def test_each_clip_has_exactly_its_symptoms(name: str) -> None:
    make, expected = CLIPS[name]
    frames, image = make()
    judgement = score(frames, image, FPS)
    assert judgement.symptoms == expected, (judgement.scores, judgement.details)
    assert list(judgement.scores) == list(SCORES)
    assert all(isinstance(value, float) for value in judgement.scores.values())
    assert judgement.verdict == ("fail" if expected else "pass")
    assert set(judgement.as_dict()) == {"scores", "symptoms", "verdict", "details"}


def judged(make: Callable[[], Clip]) -> dict[str, float]:
    frames, image = make()
    return score(frames, image, FPS).scores


def test_scores_point_the_documented_way() -> None:
    good = judged(CLIPS["pan"][0])
    assert judged(CLIPS["no_motion"][0])["motion"] < good["motion"]  # higher is more motion
    assert judged(CLIPS["frozen"][0])["frozen"] > good["frozen"]
    assert judged(CLIPS["flicker"][0])["flicker"] > good["flicker"]
    assert judged(CLIPS["black_flashes"][0])["black"] == 2 / 16
    assert judged(CLIPS["colour_drift"][0])["drift"] > good["drift"]
    assert judged(CLIPS["blur"][0])["sharpness"] < good["sharpness"]  # higher is sharper


def test_the_first_frame_against_the_input_is_in_the_details() -> None:
    frames, image = pan()
    details = score(frames, image, FPS).details
    assert details["first_frame_ssim"] > 0.95 and details["first_frame_psnr_db"] > 35
    flow_px = Thresholds().motion_flow_px
    assert len(details["motion_pairs_top5_px"]) == 15 and details["motion_threshold_px"] == flow_px * 96 / 256


def test_motion_is_sampled_at_about_8_fps() -> None:
    frames, image = pan()
    # The same frames at 24 fps: every third frame is compared, so 5 pairs of 3x the step move.
    details = score(frames, image, 24.0).details
    assert details["motion_sample_fps"] == 8.0 and len(details["motion_pairs_top5_px"]) == 5
    # At 4 fps a pair is 1/4 s apart: VBench doubles the flow a pair must exceed.
    flow_px = Thresholds().motion_flow_px
    assert score(frames, image, 4.0).details["motion_threshold_px"] == 2 * flow_px * 96 / 256


def test_thresholds_decide_the_symptoms() -> None:
    frames, image = CLIPS["no_motion"][0]()
    assert score(frames, image, FPS, Thresholds(min_motion=0.0)).symptoms == []
    frames, image = pan()
    assert score(frames, image, FPS, Thresholds(motion_flow_px=20.0)).symptoms == ["no_motion"]


def test_an_all_black_clip_is_only_black() -> None:
    frames, image = pan()
    judgement = score(np.zeros_like(frames), image, FPS)
    assert judgement.symptoms == ["black"] and judgement.scores["black"] == 1.0


def test_a_dark_input_does_not_make_its_clip_black() -> None:
    frames, image = pan()
    dim = (frames // 12).astype(np.uint8)  # a night scene: dark, but with a picture in it
    assert "black" not in score(dim, (image // 12).astype(np.uint8), FPS).symptoms


def test_frames_must_match_the_image() -> None:
    frames, image = pan()
    with pytest.raises(ValueError, match="the image must be"):
        score(frames, image[:-2], FPS)


def test_every_symptom_has_the_tables_advice() -> None:
    assert set(ADVICE) == set(SYMPTOMS)
    assert "naturally, smoothly" in advice(["no_motion"])[0] and "10-12" in advice(["drift"])[0]


def test_motion_words_are_appended_once() -> None:
    assert with_motion_words("a cat on a sofa.") == "a cat on a sofa, moving, naturally, smoothly"
    assert with_motion_words("") == "moving, naturally, smoothly"
    assert with_motion_words("a boat moving naturally and smoothly") == "a boat moving naturally and smoothly"


def test_reroll_changes_follow_the_table() -> None:
    gate = QualityGate()
    values = {"prompt": "a cat", "guidance_scale": 9.0, "backend_options": {}}
    assert reroll_changes(["no_motion", "drift"], values, "i2vgen-xl", gate.for_job("i2vgen-xl"),
                          PROMPTED) == {"prompt": "a cat, moving, naturally, smoothly",
                                        "guidance_scale": 10.0}
    # Up to the ceiling, and no further.
    assert reroll_changes(["drift"], {**values, "guidance_scale": 11.5}, "i2vgen-xl",
                          gate.for_job("i2vgen-xl"), PROMPTED) == {"guidance_scale": 12.0}
    assert reroll_changes(["drift"], {**values, "guidance_scale": 12.0}, "i2vgen-xl",
                          gate.for_job("i2vgen-xl"), PROMPTED) == {}
    assert reroll_changes(["drift"], {**values, "guidance_scale": 5.0}, "wan-i2v",
                          gate.for_job("wan-i2v"), PROMPTED) == {"guidance_scale": 5.5}
    # svd reads no prompt: its motion is motion_bucket_id, the job's other options kept.
    svd = {"prompt": "", "guidance_scale": 3.0, "backend_options": {"noise_aug_strength": 0.05}}
    assert reroll_changes(["no_motion"], svd, "svd", gate.for_job("svd"), SVD) == {
        "backend_options": {"noise_aug_strength": 0.05, "motion_bucket_id": 167}}
    assert reroll_changes(["no_motion"], {**svd, "backend_options": {"motion_bucket_id": 240}}, "svd",
                          gate.for_job("svd"), SVD) == {"backend_options": {"motion_bucket_id": 255}}
    # A backend without guidance (or without a table) gets no guidance change; flicker changes nothing.
    assert reroll_changes(["drift", "flicker"], values, "preview", gate.for_job("preview"), {"fps"}) == {}
    assert reroll_changes(["drift"], values, "my-plugin", gate.for_job("my-plugin"), PROMPTED) == {}


def test_gate_tables_and_job_overrides() -> None:
    gate = QualityGate.model_validate({"max_drift": 0.4, "wan-i2v": {"guidance_ceiling": 8.0}})
    wan = gate.for_job("wan-i2v")
    assert (wan.guidance_step, wan.guidance_ceiling, wan.thresholds.max_drift) == (0.5, 8.0, 0.4)
    job = gate.for_job("wan-i2v", GateOverride(action="reroll", max_drift=0.7))
    assert job.action == "reroll" and job.thresholds.max_drift == 0.7 and job.max_rerolls == 2
    with pytest.raises(ValueError, match="did you mean max_drift"):
        QualityGate.model_validate({"max_drif": 0.4})
    with pytest.raises(ValueError):
        GateOverride.model_validate({"max_drift": "0.4"})  # strict, like the sidecar
    with pytest.raises(ValueError):
        GateOverride.model_validate({"maximum": 1})


def test_the_docs_show_every_test_clip_in_a_small_picture() -> None:
    from clip_strips import PICKS

    from conftest import REPO

    assert set(PICKS) == set(CLIPS)
    page = (REPO / "docs" / "quality-gate.md").read_text()
    for name in CLIPS:
        picture = REPO / "docs" / "images" / f"clip-{name.replace('_', '-')}.png"
        assert picture.stat().st_size < 30_000 and f"images/{picture.name}" in page, name


def test_a_misspelt_backend_table_is_named_at_start_up() -> None:
    known = ["i2vgen-xl", "preview", "svd", "wan-i2v"]
    check_gate_tables(QualityGate.model_validate({"svd": {"max_drift": 0.4}}), known)
    with pytest.raises(StartupError) as caught:
        check_gate_tables(QualityGate.model_validate({"wan_i2v": {"max_drift": 0.4}}), known)
    assert str(caught.value) == ("[quality_gate.wan_i2v] names no backend; did you mean "
                                 "[quality_gate.wan-i2v]?; backends: i2vgen-xl, preview, svd, wan-i2v")


def test_a_clip_that_opens_zoomed_in_on_the_picture_is_not_drift() -> None:
    """A camera already zoomed in 1.3x at its first frame, then panning (the preview backend's Ken Burns
    clips): the first frame is matched to the part of the input it shows, not to the whole input."""
    fine = texture(2 * H, 2 * W, seed=9)
    image = cv2.resize(fine, (W, H), interpolation=cv2.INTER_AREA)
    height, width = round(2 * H / 1.3), round(2 * W / 1.3)
    frames = np.stack([cv2.resize(fine[20:20 + height, 4 * t:4 * t + width], (W, H),
                                  interpolation=cv2.INTER_AREA) for t in range(T)])
    judged = score(frames, image, FPS)
    assert judged.details["drift_start_alignment"].startswith("zoom 1.3")
    assert judged.symptoms == [] and judged.scores["drift"] < 0.3
    # The same frames judged against another picture are still drift.
    assert "drift" in score(frames, texture(H, W, seed=10), FPS).symptoms
