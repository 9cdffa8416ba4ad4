"""Many workers on one inbox: a sidecar's `priority` orders the queue, and the outbox is given the
team's group and permission bits (output_group, output_mode)."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import Daemon, Folders, cli, make_image
from i2v_watcher.config.settings import load_settings
from i2v_watcher.errors import JobError, StartupError
from i2v_watcher.fs.atomic import copy_atomic, safe_subdir, write_json_atomic
from i2v_watcher.fs.perms import folder_mode, output_perms, parse_mode, resolve_group
from i2v_watcher.inbox.watch import Inbox
from i2v_watcher.job import spec
from i2v_watcher.job.spec import JobDefaults, parse_sidecar, resolve

Start = Callable[..., Daemon]
# As root the test gives the files another group; otherwise its own (chown to it needs no privilege).
TEAM_GID = 65534 if os.geteuid() == 0 else os.getegid()


def drop(folders: Folders, name: str, sidecar: str, age_s: float) -> None:
    image = make_image(folders.inbox / f"{name}.png", (64, 48))
    side = folders.inbox / f"{name}.yaml"
    side.write_text(sidecar)
    when = time.time() - age_s
    for path in (image, side):
        os.utime(path, (when, when))


# ---------------------------------------------------------------------------------------------
# Priority
# ---------------------------------------------------------------------------------------------

def test_priority_goes_first_then_the_oldest(folders: Folders, start: Start) -> None:
    drop(folders, "old", "num_frames: 2\n", age_s=300)  # no priority: normal (0)
    drop(folders, "middle", "num_frames: 2\npriority: 0\n", age_s=200)
    drop(folders, "urgent", "num_frames: 2\npriority: 10\n", age_s=10)
    drop(folders, "later", "num_frames: 2\npriority: -5\n", age_s=400)  # the oldest, but pushed back
    drop(folders, "broken", "priority: [not, a, number]\n", age_s=100)  # counts as 0; fails when run

    daemon = start(folders.config, "--once")
    assert daemon.wait() == 3, daemon.log  # the broken one fails

    published = [e["job"] for e in daemon.events() if e.get("event") == "published"]
    assert published == ["urgent", "old", "middle", "later"], daemon.log
    times = [folders.metadata(name)["published_at"] for name in published]
    assert times == sorted(times)
    report = folders.report("broken")
    assert report["stage"] == "sidecar" and "priority" in report["message"]

    urgent = folders.metadata("urgent")
    assert urgent["parameters"]["priority"] == 10 and urgent["requested"]["priority"] == 10
    assert urgent["notes"] == []  # every backend accepts it: nothing ignored, nothing refused
    assert folders.metadata("old")["parameters"]["priority"] == 0


@pytest.mark.parametrize("text", ["priority: 101\n", "priority: -101\n", "priority: '5'\n",
                                  "priority: 5.0\n", "priority: true\n"])
def test_priority_is_a_strict_bounded_integer(text: str) -> None:
    with pytest.raises(JobError, match="priority"):
        parse_sidecar(text.encode(), max_bytes=65536)


def test_priority_is_recorded_in_the_parameters() -> None:
    spec = parse_sidecar(b"priority: -100\n", max_bytes=65536)
    params = resolve(spec, JobDefaults(), backend="preview", seed=1)
    assert params.priority == -100 and "priority" in params.explicit
    assert resolve(parse_sidecar(b"", max_bytes=65536), JobDefaults(), backend="preview",
                   seed=1).priority == 0


def test_submit_accepts_a_priority(folders: Folders, tmp_path: Path) -> None:
    image = make_image(tmp_path / "rush.png", (64, 48))
    cli("submit", "--config", str(folders.config), str(image), "--set", "priority=7", check=True)
    assert (folders.inbox / "rush.yaml").read_text().strip() == "priority: 7"
    refused = cli("submit", "--config", str(folders.config), str(image), "--set", "priority=500")
    assert refused.returncode == 2 and "priority" in refused.stderr


def test_the_scan_parses_each_sidecar_once_per_version(folders: Folders,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    folders.write_config(settle_s=0.0)
    settings = load_settings(folders.config)
    drop(folders, "a", "priority: 1\n", age_s=50)
    drop(folders, "b", "priority: 2\n", age_s=40)
    make_image(folders.inbox / "c.png", (64, 48))  # no sidecar (past its grace below): priority 0
    (folders.inbox / "c.png").touch()
    calls: list[int] = []

    def counting(data: bytes, *, max_bytes: int) -> Any:
        calls.append(len(data))
        return parse_sidecar(data, max_bytes=max_bytes)

    monkeypatch.setattr(spec, "parse_sidecar", counting)  # what read_sidecar parses with
    inbox = Inbox(settings)
    inbox.scan()  # c waits for its sidecar's grace
    time.sleep(settings.sidecar_grace_s + 0.1)
    for _ in range(3):
        assert [(c.key, c.priority) for c in inbox.scan().ready] == [("b", 2), ("a", 1), ("c", 0)]
    assert len(calls) == 2

    side = folders.inbox / "a.yaml"
    side.write_text("priority: 3  # changed\n")  # a new size and mtime: read again
    assert [c.key for c in inbox.scan().ready] == ["a", "b", "c"]
    assert len(calls) == 3

    big = folders.inbox / "b.yaml"
    big.write_bytes(b"priority: 9\n" + b"#" * settings.max_sidecar_bytes)  # over the cap: 0
    assert [c.key for c in inbox.scan().ready] == ["a", "b", "c"]
    assert [c.priority for c in inbox.scan().ready] == [3, 0, 0]


# ---------------------------------------------------------------------------------------------
# Output group and mode
# ---------------------------------------------------------------------------------------------

def test_published_files_and_folders_get_the_team_group_and_mode(folders: Folders, start: Start) -> None:
    folders.write_config(output_group=str(TEAM_GID), output_mode="0640", keep_inputs="outbox")
    make_image(folders.inbox / "team" / "shots" / "a.png", (64, 48))
    (folders.inbox / "team" / "shots" / "a.yaml").write_text("num_frames: 2\n")
    outbox_mode = stat.S_IMODE(folders.outbox.stat().st_mode) if folders.outbox.exists() else None

    daemon = start(folders.config, "--once")
    assert daemon.wait() == 0, daemon.log

    names = folders.metadata("team/shots/a")["files"]
    assert names == ["team/shots/a.mp4", "team/shots/a.jpg", "team/shots/a.source.png",
                     "team/shots/a.source.yaml", "team/shots/a.json"]
    for name in names:
        st = (folders.outbox / name).stat()
        assert (st.st_gid, stat.S_IMODE(st.st_mode)) == (TEAM_GID, 0o640), name
    for folder in (folders.outbox / "team", folders.outbox / "team" / "shots"):
        st = folder.stat()
        assert (st.st_gid, stat.S_IMODE(st.st_mode)) == (TEAM_GID, 0o750), folder
    assert [p.name for p in (folders.outbox / "team" / "shots").iterdir() if p.name.startswith(".")] == []
    if outbox_mode is not None:
        assert stat.S_IMODE(folders.outbox.stat().st_mode) == outbox_mode  # not one it made


def test_atomic_writers_set_mode_and_group_before_the_name_appears(tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(b"x" * 1000)
    copy_atomic(source, tmp_path / "copy.bin", mode=0o604, gid=TEAM_GID)
    write_json_atomic(tmp_path / "meta.json", {"a": 1}, mode=0o664, gid=TEAM_GID, replace=False)
    copy_atomic(source, tmp_path / "plain.bin")
    modes = {p.name: (stat.S_IMODE(p.stat().st_mode), p.stat().st_gid) for p in tmp_path.iterdir()}
    assert modes["copy.bin"] == (0o604, TEAM_GID) and modes["meta.json"] == (0o664, TEAM_GID)
    assert modes["plain.bin"][0] == 0o666 & ~_umask()


def test_safe_subdir_sets_mode_and_group_only_on_folders_it_creates(tmp_path: Path) -> None:
    (tmp_path / "there").mkdir(mode=0o700)
    os.chmod(tmp_path / "there", 0o700)
    folder = safe_subdir(tmp_path, "there/new/deeper", mode=0o2750, gid=TEAM_GID)
    assert folder == tmp_path / "there" / "new" / "deeper"
    assert stat.S_IMODE((tmp_path / "there").stat().st_mode) == 0o700
    for made in (folder.parent, folder):
        assert (stat.S_IMODE(made.stat().st_mode), made.stat().st_gid) == (0o2750, TEAM_GID)


def test_modes_and_groups_are_parsed() -> None:
    assert parse_mode("0640") == parse_mode("640") == 0o640
    assert folder_mode(0o644) == 0o755 and folder_mode(0o640) == 0o750 and folder_mode(0o600) == 0o700
    assert resolve_group("2000") == 2000
    perms = output_perms(None, "0644")
    assert (perms.file_mode, perms.folder_mode, perms.gid) == (0o644, 0o755, None)
    root_group = Path("/etc/group").read_text().splitlines()[0].split(":")
    assert resolve_group(root_group[0]) == int(root_group[2])


@pytest.mark.parametrize("changes,needle", [
    ({"output_group": "no-such-group-i2v"}, "output_group"),
    ({"output_group": "99999999999"}, "output_group"),
    ({"output_group": "../wheel"}, "output_group"),
    ({"output_mode": "0999"}, "output_mode"),
    ({"output_mode": "rw-r-----"}, "output_mode"),
    ({"output_mode": "0440"}, "output_mode"),  # the daemon could not write into its own folders
    ({"output_mode": "04755"}, "output_mode"),  # no set-id bits
])
def test_output_group_and_mode_are_checked_at_start_up(folders: Folders, changes: dict[str, str],
                                                       needle: str) -> None:
    folders.write_config(**changes)
    with pytest.raises(StartupError, match=needle):
        load_settings(folders.config)


def test_an_existing_group_name_is_accepted(folders: Folders) -> None:
    name = Path("/etc/group").read_text().splitlines()[0].split(":")[0]
    folders.write_config(output_group=name, output_mode="0664")
    settings = load_settings(folders.config)
    assert (settings.output_group, settings.output_mode) == (name, "0664")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
