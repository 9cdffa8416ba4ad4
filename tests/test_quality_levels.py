"""Quality levels (`quality: draft | standard | final`): what a level sets and what wins over it, the
config's checks of the [quality] tables, the shipped levels' cost (a draft at most 1/5 of a final in
denoiser work, for every diffusion backend, from the plan), and one real daemon whose draft and final
jobs record their level and the denoiser passes they ran."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_diffusion import use

from conftest import Daemon, Folders, make_image, write_toml
from i2v_watcher import backends
from i2v_watcher.backends.levels import MAX_DRAFT_SHARE, level_params, planned_work
from i2v_watcher.config.quality import SHIPPED_LEVELS, check_quality_tables, levels_for
from i2v_watcher.config.settings import Settings, load_settings
from i2v_watcher.errors import JobError, StartupError
from i2v_watcher.job.spec import JobDefaults, JobSpec, parse_sidecar, resolve
from tiny_models import build_wan_i2v

Start = Callable[..., Daemon]
CARD = {"num_frames": 81, "fps": 16.0, "steps": 40, "guidance_scale": 5.0, "resolution": "auto"}


def settings(tmp_path: Path, **changes: Any) -> Settings:
    config = tmp_path / "c.toml"
    write_toml(config, {**{name: str(tmp_path / name) for name in ("inbox", "outbox", "failed", "done",
                                                                    "work")}, **changes})
    return load_settings(config)


def refused(tmp_path: Path, **changes: Any) -> str:
    with pytest.raises(StartupError) as caught:
        settings(tmp_path, **changes)
    return str(caught.value)


def test_sidecar_over_level_over_defaults_over_card(tmp_path: Path) -> None:
    config = settings(tmp_path, defaults={"steps": 30, "fps": 12.0, "quality": "draft"}, quality={
        "draft": {"steps": 6, "num_frames": 9, "backend_options": {"a": 1, "b": 2},
                  "wan-i2v": {"num_frames": 17, "guidance_scale": 1.0}}})
    levels = levels_for(config.quality, "wan-i2v")

    def job(**sidecar: Any) -> Any:
        return resolve(JobSpec(**sidecar), config.defaults, backend="wan-i2v", seed=1, model_defaults=CARD,
                       levels=levels)

    draft = job()  # [defaults] quality = "draft"
    assert (draft.quality, draft.steps, draft.num_frames, draft.guidance_scale) == ("draft", 6, 17, 1.0)
    assert draft.fps == 12.0 and draft.resolution == "auto"  # [defaults] set fps; the card's resolution
    assert draft.from_level == {"steps", "num_frames", "guidance_scale", "backend_options"}
    assert draft.from_model == {"resolution"} and draft.backend_options == {"a": 1, "b": 2}
    own = job(steps=3, backend_options={"b": 5})  # the sidecar's fields win; its options over the level's
    assert (own.steps, own.num_frames, own.backend_options) == (3, 17, {"a": 1, "b": 5})
    assert "steps" not in own.from_level and "steps" in own.explicit
    # The user's draft replaced the shipped one: i2vgen-xl gets the generic fields only.
    assert levels_for(config.quality, "i2vgen-xl")["draft"] == {"steps": 6, "num_frames": 9,
                                                               "backend_options": {"a": 1, "b": 2}}
    standard = job(quality="standard")  # shipped standard: nothing; [defaults], then the card
    assert (standard.steps, standard.fps, standard.num_frames, standard.from_level) == (30, 12.0, 81, set())
    final = job(quality="final")  # shipped final for wan-i2v, over [defaults] steps = 30
    assert (final.steps, final.resolution, final.num_frames) == (40, "480p", 81)
    plain = resolve(JobSpec(), JobDefaults(), backend="wan-i2v", seed=1, model_defaults=CARD, levels=levels)
    assert plain.quality == "standard" and plain.steps == 40  # unchanged config: today's behaviour


def test_level_tables_are_checked_at_start_up(tmp_path: Path) -> None:
    assert "did you mean draft?" in refused(tmp_path, quality={"drafts": {"steps": 4}})
    message = refused(tmp_path, quality={"draft": {"stepz": 4}})
    assert "stepz" in message and "did you mean steps?" in message
    assert "quality.final.wan-i2v.stepz" in refused(tmp_path, quality={"final": {"wan-i2v": {"stepz": 4}}})
    assert "quality.draft.steps" in refused(tmp_path, quality={"draft": {"steps": 0}})
    assert "quality.draft.resolution" in refused(tmp_path, quality={"draft": {"resolution": "huge"}})
    assert "defaults.quality" in refused(tmp_path, defaults={"quality": "fast"})
    backends.discover([])
    options = {name: backends.get(name).options_model for name in backends.available()}
    typo = settings(tmp_path, quality={"draft": {"wan_i2v": {"steps": 4}}})
    with pytest.raises(StartupError, match=r"\[quality.draft.wan_i2v\] names no backend; did you mean "
                                           r"\[quality.draft.wan-i2v\]\?"):
        check_quality_tables(typo, options)
    wrong = settings(tmp_path, quality={"final": {"ltx-video": {"backend_options": {"distiled": True}},
                                                  "cogvideox-i2v": {"backend_options": {"x": 1}}}})
    with pytest.raises(StartupError) as caught:
        check_quality_tables(wrong, options)
    assert "[quality.final.ltx-video] invalid backend_options: distiled: unknown key" in str(caught.value)
    assert "[quality.final.cogvideox-i2v] backend_options: the cogvideox-i2v backend takes none" \
        in str(caught.value)
    check_quality_tables(settings(tmp_path), options)  # the shipped levels pass


def test_an_unknown_level_in_a_sidecar_says_which_it_meant() -> None:
    with pytest.raises(JobError) as caught:
        parse_sidecar(b"quality: fnial\n", max_bytes=4096, name="fox.yaml")
    assert "quality" in str(caught.value) and "did you mean final?" in str(caught.value)
    assert parse_sidecar(b"quality: draft\n", max_bytes=4096).quality == "draft"


def test_every_shipped_draft_costs_at_most_a_fifth_of_its_final(tmp_path: Path) -> None:
    backends.discover([])
    config = settings(tmp_path)
    diffusion = set(backends.with_models())
    assert set(SHIPPED_LEVELS["draft"]) == set(SHIPPED_LEVELS["final"]) == diffusion
    shares = {}
    for name in sorted(diffusion):
        backend = backends.get(name)(config)
        draft, final = (planned_work(backend, level_params(backend, level, config.quality))  # type: ignore[arg-type]
                        for level in ("draft", "final"))
        shares[name] = draft["work"] / final["work"]
    assert all(share <= MAX_DRAFT_SHARE for share in shares.values()), shares
    assert shares["i2vgen-xl"] == pytest.approx(1 / 18, rel=0.01)  # the WebUI's preview against its high


def test_a_draft_and_a_final_record_their_level_and_the_passes_they_ran(
        folders: Folders, tmp_path_factory: pytest.TempPathFactory, start: Start) -> None:
    """Wan runs the prompt and the negative prompt as two passes a step only above guidance 1: a draft of
    4 steps without guidance runs 4 passes, a final of 20 steps with it 40."""
    use(folders, {"wan-i2v": build_wan_i2v(tmp_path_factory.mktemp("wan") / "wan-i2v")}, "wan-i2v",
        quality={"draft": {"steps": 4, "guidance_scale": 1.0}, "final": {"steps": 20, "guidance_scale": 5.0}})
    folders.write_config(defaults={"num_frames": 4, "resolution": "32p", "fps": 8.0})
    for name, sidecar in (("rough", "quality: draft\n"), ("fine", "quality: final\nnum_frames: 5\n")):
        make_image(folders.inbox / f"{name}.png", (64, 64), seed=3)
        (folders.inbox / f"{name}.yaml").write_text(f"prompt: a fox\n{sidecar}")
    daemon = start(folders.config, "--once")
    assert daemon.wait(timeout=300) == 0, daemon.log
    rough, fine = folders.metadata("rough.draft"), folders.metadata("fine")
    assert rough["quality_level"] == "draft" and rough["parameters"]["quality"] == "draft"
    assert rough["quality_set"] == {"guidance_scale": 1.0, "steps": 4}
    assert rough["generation"]["denoiser_passes"] == 4
    assert fine["quality_level"] == "final" and fine["quality_set"] == {"guidance_scale": 5.0, "steps": 20}
    assert fine["generation"]["denoiser_passes"] == 40 and fine["parameters"]["num_frames"] == 5
