"""Work that explodes after the checks: a job whose presets would make far more of its frames than it
generates (2 frames at fps 0.01 are a 200 s clip, which the vertical preset makes 6,000 frames of
1080x1920) is refused before generation by the real daemon, with a report that names the bound, and the
job queued behind it is published as usual."""

from __future__ import annotations

from conftest import Folders, make_image

from .conftest import Spawn


def test_a_job_over_the_cost_bounds_fails_before_generation_and_the_next_one_publishes(
        folders: Folders, spawn: Spawn) -> None:
    make_image(folders.inbox / "explodes.png", seed=1)
    # Higher priority: taken first, so the normal job waits behind it in the queue.
    (folders.inbox / "explodes.yaml").write_text(
        "fps: 0.01\nnum_frames: 2\npostprocess: vertical-1080x1920\npriority: 5\n")
    make_image(folders.inbox / "normal.png", seed=2)
    daemon = spawn(folders.config, "--once")
    assert daemon.wait(timeout=120) == 3, daemon.log  # --once: a job failed

    report = folders.report("explodes")
    assert report["stage"] == "sidecar", report
    assert "preset 'vertical-1080x1920' would output 6,000 frames, over max_output_frames (3,600)" \
        in report["message"], report
    assert "fps at least" in report["hint"] and "num_frames at most" in report["hint"], report
    assert sorted(folders.files("failed")) == ["explodes.error.json", "explodes.png", "explodes.yaml"]
    events = daemon.events()
    # Nothing was generated or encoded for it: refused while it was being prepared.
    assert not [e for e in events if e.get("job") == "explodes"
                and e["event"] in ("progress", "generated", "encoding", "encoded")], daemon.log
    order = [(e["event"], e.get("job")) for e in events]
    # Handled first, and at once; then the job behind it generates and publishes.
    assert order.index(("failed", "explodes")) < order.index(("generated", "normal")), daemon.log
    assert ("published", "normal") in order and (folders.outbox / "normal.mp4").is_file()
    assert folders.metadata("normal")["postprocess"]["presets"] == ["archive"]
    assert folders.files("inbox") == [] and folders.files("work") == []


def test_an_encode_past_max_encode_s_is_stopped_and_the_job_fails_with_a_plain_report(
        folders: Folders, spawn: Spawn) -> None:
    # Motion-interpolated to 60 fps and encoded `slow`: seconds of work, against a limit of 0.3 s.
    folders.write_config(max_encode_s=0.3, presets={"smooth": {"steps": [
        {"step": "interpolate", "fps": 60}, {"step": "encode", "preset": "slow"}]}})
    make_image(folders.inbox / "long.png", size=(256, 256), seed=3)
    (folders.inbox / "long.yaml").write_text("postprocess: smooth\nnum_frames: 32\nresolution: 256p\n")
    daemon = spawn(folders.config, "--once")
    assert daemon.wait(timeout=120) == 3, daemon.log  # --once: a job failed

    report = folders.report("long")
    assert report["stage"] == "postprocess", report
    assert report["message"] == ("the encode took longer than its limit of 0.3 s (max_encode_s) and was "
                                 "stopped")
    assert "max_encode_s" in report["hint"]
    events = daemon.events()
    assert [e["event"] for e in events if e.get("job") == "long" and e["event"] in ("generated", "encoded")] \
        == ["generated"], daemon.log  # generated, never encoded, and not tried again
    assert folders.files("outbox") == [] and folders.files("work") == []
