"""A prompt for an image that has none, through a real daemon: a tiny random captioner (tests/tiny_models.py,
its words nonsense, its path real) is loaded at start-up beside a prompt-driven backend (the plugin
tests/plugins/prompted_backend.py). Jobs without a prompt get one made of their caption, the sidecar's
prompt wins where given, a backend that ignores prompts gets none, and a captioned draft's final gets
the draft's prompt. (That a job's kept caption is never made again: tests/test_caption.py.)"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from conftest import Daemon, Folders, make_image
from i2v_watcher.config.caption import DEFAULT_TEMPLATE
from i2v_watcher.run.drafts import DraftRecord, final_sidecar
from i2v_watcher.run.prompting import motion_prompt
from tiny_models import CAPTION_WORDS, build_captioner

Start = Callable[..., Daemon]


def test_jobs_without_a_prompt_get_one_from_their_caption(tmp_path: Path, folders: Folders,
                                                           start: Start) -> None:
    model = build_captioner(tmp_path / "captioner")
    folders.write_config(backend="prompted", backends=["preview"], plugins=["prompted_backend"],
                         caption={"model": str(model), "device": "cpu", "max_new_tokens": 12})
    for number, name in enumerate(["a", "b", "c", "d"]):
        make_image(folders.inbox / f"{name}.png", seed=number)
    (folders.inbox / "a.yaml").write_text("seed: 1\n")  # a sidecar without a prompt
    (folders.inbox / "b.yaml").write_text("prompt: a fox runs in the snow\n")
    (folders.inbox / "c.yaml").write_text('prompt: "   "\nquality: draft\n')  # blank: as good as none
    (folders.inbox / "d.yaml").write_text("backend: preview\n")  # it ignores prompts: nothing to write

    daemon = start(folders.config, "--once")
    assert daemon.wait() == 0, daemon.log
    assert sorted(event["job"] for event in daemon.events() if event["event"] == "captioned") == ["a", "c"]

    for name in ("a", "c.draft"):
        meta = folders.metadata(name)
        assert meta["prompt_source"] == "caption", meta
        caption = meta["caption"]
        assert set(caption.replace(".", " . ").split()) <= set(CAPTION_WORDS), caption
        assert meta["prompt"] == motion_prompt(caption, DEFAULT_TEMPLATE)
        assert meta["prompt"].endswith("slow motion.") and meta["timings_s"]["caption"] > 0
    (record,) = [json.loads(path.read_text()) for path in (folders.work / ".drafts").glob("*/draft.json")]
    draft = folders.metadata("c.draft")
    assert final_sidecar(DraftRecord.model_validate(record))["prompt"] == draft["prompt"]  # kept, not redone
    sidecar = folders.metadata("b")
    assert (sidecar["prompt_source"], sidecar["prompt"]) == ("sidecar", "a fox runs in the snow")
    assert "caption" not in sidecar and "caption" not in sidecar["timings_s"]
    ignored = folders.metadata("d")
    assert (ignored["backend"], ignored["prompt_source"], ignored["prompt"]) == ("preview", "defaults", "")
    assert "caption" not in ignored
