"""`i2v-watcher doctor` on real set-ups: a good one passes with every check; each broken one gives its
own finding, with a fix, and the documented exit code (0 fine, 1 blocking problem, 2 unreadable config)."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import imageio_ffmpeg
import pytest
import torch

from conftest import REPO, Folders
from i2v_watcher.cli import main
from tiny_models import build_i2vgen_xl

CHECKS = {"config", "backend", "diffusion-extra", "gpu", "model", "ffmpeg", "presets", "folders",
          "filesystem", "scratch", "watch", "systemd"}
NEED_CONFIG = {"backend", "model", "presets", "folders", "filesystem", "scratch", "watch"}
HAS_GPU = torch.cuda.is_available()
Report = dict[str, Any]


def doctor(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, Report]:
    code = main(["doctor", "--config", str(config), "--json"])
    report: Report = json.loads(capsys.readouterr().out)
    assert report["ok"] == (not any(f["status"] == "error" for f in report["findings"]))
    for finding in report["findings"]:
        if finding["status"] in ("warning", "error"):
            assert finding["fix"], finding
    return code, report


def find(report: Report, check: str, status: str | None = None) -> list[dict[str, Any]]:
    return [f for f in report["findings"] if f["check"] == check and status in (None, f["status"])]


def errors(report: Report) -> list[dict[str, Any]]:
    return [f for f in report["findings"] if f["status"] == "error"]


def doctor_process(config: Path, *prefix: str, **env: str) -> tuple[int, Report]:
    """doctor in its own interpreter: as another user, or with another import path."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("I2V_")}
    environment.update({"PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1", **env})
    run = subprocess.run([*prefix, sys.executable, "-m", "i2v_watcher", "doctor", "--config", str(config),
                          "--json"], capture_output=True, text=True, env=environment, cwd=REPO, timeout=120)
    assert "Traceback" not in run.stderr, run.stderr
    report: Report = json.loads(run.stdout)
    return run.returncode, report


@pytest.fixture
def tmpfs() -> Iterator[Callable[[Path, str], None]]:
    """mount(path, options): a small tmpfs there (a second filesystem, or a read-only one)."""
    mounted: list[Path] = []

    def mount(path: Path, options: str) -> None:
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root (CI runs as root)")
        path.mkdir(parents=True, exist_ok=True)
        run = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size=1m,{options}", "tmpfs", str(path)],
                             capture_output=True, text=True)
        if run.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {run.stderr.strip()}")
        mounted.append(path)

    yield mount
    for path in reversed(mounted):
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_i2vgen_xl(tmp_path_factory.mktemp("models") / "i2vgen-xl")


def test_a_good_set_up_passes_every_check(folders: Folders, capsys: pytest.CaptureFixture[str]) -> None:
    config = folders.write_config(ffmpeg_path=imageio_ffmpeg.get_ffmpeg_exe())
    code, report = doctor(config, capsys)
    assert code == 0 and report["ok"], report
    assert {f["check"] for f in report["findings"]} == CHECKS
    assert not errors(report) and not find(report, "backend", "warning")
    ffmpeg = find(report, "ffmpeg", "ok")[0]
    assert ffmpeg["path"] == imageio_ffmpeg.get_ffmpeg_exe() and ffmpeg["origin"] == "ffmpeg_path setting"
    assert find(report, "watch", "ok")[0]["mode"] == "inotify"
    # The preview needs no GPU: a missing one is said, not held against the config.
    assert find(report, "gpu")[0]["status"] == ("ok" if HAS_GPU else "info")
    # doctor changes nothing: the folders it will create are not made, its probe file is gone.
    assert not folders.outbox.exists() and os.listdir(folders.inbox) == []

    assert main(["doctor", "--config", str(config)]) == 0
    text = capsys.readouterr().out
    assert text.rstrip().endswith("nothing blocks the service")
    lines = text.splitlines()
    for index, line in enumerate(lines[:-1]):
        if line.split()[0] in ("info", "warn", "ERROR"):
            assert lines[index + 1].lstrip().startswith("fix: "), line


@pytest.mark.parametrize(("change", "said"), [({"flavour": "mint"}, "flavour: unknown key"),
                                               ({"poll_interval_s": 0.01}, "poll_interval_s")])
def test_an_invalid_config_is_a_finding_and_the_rest_is_skipped(
        folders: Folders, capsys: pytest.CaptureFixture[str], change: dict[str, Any], said: str) -> None:
    config = folders.write_config(**change)
    code, report = doctor(config, capsys)
    assert code == 1
    finding = find(report, "config", "error")[0]
    assert said in finding["message"] and str(config) in finding["fix"]
    assert any(said.split(":")[0] == error["loc"] for error in finding["errors"])
    assert {f["check"] for f in report["findings"] if f["status"] == "skipped"} == NEED_CONFIG
    assert find(report, "ffmpeg", "ok") and find(report, "systemd") and find(report, "gpu")
    assert main(["doctor", "--config", str(config)]) == 1
    assert "Traceback" not in capsys.readouterr().out


def test_a_config_file_that_cannot_be_read_exits_2(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, report = doctor(tmp_path / "missing.toml", capsys)
    assert code == 2 and "not found" in find(report, "config", "error")[0]["message"]
    broken = tmp_path / "broken.toml"
    broken.write_text('inbox = "/srv/inbox\n')
    code, report = doctor(broken, capsys)
    assert code == 2 and "valid TOML" in find(report, "config", "error")[0]["fix"]


def test_a_missing_inbox_is_blocking_unless_it_may_be_created(folders: Folders,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    folders.inbox.rmdir()
    code, report = doctor(folders.config, capsys)
    assert code == 1
    [finding] = errors(report)
    assert finding["folder"] == "inbox" and "does not exist" in finding["message"]
    assert "create_inbox = true" in finding["fix"]
    code, report = doctor(folders.write_config(create_inbox=True), capsys)
    assert code == 0 and "will be created" in find(report, "folders")[0]["message"]


def test_a_folder_path_that_is_a_file(folders: Folders, capsys: pytest.CaptureFixture[str]) -> None:
    folders.outbox.write_text("not a folder")
    code, report = doctor(folders.config, capsys)
    assert code == 1
    [finding] = errors(report)
    assert finding["folder"] == "outbox" and "is not a folder" in finding["message"]
    assert "point `outbox` elsewhere" in finding["fix"]


def test_a_read_only_folder(folders: Folders, tmpfs: Callable[[Path, str], None],
                            capsys: pytest.CaptureFixture[str]) -> None:
    tmpfs(folders.outbox, "ro")  # root too cannot write there: os.access alone would not do
    code, report = doctor(folders.config, capsys)
    assert code == 1
    [finding] = errors(report)
    assert finding["folder"] == "outbox" and "Read-only file system" in finding["message"]
    assert "remount it read-write" in finding["fix"]


@pytest.fixture
def as_nobody() -> tuple[int, list[str]]:
    """nobody's uid, and the setpriv prefix that runs a command as nobody (CI runs as root)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("runs doctor as nobody through setpriv, which needs root")
    try:
        user = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("there is no user nobody")
    prefix = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", "--"]
    probe = subprocess.run([*prefix, sys.executable, "-c", "import i2v_watcher.ops.doctor"],
                           capture_output=True,
                           text=True, cwd=REPO, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    if probe.returncode != 0:
        pytest.skip(f"nobody cannot run {sys.executable} from {REPO}: {probe.stderr[-300:]}")
    return user.pw_uid, prefix


def test_a_folder_the_service_user_cannot_write(as_nobody: tuple[int, list[str]]) -> None:
    uid, prefix = as_nobody
    base = Path(tempfile.mkdtemp(prefix="i2v-doctor-", dir="/tmp"))  # tmp_path is closed to nobody
    names = ("inbox", "outbox", "failed", "done", "work", "scratch")
    try:
        base.chmod(0o755)
        for name in names:
            (base / name).mkdir()
            if name != "outbox":  # outbox stays root's (mode 755): nobody may not write there
                os.chown(base / name, uid, -1)
        config = base / "i2v.toml"
        config.write_text("\n".join(f'{name} = "{base / name}"' for name in names))
        config.chmod(0o644)
        code, report = doctor_process(config, *prefix, HOME=str(base))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    assert code == 1
    [finding] = errors(report)
    assert finding["folder"] == "outbox" and finding["uid"] == uid
    assert f"uid {uid} cannot create a file in it: Permission denied" in finding["message"]
    assert "chown" in finding["fix"]


def test_work_on_another_filesystem_than_the_inbox(folders: Folders, tmpfs: Callable[[Path, str], None],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    tmpfs(folders.work, "mode=0755")
    code, report = doctor(folders.config, capsys)
    assert code == 1
    [finding] = errors(report)
    assert finding["check"] == "filesystem" and "atomic rename" in finding["message"]
    assert "put work on the inbox's share" in finding["fix"]


def test_ffmpeg_path_that_is_not_executable(folders: Folders, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    fake = tmp_path / "ffmpeg"
    fake.write_text("not a program\n")
    code, report = doctor(folders.write_config(ffmpeg_path=str(fake)), capsys)
    assert code == 1
    [finding] = errors(report)
    assert finding["check"] == "ffmpeg" and "is not an executable file" in finding["message"]
    assert "imageio-ffmpeg" in finding["fix"]
    assert find(report, "presets")[0]["status"] == "skipped"


def test_a_preset_needs_an_encoder_this_ffmpeg_lacks(folders: Folders, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    # A real ffmpeg build without VP9: the static one, its encoder list without libvpx-vp9.
    wrapper = tmp_path / "ffmpeg-without-vp9"
    wrapper.write_text(f'#!/bin/sh\ncase " $* " in *" -encoders "*)\n'
                       f'  "{imageio_ffmpeg.get_ffmpeg_exe()}" "$@" | grep -v libvpx-vp9; exit 0;;\nesac\n'
                       f'exec "{imageio_ffmpeg.get_ffmpeg_exe()}" "$@"\n')
    wrapper.chmod(0o755)
    config = folders.write_config(ffmpeg_path=str(wrapper), presets={
        "web": {"steps": [{"step": "encode", "codec": "libvpx-vp9"}]}})
    code, report = doctor(config, capsys)
    assert code == 1
    [finding] = errors(report)
    assert finding["check"] == "presets" and finding["preset"] == "web"
    assert "ffmpeg has no 'libvpx-vp9' encoder" in finding["message"]
    assert "[presets.web]" in finding["fix"] and "ffmpeg_path" in finding["fix"]


@pytest.mark.skipif(HAS_GPU, reason="NVENC can run where there is a GPU")
def test_nvenc_that_cannot_run_here(folders: Folders, capsys: pytest.CaptureFixture[str]) -> None:
    nvenc = {"steps": [{"step": "encode", "codec": "h264_nvenc", "preset": "p4"}]}
    # imageio-ffmpeg's static build lists NVENC whether or not it can run (another ffmpeg may lack it)
    config = folders.write_config(ffmpeg_path=imageio_ffmpeg.get_ffmpeg_exe(), presets={"nv": nvenc})
    code, report = doctor(config, capsys)
    assert code == 1
    [finding] = errors(report)
    assert "the h264_nvenc encoder cannot run here" in finding["message"]
    assert "GPU and driver" in finding["fix"]


def test_the_model_of_a_diffusion_backend(folders: Folders, tiny_pipeline: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    def model(**source: str) -> tuple[int, Report]:
        return doctor(folders.write_config(backend="i2vgen-xl", diffusion={"device": "cpu"},
                                           models={"i2vgen-xl": source}), capsys)

    code, report = model(model=str(tiny_pipeline))
    assert code == 0, errors(report)
    assert find(report, "model", "ok")[0]["model"] == str(tiny_pipeline)
    assert find(report, "backend", "ok")[0]["backend"] == "i2vgen-xl"
    assert len(find(report, "diffusion-extra", "ok")) == 1  # I2VGenXLPipeline imports from this diffusers

    code, report = model(model="/nonexistent")
    assert code == 1
    [finding] = errors(report)
    assert finding["check"] == "model" and "'/nonexistent' does not exist" in finding["message"]
    assert "[models.i2vgen-xl] model" in finding["fix"]

    code, report = model(model=str(tiny_pipeline), variant="fp16")
    assert code == 1 and "no weights of the variant 'fp16'" in errors(report)[0]["message"]

    code, report = model(model="nobody-here/not-cached")  # HF_HUB_OFFLINE=1 in the tests
    assert code == 1 and "not in the Hugging Face cache" in errors(report)[0]["message"]
    assert "`hf download nobody-here/not-cached`" in errors(report)[0]["fix"]


def test_a_hub_id_without_the_diffusion_extra_says_what_to_install(
        folders: Folders, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Not "the check itself failed … report this": what is missing, and the commands that fix it."""
    for package in ("torch", "diffusers", "transformers", "huggingface_hub"):
        monkeypatch.setitem(sys.modules, package, None)  # as if not installed: find_spec None, import fails
    code, report = doctor(folders.write_config(backend="i2vgen-xl", models={"i2vgen-xl": {
        "model": "ali-vilab/i2vgen-xl"}}), capsys)
    assert code == 1
    assert not [f for f in report["findings"] if "check itself failed" in f["message"]], report
    [model] = find(report, "model", "error")
    assert "huggingface_hub (of the diffusion extra) is not installed" in model["message"]
    assert "pip install 'i2v-watcher[diffusion]'" in model["fix"]
    assert "`hf download ali-vilab/i2vgen-xl`" in model["fix"]
    [extra] = find(report, "diffusion-extra", "error")
    assert "huggingface_hub not installed" in extra["message"]


def test_a_torch_that_fails_to_import_is_a_finding_not_a_failed_check(
        folders: Folders, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Found on the path but broken (a half-finished upgrade): the gpu check says so, with the fix."""
    (tmp_path / "site" / "torch").mkdir(parents=True)
    (tmp_path / "site" / "torch" / "__init__.py").write_text("raise ImportError('torch is broken here')\n")
    monkeypatch.delitem(sys.modules, "torch")  # restored, with sys.path, when the test ends
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    code, report = doctor(folders.write_config(backend="i2vgen-xl", diffusion={"device": "cuda"}), capsys)
    assert code == 1
    assert not [f for f in report["findings"] if "check itself failed" in f["message"]], report
    [gpu] = find(report, "gpu", "error")
    assert "torch fails to import (torch is broken here)" in gpu["message"]
    assert "pip install 'i2v-watcher[diffusion]'" in gpu["fix"]


@pytest.mark.skipif(HAS_GPU, reason="needs a machine without a CUDA GPU")
def test_cuda_without_a_gpu(folders: Folders, tiny_pipeline: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    models = {"i2vgen-xl": {"model": str(tiny_pipeline)}}
    code, report = doctor(folders.write_config(backend="i2vgen-xl", models=models), capsys)
    assert code == 1
    [finding] = errors(report)
    assert finding["check"] == "gpu" and "sees no CUDA GPU" in finding["message"]
    assert 'device = "cpu"' in finding["fix"]
    # backend = auto falls back to the preview: said loudly, but nothing blocks the service.
    code, report = doctor(folders.write_config(backend="auto"), capsys)
    assert code == 0, errors(report)
    assert find(report, "gpu", "warning")
    fallback = find(report, "backend", "warning")[0]
    assert "FALL BACK to the preview" in fallback["message"] and fallback["wanted"] == "i2vgen-xl"


def test_the_diffusion_extra_missing_and_systemd_python_missing_under_systemd(
        folders: Folders, tiny_pipeline: Path, tmp_path: Path) -> None:
    # Installed but broken, as a half-finished upgrade leaves them: found on the path, failing on import.
    fake = tmp_path / "site"
    for package in ("diffusers", "systemd"):
        (fake / package).mkdir(parents=True)
        (fake / package / "__init__.py").write_text(f"raise ImportError('{package} is broken here')\n")
    config = folders.write_config(backend="i2vgen-xl", diffusion={"device": "cpu"},
                                  models={"i2vgen-xl": {"model": str(tiny_pipeline)}})
    code, report = doctor_process(config, PYTHONPATH=f"{fake}{os.pathsep}{REPO}",
                                  NOTIFY_SOCKET="/run/systemd/notify")
    assert code == 1
    [finding] = errors(report)
    assert finding["check"] == "diffusion-extra" and "diffusers is broken here" in finding["message"]
    assert "needed by i2vgen-xl" in finding["message"]
    assert "pip install 'i2v-watcher[diffusion]'" in finding["fix"]
    systemd = find(report, "systemd", "warning")[0]
    assert systemd["under_systemd"] and "NOTIFY_SOCKET" in systemd["message"]
    assert "i2v-watcher[systemd]" in systemd["fix"]


def test_under_systemd_with_systemd_python(folders: Folders, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    with contextlib.suppress(ImportError):
        import systemd.daemon  # noqa: F401
    if "systemd.daemon" not in sys.modules:
        pytest.skip("systemd-python is not installed here")
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    code, report = doctor(folders.config, capsys)
    assert code == 0
    [finding] = find(report, "systemd")
    assert finding["status"] == "ok" and finding["under_systemd"] is True
