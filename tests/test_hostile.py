"""Untrusted input: each bad or hostile drop ends in failed/ with a report; good jobs beside it succeed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from conftest import Daemon, Folders, decode, make_image

Start = Callable[..., Daemon]

ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
    for i in range(8)) + "prompt: boom\n"

# name → (files to drop, the stage and a phrase the report must hold)
BAD: dict[str, tuple[dict[str, bytes | None], str, str]] = {
    "corrupt": ({"corrupt.png": b"\x00garbage" * 50}, "load", "not a readable"),
    "empty": ({"empty.jpg": b""}, "load", "empty (0 bytes)"),
    "truncated": ({"truncated.png": None}, "load", "damaged or truncated"),
    "badkey": ({"badkey.png": None, "badkey.yaml": b"prompt: x\ncolour: red\n"}, "sidecar",
               "colour: unknown key"),
    "range": ({"range.png": None, "range.yaml": b"num_frames: 100000\n"}, "sidecar", "num_frames"),
    "bomb": ({"bomb.png": None, "bomb.yaml": ALIAS_BOMB.encode()}, "sidecar", "aliases"),
    "tag": ({"tag.png": None, "tag.yaml": b"prompt: !!python/object/apply:os.system ['touch PWNED']\n"},
            "sidecar", "not valid YAML"),
    "huge": ({"huge.png": None, "huge.yaml": b"prompt: " + b"y" * 70000 + b"\n"}, "sidecar",
             "larger than"),
    "escape": ({"escape.png": None, "escape.yaml": b"output_name: ../../outside\n"}, "sidecar",
               "output_name"),
    "absolute": ({"absolute.png": None, "absolute.yaml": b"output_name: /etc/cron.d/x\n"}, "sidecar",
                 "output_name"),
    "pixels": ({"pixels.png": None}, "load", "over the limit"),
    "otherbackend": ({"otherbackend.png": None, "otherbackend.yaml": b"backend: svd\n"}, "sidecar",
                     "not loaded"),
    "preset": ({"preset.png": None, "preset.yaml": b"postprocess: vertical\n"}, "sidecar",
               "unknown post-processing preset"),
    "notes.txt": ({"notes.txt": b"hello"}, "watch", "unsupported file type"),
    "twins": ({"twins.png": None, "twins.jpg": None}, "watch", "share the job name"),
    "lonely": ({"lonely.yaml": b"prompt: where is my image\n"}, "watch", "without an image"),
}
GOOD = ["-rf my photo ✨", "space name", "ünïcødé 写真"]


def test_bad_and_hostile_drops_fail_with_reports_while_good_jobs_succeed(
        folders: Folders, start: Start, tmp_path: Path) -> None:
    folders.write_config(max_image_pixels=200_000)
    for _, (files, _, _) in BAD.items():
        for name, content in files.items():
            path = folders.inbox / name
            if content is None and name.startswith("pixels"):
                make_image(path, (600, 400))  # 240 000 pixels, over the configured limit
            elif content is None:
                make_image(path, fmt="JPEG" if name.endswith(".jpg") else None)
                if name.startswith("truncated"):
                    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
            else:
                path.write_bytes(content.replace(b"PWNED", str(tmp_path / "pwned").encode()))
    secret = tmp_path / "secret.png"
    make_image(secret)
    secret_bytes = secret.read_bytes()
    (folders.inbox / "link.png").symlink_to(secret)  # a symlink pointing out of the inbox
    (folders.inbox / "link.yaml").write_text("prompt: follow me\n")
    for name in GOOD:
        make_image(folders.inbox / f"{name}.png")

    daemon = start(folders.config, "--once")
    assert daemon.wait() == 3, daemon.log

    for name in GOOD:
        assert decode(folders.outbox / f"{name}.mp4").frames == 6
        assert folders.metadata(name)["input"]["image"] == f"{name}.png"
    for name, (files, stage, phrase) in BAD.items():
        report = folders.report(name)
        assert report["stage"] == stage, (name, report)
        assert phrase in report["message"], (name, report["message"])
        assert sorted(report["files"]) == sorted(files), name
        for file in files:
            assert (folders.failed / file).exists(), (name, file)
        assert report["traceback"] and report["job_id"] and report["error_class"]
    link = folders.report("link")
    assert "symbolic links" in link["message"]
    assert (folders.failed / "link.png").is_symlink() and (folders.failed / "link.yaml").exists()
    assert secret.read_bytes() == secret_bytes  # the target was neither read into a job nor moved
    assert folders.files("inbox") == [] and folders.files("work") == []
    assert not any(p.name.startswith(".") for p in folders.outbox.rglob("*"))
    assert not (tmp_path / "pwned").exists()  # the YAML tag was refused, never executed


def test_litter_never_becomes_a_report(folders: Folders, start: Start) -> None:
    for name in [".DS_Store", "._a.png", "Thumbs.db", "desktop.ini", "@eaDir/a.png/SYNOPHOTO_THUMB_M.jpg",
                 ".a.png.tmp123", "a.png.part", "~$draft.png", "sub/.DS_Store"]:
        path = folders.inbox / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"litter")
    make_image(folders.inbox / "a.png")
    daemon = start(folders.config, "--once", I2V_LOG_LEVEL="debug")
    assert daemon.wait() == 0
    assert folders.files("failed") == [] and (folders.outbox / "a.json").exists()
    ignored = {e["file"] for e in daemon.events() if e["event"] == "ignored"}
    assert {".DS_Store", "Thumbs.db", "@eaDir", "a.png.part"} <= ignored
