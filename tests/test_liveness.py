"""The one liveness judge: its thresholds (with clocks the test moves), the share's clock that `status`
and the dashboard measure a heartbeat's age on, the process state on this host, and the heartbeat
record read from files written by the daemon before it was typed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from i2v_watcher.config.settings import Settings
from i2v_watcher.job.checkpoint import Activity
from i2v_watcher.job.worker_records import HeartbeatRecord, StatusSnapshot
from i2v_watcher.ops.status import collect, snapshot
from i2v_watcher.service.bootstrap import prepare_folders
from i2v_watcher.service.parts import Beating, Part, start_all
from i2v_watcher.work import lease as lease_module
from i2v_watcher.work import liveness as liveness_module
from i2v_watcher.work.lease import HEARTBEAT_FILE, Heartbeat, LeaseObserver, read_heartbeat
from i2v_watcher.work.liveness import PROBE_PREFIX, Thresholds, judge, process_state, share_now
from i2v_watcher.work.survey import survey

FIXTURES = Path(__file__).parent / "fixtures" / "records"
LIMITS = Thresholds(interval_s=1.0, lease_timeout_s=10.0)
RUNNING = HeartbeatRecord(counter=1, host="elsewhere", pid=1)


def settings_for(tmp_path: Path, **changes: Any) -> Settings:
    values: dict[str, Any] = {n: str(tmp_path / n) for n in ("inbox", "outbox", "failed", "done", "work")}
    s = Settings(**values, create_inbox=True, **{"lease_timeout_s": 6.0, "worker_id": "me", **changes})
    prepare_folders(s)
    return s


def write_beat(folder: Path, age_s: float = 0.0, **fields: Any) -> None:
    """A heartbeat as another worker writes it, last written `age_s` ago on this (the share's) clock."""
    folder.mkdir(parents=True, exist_ok=True)
    record = {"counter": 1, "state": "running", "host": "elsewhere", "pid": 1, "interval_s": 1.0,
              "started_at": "t0", **fields}
    (folder / HEARTBEAT_FILE).write_text(json.dumps(record))
    then = time.time() - age_s
    os.utime(folder / HEARTBEAT_FILE, (then, then))


@pytest.mark.parametrize(("age", "expected"), [
    (0.0, "alive"), (1.99, "alive"),  # within two beats
    (2.0, "late"), (9.99, "late"),  # two beats missed, not yet the lease
    (10.0, "stale"), (1e6, "stale"),  # exactly at lease_timeout_s: its jobs may be taken over
])
def test_thresholds(age: float, expected: str) -> None:
    assert judge(RUNNING, age, LIMITS) == expected


def test_stopped_dead_and_unknown() -> None:
    stopped = RUNNING.model_copy(update={"state": "stopped"})
    assert judge(stopped, 0.0, LIMITS) == "stopped" and judge(stopped, 1e6, LIMITS, "gone") == "stopped"
    # Gone only counts once it stopped beating: a pid this host cannot see never makes a live worker dead.
    assert judge(RUNNING, 1.99, LIMITS, "gone") == "alive"
    assert judge(RUNNING, 2.0, LIMITS, "gone") == "dead" and judge(RUNNING, 20.0, LIMITS, "gone") == "dead"
    assert judge(RUNNING, 5.0, LIMITS, "frozen") == "late"
    assert judge(RUNNING, 10.0, LIMITS, "frozen") == "stale"
    assert judge(None, None, LIMITS) == "unknown" and judge(None, 9.99, LIMITS) == "unknown"
    assert judge(None, 10.0, LIMITS) == "stale"  # a folder without a heartbeat for a whole lease
    assert judge(RUNNING, None, LIMITS) == "unknown"
    # A lease shorter than two beats: late never comes after stale.
    assert judge(RUNNING, 3.0, Thresholds(interval_s=2.0, lease_timeout_s=3.0)) == "stale"


def test_takeover_judges_the_counter_on_its_own_clock(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings_for(tmp_path)
    now = [1000.0]
    monkeypatch.setattr(lease_module.time, "monotonic", lambda: now[0])
    observer = LeaseObserver(s)
    write_beat(s.work / "w", interval_s=0.5)  # the file's mtime is no evidence here, only the counter
    assert observer.judge(s.work / "w") == "alive"
    now[0] += 0.99
    assert observer.judge(s.work / "w") == "alive"
    now[0] += 0.01  # two beats of 0.5 s missed
    assert observer.judge(s.work / "w") == "late" and observer.stale_workers() == []
    now[0] += 4.99
    assert observer.judge(s.work / "w") == "late"
    now[0] += 0.01  # exactly lease_timeout_s (6 s) since the counter last moved
    assert observer.judge(s.work / "w") == "stale" and observer.stale_workers() == [s.work / "w"]
    write_beat(s.work / "w", counter=2, interval_s=0.5)
    assert observer.judge(s.work / "w") == "alive" and observer.stale_workers() == []


def test_status_measures_the_age_on_the_shares_clock(tmp_path: Path) -> None:
    s = settings_for(tmp_path)
    write_beat(s.work / "fresh", 0.0)
    write_beat(s.work / "late", 2.5)
    write_beat(s.work / "stale", 6.5)
    write_beat(s.work / "stopped", 100.0, state="stopped")
    (s.work / "ghost").mkdir()
    rows = {row.worker_id: row for row in survey(s)}
    assert {name: row.state for name, row in rows.items()} == {
        "fresh": "alive", "late": "late", "stale": "stale", "stopped": "stopped", "ghost": "unknown"}
    assert all(row.clock == "share" for row in rows.values())
    assert rows["late"].heartbeat_age_s is not None and 2.4 <= rows["late"].heartbeat_age_s < 4
    assert rows["fresh"].activity == "idle" and rows["stopped"].activity == "stopped"
    assert rows["ghost"].activity is None and rows["ghost"].detail == "no readable heartbeat"
    old = time.time() - 7
    os.utime(s.work / "ghost", (old, old))  # no heartbeat, and its folder unchanged for a lease
    assert {row.worker_id: row.state for row in survey(s)}["ghost"] == "stale"
    assert not [p for p in s.work.iterdir() if p.name.startswith(PROBE_PREFIX)]  # the probe is gone


def test_a_share_this_process_may_not_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe cannot be created: ages against the newest heartbeat, a lower bound of now there."""
    s = settings_for(tmp_path)

    def refused(folder: Path) -> float:
        raise PermissionError(13, "Permission denied", str(folder))

    monkeypatch.setattr(liveness_module, "probe_share_time", refused)
    assert share_now(s.work, []) == (None, "newest heartbeat")
    write_beat(s.work / "beating", 0.5)
    write_beat(s.work / "frozen", 7.0)
    rows = {row.worker_id: row for row in survey(s)}
    assert rows["frozen"].state == "stale" and rows["beating"].state == "alive"
    assert rows["frozen"].clock == "newest heartbeat"


def i2v_named_process() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "i2v-watcher-test"])


def test_process_state_on_this_host(tmp_path: Path) -> None:
    here = os.uname().nodename
    child = i2v_named_process()
    try:
        beat = HeartbeatRecord(host=here, pid=child.pid)
        assert _eventually(lambda: process_state(beat) == "running")  # once it has exec'd
        child.send_signal(signal.SIGSTOP)
        assert _eventually(lambda: process_state(beat) == "frozen")
        child.send_signal(signal.SIGCONT)
        assert _eventually(lambda: process_state(beat) == "running")
        assert process_state(HeartbeatRecord(host="elsewhere", pid=child.pid)) is None  # not ours to tell
        assert process_state(HeartbeatRecord(host=here, pid=os.getpid())) == "gone"  # not an i2v program
    finally:
        child.kill()
        child.wait()
    assert process_state(HeartbeatRecord(host=here, pid=child.pid)) == "gone"
    s = settings_for(tmp_path)
    write_beat(s.work / "crashed", 0.0, host=here, pid=child.pid)
    assert survey(s)[0].state == "alive"  # gone, but the heartbeat is fresh: not judged yet
    write_beat(s.work / "crashed", 2.5, host=here, pid=child.pid)
    assert survey(s)[0].state == "dead" and survey(s)[0].process == "gone"


def _eventually(check: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return False


@pytest.mark.parametrize("name", ["heartbeat-working.json", "heartbeat-stopped.json"])
def test_heartbeats_written_before_the_record_read_back_the_same(name: str) -> None:
    written = json.loads((FIXTURES / name).read_text())
    record = HeartbeatRecord.model_validate(written)
    assert record.as_file() == written
    assert record.model_dump(mode="json") == written  # every key today's writer writes is a field
    # in the order it writes them; an OPTIONAL key (paused) only where it is set
    assert [f for f in HeartbeatRecord.model_fields if f not in HeartbeatRecord.OPTIONAL] == list(written)
    newer = {**written, "from_a_newer_version": [1, 2]}
    assert HeartbeatRecord.model_validate(newer).as_file() == newer
    # A writer that changed a field's type: that field is left out, the counter and state still count.
    changed = HeartbeatRecord.from_data({**written, "pid": "host-17", "jobs": {"one": 1}}, lenient=True)
    assert changed.counter == written["counter"] and changed.state == written["state"]
    assert changed.pid is None and changed.jobs == []


def test_the_heartbeat_writes_what_it_wrote_before(tmp_path: Path) -> None:
    s = settings_for(tmp_path)
    live = Activity()
    live.working_on("20260101T000000Z-abcdef01", "fox", "generate")
    live.progress(5, 30)
    s.worker_dir.mkdir()
    heart = Heartbeat(s, live, "slow", "a model")
    heart.beat()
    now = json.loads((s.worker_dir / HEARTBEAT_FILE).read_text())
    before = json.loads((FIXTURES / "heartbeat-working.json").read_text())
    assert list(now) == list(before)
    assert {k: type(v) for k, v in now.items()} == {k: type(v) for k, v in before.items()}
    assert now["jobs"] == [{"job_id": "20260101T000000Z-abcdef01", "job": "fox", "stage": "generate",
                            "done": 5, "total": 30}]
    assert read_heartbeat(s.worker_dir) == now


def test_the_status_snapshot_reads_back(tmp_path: Path) -> None:
    s = settings_for(tmp_path)
    (s.inbox / "a.yaml").write_text("prompt: x\n")
    write_beat(s.work / "w", 0.0)
    snap = snapshot(s)
    printed = json.loads(json.dumps(snap.as_json()))
    assert printed == snap.as_json()
    assert StatusSnapshot.model_validate(printed).as_json() == printed
    again = collect(s)  # what `status --json` prints: the same, but for the heartbeats' ages since
    for row in (*again["workers"], *printed["workers"]):
        row.pop("heartbeat_age_s")
    assert again == printed
    assert printed["counts"]["queued"] == 1 and printed["workers"][0]["state"] == "alive"


def test_a_start_that_never_ran_is_no_worker_once_any_start_would_be_over(tmp_path: Path) -> None:
    """A folder with nothing but a lock (a start killed before its first beat) is shown while a start
    may still be under way, and no longer after lease_timeout_s + load_timeout_s; one with a job in it
    stays, to be taken over."""
    s = settings_for(tmp_path, load_timeout_s=10.0)
    for name in ("killed", "with-job"):
        (s.work / name).mkdir()
        (s.work / name / lease_module.LOCK_FILE).touch()
    (s.work / "with-job" / "a-job").mkdir()
    assert {row.worker_id: row.state for row in survey(s)} == {"killed": "unknown", "with-job": "unknown"}
    for name, age in (("killed", 15.0), ("with-job", 17.0)):  # past lease_timeout_s, within 6 + 10 s
        old = time.time() - age
        os.utime(s.work / name, (old, old))
    assert {row.worker_id: row.state for row in survey(s)} == {"killed": "stale", "with-job": "stale"}
    old = time.time() - 17.0
    os.utime(s.work / "killed", (old, old))
    assert {row.worker_id: row.state for row in survey(s)} == {"with-job": "stale"}


def test_a_part_that_fails_to_start_stops_the_heartbeat_started_before_it(tmp_path: Path) -> None:
    """The heartbeat, started before a part that fails, says "stopped" rather than going silent."""
    class Broken(Part):
        def start(self) -> None:
            raise OSError("cannot watch the inbox")

    s = settings_for(tmp_path)
    s.worker_dir.mkdir()
    with pytest.raises(OSError, match="cannot watch"):
        start_all([Beating(Heartbeat(s, Activity())), Broken()])
    assert {row.worker_id: row.state for row in survey(s)} == {"me": "stopped"}
