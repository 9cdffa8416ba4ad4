"""submit, status and retry against a hostile shared folder and against each other: edited reports,
planted links, unreadable files, and parallel submits of one name. No daemon runs here."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO, Folders, cli, daemon_env, make_image
from i2v_watcher.config.settings import Settings, load_settings
from i2v_watcher.fs.atomic import move
from i2v_watcher.inbox import drop as drop_module
from i2v_watcher.ops import reports as reports_module
from i2v_watcher.ops import retry as retry_module
from i2v_watcher.ops.retry import RetryRefused, retry
from i2v_watcher.ops.status import collect
from i2v_watcher.ops.submit import submit


def failed_job(folders: Folders, rel: str = "", stem: str = "x", **report: Any) -> Path:
    """A failed job as fail() leaves it: image, sidecar and report in failed/<rel>/; `report` edits it."""
    folder = folders.failed / rel
    make_image(folder / f"{stem}.png")
    (folder / f"{stem}.yaml").write_text("num_frames: 4\n")
    data = {"job_id": "20260101T000000Z-abcdef01", "input": f"{rel}/{stem}" if rel else stem,
            "files": [f"{stem}.yaml", f"{stem}.png"], "stage": "load", "message": "not an image", **report}
    path = folder / f"{stem}.error.json"
    path.write_text(json.dumps(data))
    return path


def everything(root: Path) -> list[str]:
    """Every entry below root, hidden ones included, links not followed."""
    found = []
    for folder, dirs, files in os.walk(root):
        found += [str(Path(folder, name).relative_to(root)) for name in dirs + files]
    return sorted(found)


def retry_cli(folders: Folders, *args: str) -> subprocess.CompletedProcess[str]:
    return cli("retry", *args, "--config", str(folders.config))


def settings_of(folders: Folders) -> Settings:
    return load_settings(folders.config)


# retry: an edited report is refused, never obeyed


def test_retry_refuses_tampered_reports_and_still_retries_the_good_one(folders: Folders,
                                                                        tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = tmp_path / "etc" / "passwd"
    victim.parent.mkdir()
    victim.write_text("root:x:0:0\n")
    bad = [
        failed_job(folders, "abs", input=str(outside / "x")),
        failed_job(folders, "", input="../../escaped/x"),
        # Relative to failed/ these name tmp_path/etc/passwd, like ../../../etc/passwd on a real share.
        failed_job(folders, "rel", files=["x.yaml", "../../../etc/passwd"]),
        failed_job(folders, "absfile", files=["x.yaml", str(victim)]),
    ]
    good = failed_job(folders, "fine", stem="ok")
    result = retry_cli(folders, "--all")
    assert result.returncode == 2, result.stderr
    assert result.stdout.split() == [str(folders.inbox / "fine" / "ok.yaml"),
                                     str(folders.inbox / "fine" / "ok.png")]
    assert result.stderr.count("refused") == len(bad)
    assert "absolute path" in result.stderr and "'../../escaped/x'" in result.stderr
    assert all(report.exists() and (report.parent / "x.png").exists() for report in bad)
    assert not good.exists()
    assert everything(folders.inbox) == ["fine", "fine/ok.png", "fine/ok.yaml"]
    assert everything(outside) == [] and not (tmp_path / "escaped").exists()
    assert victim.read_text() == "root:x:0:0\n" and everything(victim.parent) == ["passwd"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "etc", "i2v.toml", "outside"]


def test_retry_never_writes_through_a_linked_inbox_folder(folders: Folders, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (folders.inbox / "sub").symlink_to(elsewhere)
    report = failed_job(folders, "sub")
    result = retry_cli(folders, "x")
    assert result.returncode == 2
    assert "refused" in result.stderr and "symbolic link" in result.stderr
    assert everything(elsewhere) == []
    assert report.exists() and everything(folders.failed) == ["sub", "sub/x.error.json", "sub/x.png",
                                                               "sub/x.yaml"]


@pytest.mark.parametrize("edit", [
    {"input": "/abs/x"}, {"input": "../../escaped/x"}, {"input": "a/../x"}, {"input": "a//x"},
    {"input": "a/"}, {"input": ".hidden"}, {"input": "a/.x"}, {"input": "x\x00y"}, {"input": "x\ny"},
    {"input": ""}, {"input": 42}, {"input": None},
    {"files": ["../x.png"]}, {"files": ["/etc/passwd"]}, {"files": ["."]}, {"files": [".."]},
    {"files": ["x\x00.png"]}, {"files": ["sub/x.png"]}, {"files": []}, {"files": "x.png"}, {"files": [42]},
    {"files": ["x.yaml", "other.png"]}, {"files": ["x.png", "x.error.json"]}, {"files": ["x.missing"]},
    {"files": ["x.dir"]},
])
def test_retry_checks_every_field_it_reads(folders: Folders, edit: dict[str, Any]) -> None:
    report = failed_job(folders, **edit)
    make_image(folders.failed / "other.png")  # another job's file, in the same folder
    (folders.failed / "x.dir").mkdir()
    before = everything(folders.failed)
    with pytest.raises(RetryRefused):
        retry(settings_of(folders), report)
    assert everything(folders.failed) == before and everything(folders.inbox) == []


def test_retry_ignores_the_folder_the_report_claims(folders: Folders) -> None:
    report = failed_job(folders, "trip", input="somewhere/else/x")
    moved = retry(settings_of(folders), report)
    assert moved == [folders.inbox / "trip" / "x.yaml", folders.inbox / "trip" / "x.png"]
    assert everything(folders.inbox) == ["trip", "trip/x.png", "trip/x.yaml"]


def test_retry_takes_a_free_name_and_leaves_no_marker(folders: Folders) -> None:
    make_image(folders.inbox / "x.jpg")  # another job of that name, with another image suffix
    report = failed_job(folders)
    result = retry_cli(folders, "x")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(folders.inbox / "x-1.yaml"), str(folders.inbox / "x-1.png")]
    assert everything(folders.inbox) == ["x-1.png", "x-1.yaml", "x.jpg"]  # no reservation, no .part
    assert not report.exists()


def test_retry_puts_everything_back_when_a_move_fails(folders: Folders,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    report = failed_job(folders)
    def failing_move(source: Path, final: Path, **kwargs: Any) -> None:
        if final.suffix == ".png":
            raise OSError(errno.EIO, "I/O error", str(final))
        move(source, final, **kwargs)

    monkeypatch.setattr(retry_module, "move", failing_move)
    with pytest.raises(OSError):
        retry(settings_of(folders), report)
    assert everything(folders.inbox) == []
    assert everything(folders.failed) == ["x.error.json", "x.png", "x.yaml"]


def test_retry_refuses_a_linked_report(folders: Folders, tmp_path: Path) -> None:
    real = failed_job(folders, "real", stem="y")
    (folders.failed / "x.error.json").symlink_to(real)
    make_image(folders.failed / "x.png")
    result = retry_cli(folders, "x")
    assert result.returncode == 2 and "symbolic link" in result.stderr
    assert everything(folders.inbox) == []
    assert (folders.failed / "x.error.json").is_symlink() and real.exists()


def test_retry_all_with_nothing_to_retry(folders: Folders) -> None:
    folders.failed.mkdir()
    result = retry_cli(folders, "--all")
    assert result.returncode == 0 and "nothing to retry" in result.stderr


# status: whatever is in the shared folders, it reports and never follows a link


def test_status_shows_bad_state_files_and_reports_as_unreadable(folders: Folders, tmp_path: Path) -> None:
    worker = folders.work / "testhost"
    (worker / "20260101T000000Z-00000001").mkdir(parents=True)
    (worker / "20260101T000000Z-00000001" / "job.json").write_text("{not json")
    planted = tmp_path / "planted"
    planted.mkdir()
    (planted / "job.json").write_text(json.dumps({"job_id": "j", "key": "secret", "worker_id": "w",
                                                  "stage": "claimed"}))
    (worker / "20260101T000000Z-00000002").mkdir()
    (worker / "20260101T000000Z-00000002" / "job.json").symlink_to(planted / "job.json")
    (folders.work / "linked-worker").symlink_to(tmp_path)  # a whole worker folder planted as a link
    (worker / "20260101T000000Z-00000003").mkdir()
    (worker / "20260101T000000Z-00000003" / "job.json").write_text(json.dumps({"job_id": 1}))
    failed_job(folders, stem="good")
    failed_job(folders, stem="notjson").write_text("[1, 2")
    failed_job(folders, stem="huge").write_bytes(b" " * (reports_module.MAX_REPORT_BYTES + 1) + b"{}")
    failed_job(folders, stem="linked").unlink()
    (folders.failed / "linked.error.json").symlink_to(folders.failed / "good.error.json")
    result = cli("status", "--json", "--config", str(folders.config), check=True)
    data = json.loads(result.stdout)
    jobs = data["in_progress"]
    assert [j["stage"] for j in jobs] == ["unreadable"] * 3 and "secret" not in result.stdout
    assert "symbolic link" in jobs[1]["error"]
    failed = {f["name"]: f for f in data["failed"]}
    assert failed["good"]["stage"] == "load"
    assert {name: failed[name]["stage"] for name in ("notjson", "huge", "linked")} == \
        dict.fromkeys(("notjson", "huge", "linked"), "unreadable")
    assert "symbolic link" in failed["linked"]["message"]
    text = cli("status", "--config", str(folders.config), check=True).stdout
    assert "testhost/20260101T000000Z-00000001  (unreadable: not valid JSON" in text
    assert "linked  [unreadable]" in text


def test_status_skips_a_folder_it_cannot_read(folders: Folders, monkeypatch: pytest.MonkeyPatch) -> None:
    make_image(folders.inbox / "top.png")
    make_image(folders.inbox / "locked" / "hidden.png")
    make_image(folders.inbox / "open" / "seen.png")
    real_scandir = os.scandir

    def scandir(path: Any) -> Any:  # root can read anything: refuse like a mode-000 folder would
        if Path(path).name == "locked":
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    result = collect(settings_of(folders))
    assert result["queued"] == ["open/seen.png", "top.png"]
    assert any("locked" in w and "Permission denied" in w for w in result["warnings"])


def test_status_warns_about_missing_folders(folders: Folders, tmp_path: Path) -> None:
    folders.write_config(inbox=str(tmp_path / "not-mounted"))
    folders.outbox.mkdir()  # one folder there: the others are warnings (none there: an error, exit 2)
    result = cli("status", "--config", str(folders.config))
    assert result.returncode == 0
    assert "warning: the inbox folder" in result.stderr and "not-mounted" in result.stderr
    assert "warning: the failed folder" in result.stderr


def test_status_escapes_control_characters_in_names(folders: Folders) -> None:
    failed_job(folders, stem="x", message="\x1b[2Jgone")
    text = cli("status", "--config", str(folders.config), check=True).stdout
    assert "\x1b" not in text and "\\x1b[2Jgone" in text


def test_status_escapes_bidi_overrides_in_names_and_messages(folders: Folders) -> None:
    """A U+202E in a job's name makes `gnp.exe` read as `exe.png` on a terminal: shown escaped."""
    failed_job(folders, stem="gnp\u202eexe", message="bad \u2066input\u2069 \u200e")
    text = cli("status", "--config", str(folders.config), check=True).stdout
    assert not any(char in text for char in "\u202e\u2066\u2069\u200e")
    assert "gnp\\u202eexe" in text and "bad \\u2066input\\u2069 \\u200e" in text


# submit: validated whole before anything is written; parallel submits never collide


def test_parallel_submits_of_one_name_get_distinct_names(folders: Folders, tmp_path: Path) -> None:
    image = make_image(tmp_path / "photo.png")
    procs = {i: subprocess.Popen(
        [sys.executable, "-m", "i2v_watcher", "submit", "--config", str(folders.config), str(image),
         "--name", "img", "--set", f"num_frames={i}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=daemon_env(), cwd=REPO)
        for i in range(1, 9)}
    printed = {}
    for i, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        printed[Path(out.strip())] = i
    assert len(printed) == 8
    names = os.listdir(folders.inbox)
    assert not [n for n in names if n.startswith(".")]  # no .part temporaries, no reservations
    assert len(names) == 16
    for path, i in printed.items():
        assert path.parent == folders.inbox and path.exists()
        sidecar = path.with_suffix(".yaml")
        assert sidecar.read_text() == f"num_frames: {i}\n"


@pytest.mark.parametrize("setting, message", [
    ("postprocess=no-such-preset", "unknown post-processing preset"),
    ("postprocess_overrides={encode: {preset: ultrafast}}", "encode.preset cannot be overridden"),
    # With routing another worker may have svd loaded (test_submit_routing.py): a name no registry knows
    # is what the daemon refuses at once.
    ("backend=svdd", "there is no backend 'svdd', did you mean svd?"),
])
def test_submit_refuses_what_the_daemon_would_refuse(folders: Folders, tmp_path: Path, setting: str,
                                                     message: str) -> None:
    image = make_image(tmp_path / "a.png")
    result = cli("submit", str(image), "--set", setting, "--config", str(folders.config))
    assert result.returncode == 2 and message in result.stderr
    assert everything(folders.inbox) == []


def test_submit_leaves_nothing_when_the_image_cannot_be_written(folders: Folders, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    image = make_image(tmp_path / "a.png")

    def full_disk(source: Path, final: Path, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(final))

    monkeypatch.setattr(drop_module, "copy_atomic", full_disk)
    with pytest.raises(OSError):
        submit(settings_of(folders), image, {"num_frames": 4})
    assert everything(folders.inbox) == []
