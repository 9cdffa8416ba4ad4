"""Hard links and honest provenance (issue 18, class 11): an input with a second name is refused (or,
with `hardlinked_inputs = "copy"`, worked from a private copy); the metadata's sha256 is that of the
bytes the clip was generated from, whatever is written to another name of the file meanwhile; and
nothing is published readable by people who could not read the input, unless output_mode says so."""

from __future__ import annotations

import hashlib
import os
import signal
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from conftest import Folders, make_image
from i2v_watcher.fs.perms import reach_mask

from .conftest import LiveDaemon, Spawn, entries


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@contextmanager
def umask(value: int) -> Iterator[None]:
    """The daemon inherits it at its start: 022, so that outputs would be 0644 if nothing narrowed them."""
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def run_once(spawn: Spawn, folders: Folders) -> LiveDaemon:
    with umask(0o022):
        return spawn(folders.config, "--once")


def test_hard_linked_inputs_are_refused_and_private_inputs_stay_private(
        folders: Folders, spawn: Spawn, tmp_path: Path) -> None:
    # A private file of the service user, and a private sidecar, linked into the inbox by someone else.
    secret = make_image(tmp_path / "secret.png", seed=7)
    secret.chmod(0o600)
    secret_side = tmp_path / "secret.yaml"
    secret_side.write_text("prompt: the service user's private notes\n")
    secret_side.chmod(0o600)
    os.link(secret, folders.inbox / "linked.png")
    make_image(folders.inbox / "side.png", seed=1)
    os.link(secret_side, folders.inbox / "side.yaml")
    # The owner's own private image (one name), and an ordinary one.
    make_image(folders.inbox / "private.png", seed=2).chmod(0o600)
    make_image(folders.inbox / "open.png", seed=3).chmod(0o644)

    daemon = run_once(spawn, folders)
    assert daemon.wait(timeout=120) == 3, daemon.log
    assert "Traceback" not in "\n".join(line for line in daemon.lines if '"traceback"' not in line)

    for name, stage, what in (("linked", "load", "linked.png"), ("side", "sidecar", "side.yaml")):
        report = folders.report(name)
        assert report["stage"] == stage, report
        assert report["message"].startswith(f"{what} is a file with 2 names (a hard link): refused"), report
        assert "not ln" in report["hint"] and "hardlinked_inputs" in report["hint"], report
    assert "private notes" not in (folders.failed / "side.error.json").read_text()
    assert sorted(entries(folders.outbox)) == ["open.jpg", "open.json", "open.mp4", "private.jpg",
                                               "private.json", "private.mp4"]
    for suffix in (".mp4", ".jpg", ".json"):
        assert mode(folders.outbox / f"private{suffix}") == 0o600, suffix  # not 0644: the input was 0600
        assert mode(folders.outbox / f"open{suffix}") == 0o644, suffix
    assert mode(folders.done / "private.png") == 0o600
    # The links went to failed/ as they were (a rename: same file, same bits); the secrets are untouched.
    assert os.lstat(folders.failed / "linked.png").st_ino == os.lstat(secret).st_ino
    assert mode(secret) == 0o600 and mode(secret_side) == 0o600
    assert entries(folders.inbox) == {} and entries(folders.work) == {}


def test_copy_works_from_a_private_copy_and_records_the_hash_of_what_it_generated_from(
        folders: Folders, spawn: Spawn, tmp_path: Path) -> None:
    """The file's other name is rewritten while the job generates: the clip, the recorded hash and the
    kept input are all the bytes read at the check. output_mode, set, decides the outputs' bits."""
    folders.write_config(hardlinked_inputs="copy", output_mode="0644")
    original = make_image(tmp_path / "elsewhere.png", size=(128, 96), seed=5)
    original.chmod(0o600)
    generated_from = original.read_bytes()
    os.link(original, folders.inbox / "a.png")

    daemon = run_once(spawn, folders)
    frozen = daemon.freeze_on("generated", job="a")
    assert frozen.wait(60), daemon.log
    with open(original, "r+b") as other_name:  # in place: the same file, through its other name
        other_name.write(bytes(len(generated_from)))
    daemon.resume()
    assert daemon.wait(timeout=120) == 0, daemon.log
    assert daemon.find("input with several names (a hard link): working from a private copy", file="a.png")

    recorded = folders.metadata("a")["input"]
    assert recorded["sha256"] == hashlib.sha256(generated_from).hexdigest(), recorded
    assert recorded["bytes"] == len(generated_from) and (recorded["width"], recorded["height"]) == (128, 96)
    kept = folders.done / "a.png"
    assert kept.read_bytes() == generated_from and os.lstat(kept).st_nlink == 1
    assert mode(kept) == 0o600  # the private copy is no wider than the original; done/ keeps its bits
    assert original.read_bytes() == bytes(len(generated_from)) and os.lstat(original).st_nlink == 1
    assert all(mode(folders.outbox / f"a{suffix}") == 0o644 for suffix in (".mp4", ".jpg", ".json"))
    assert entries(folders.inbox) == {} and entries(folders.work) == {} and entries(folders.failed) == {}


def test_a_claim_cut_off_between_its_link_and_unlink_is_finished_at_the_restart(
        folders: Folders, spawn: Spawn) -> None:
    """Where renameat2 is missing (NFS), a claim's rename is a hard link then an unlink; a crash in
    between leaves the file under both names. The restart finishes the rename: published once, never
    refused as a hard link nor seen again in the inbox."""
    make_image(folders.inbox / "a.png")
    crashed = spawn(folders.config, "--once", I2V_CRASH_AT="claim.before_rename")
    assert crashed.wait(timeout=60) == -signal.SIGKILL, crashed.log
    (job_dir,) = folders.jobs_in_work()
    os.link(folders.inbox / "a.png", job_dir / "input" / "a.png")  # linked, not unlinked yet

    again = run_once(spawn, folders)
    assert again.wait(timeout=120) == 0, again.log
    assert sorted(entries(folders.outbox)) == ["a.jpg", "a.json", "a.mp4"]
    assert folders.metadata("a")["job_id"] == job_dir.name  # the interrupted claim, finished
    assert os.lstat(folders.done / "a.png").st_nlink == 1
    assert entries(folders.inbox) == {} and entries(folders.failed) == {} and entries(folders.work) == {}


def fake_stat(bits: int, gid: int) -> os.stat_result:
    return os.stat_result((stat.S_IFREG | bits, 0, 0, 1, 0, gid, 0, 0, 0, 0))


def test_reach_mask_never_lets_a_group_read_what_it_could_not() -> None:
    assert reach_mask([fake_stat(0o600, 5)], 5) == 0o700
    assert reach_mask([fake_stat(0o640, 5)], 5) == 0o740  # the same group keeps its bits
    assert reach_mask([fake_stat(0o640, 5)], 6) == 0o700  # another group: only what others had
    assert reach_mask([fake_stat(0o664, 5)], 6) == 0o744
    assert reach_mask([fake_stat(0o4755, 5)], 5) == 0o755  # set-id bits never carried over
    assert reach_mask([fake_stat(0o644, 5), fake_stat(0o640, 5)], 5) == 0o740  # every input bounds it
