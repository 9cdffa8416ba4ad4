"""`submit` and the web form on a share with routing: a job may name any registered backend with a model
(another worker may have loaded it), checked with that backend's class; a name no registry knows is
still refused with a did-you-mean; and when no live worker offers the backend (their heartbeats) the
job is accepted with a warning that it waits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from test_liveness import settings_for, write_beat
from web.conftest import TOKEN

from conftest import Folders, cli, make_image
from i2v_watcher.errors import StartupError
from i2v_watcher.ops.submit import check_submission, submit
from i2v_watcher.web.app import create_app
from i2v_watcher.web.forms import backends_offered


def test_submit_takes_a_backend_this_config_does_not_load_and_warns_that_it_waits(
        folders: Folders, tmp_path: Path) -> None:
    """The real command: the config loads only the preview; wan-i2v is accepted, with a warning."""
    image = make_image(tmp_path / "fox.png")
    result = cli("submit", str(image), "--prompt", "a fox", "--set", "backend=wan-i2v",
                 "--set", "backend_options={guidance_scale_2: 3.0}", "--config", str(folders.config))
    assert result.returncode == 0, result.stderr
    assert (folders.inbox / "fox.png").is_file()
    assert "backend: wan-i2v" in (folders.inbox / "fox.yaml").read_text()
    assert ("i2v-watcher: warning: no live worker offers the backend 'wan-i2v' (no worker is live now): the "
            "job waits in the inbox for one that loads it, and fails after unroutable_timeout_s (86400 s)"
            ) in result.stderr


def test_the_backend_class_checks_its_fields_and_a_typo_is_still_refused(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)  # backend: preview
    with pytest.raises(StartupError) as typo:
        check_submission(settings, {"backend": "wan-iv"})
    assert "there is no backend 'wan-iv', did you mean wan-i2v?" in str(typo.value)
    assert "hint: registered backends: cogvideox-i2v, " in str(typo.value)
    with pytest.raises(StartupError) as option:  # the class's own backend_options model
        check_submission(settings, {"backend": "ltx-video", "backend_options": {"upsampel": True}})
    assert "backend_options.upsampel: unknown key, did you mean upsample?" in str(option.value)


def test_no_warning_where_a_live_worker_offers_the_backend(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    write_beat(settings.work / "h100", backends=["wan-i2v", "their-plugin"])
    write_beat(settings.work / "gone", age_s=1e6, backends=["ltx-video"])  # stale: offers nothing
    warnings: list[str] = []
    for name, backend in (("a", "wan-i2v"), ("b", "ltx-video"), ("c", None), ("d", "their-plugin")):
        sidecar = {"prompt": "a fox", **({"backend": backend} if backend else {})}
        submit(settings, make_image(tmp_path / f"{name}.png"), sidecar, warn=warnings.append)
    assert warnings == ["no live worker offers the backend 'ltx-video' (live workers offer: their-plugin, "
                        "wan-i2v): the job waits in the inbox for one that loads it, and fails after "
                        "unroutable_timeout_s (86400 s)"]  # only b: c names none (any worker takes it)
    # d: a plugin's backend that this machine has not imported, offered by a live worker: taken unchecked
    assert "backend: their-plugin" in (settings.inbox / "d.yaml").read_text()


def test_the_web_form_offers_and_takes_any_backend_with_a_model_and_passes_the_warning_on(
        tmp_path: Path) -> None:
    settings = settings_for(tmp_path, web_allow_submit=True, web_token=TOKEN)
    web = TestClient(create_app(settings), base_url="http://127.0.0.1:8080")
    assert {"hunyuan-i2v", "wan-i2v", "preview"} <= set(backends_offered(settings))  # the form's list
    image = make_image(tmp_path / "fox.png").read_bytes()
    headers: dict[str, Any] = {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"}
    taken = web.post("/submit", data={"prompt": "a fox", "backend": "hunyuan-i2v"},
                     files={"image": ("fox.png", image, "image/png")}, headers=headers)
    assert taken.status_code == 201, taken.text
    assert taken.json()["warnings"] == [
        "no live worker offers the backend 'hunyuan-i2v' (no worker is live now): the job waits in the inbox "
        "for one that loads it, and fails after unroutable_timeout_s (86400 s)"]
    follow = web.get(taken.json()["follow"], headers={"Authorization": f"Bearer {TOKEN}"}).text
    assert 'id="follow-warning"' in follow
    assert "no live worker offers the backend &#39;hunyuan-i2v&#39;" in follow
    refused = web.post("/submit", data={"prompt": "a fox", "backend": "hunyan-i2v"},
                       files={"image": ("fox.png", image, "image/png")}, headers=headers)
    assert refused.status_code == 400
    assert "there is no backend 'hunyan-i2v', did you mean hunyuan-i2v?" in refused.json()["error"]
