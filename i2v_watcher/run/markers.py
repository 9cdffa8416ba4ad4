"""`NAME.approve` markers: the share's door to approving a draft (run.drafts), for teams that never see
the daemon's log.

A marker is acted on once. It approves the draft NAME and is removed; it waits while its draft is still
queued or being made; and one that approves nothing (no draft of that name waits, or the draft was
approved before the marker came) raises MarkerRefused, whose message the caller turns into a report:
the marker goes to failed/ beside a report saying why, as any file that is no job does, so it is
never read again and `status`, the dashboard and the share all show the message.

Several workers may see one marker. Whoever approves first removes it; another worker that finds the
draft approved only reports the marker when it came after the approval (the share's clock on both:
the marker's change time against the `approved` file's), so a marker that several workers raced for,
or that a restart left behind after its approval, is removed without a word.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path, PurePosixPath

import structlog

from i2v_watcher.config.settings import Settings
from i2v_watcher.inbox.scan_cache import APPROVE_SUFFIX, IMAGE_SUFFIXES
from i2v_watcher.job.records import MAX_STATE_BYTES, JobState
from i2v_watcher.job.state import STATE_FILE
from i2v_watcher.run.drafts import ApproveRefused, approve, approved_at_ns

MAX_STATES_READ = 1000  # jobs in progress looked at for a marker's draft (a share has a few)
log = structlog.get_logger("i2v_watcher.run.markers")


class MarkerRefused(Exception):
    """The marker approves nothing: the message says why, for its report in failed/."""


def approve_marker(settings: Settings, marker: Path) -> bool:
    """Act on a `NAME.approve` marker: True when it is done with (the draft approved, or found approved
    meanwhile by the same request) and removed; False, the marker left in place, while the draft it
    names is still queued or being made (looked at again later); MarkerRefused, the marker left for
    the caller to report, when it approves nothing."""
    rel = str(PurePosixPath(marker.relative_to(settings.inbox)))
    key = rel[: -len(APPROVE_SUFFIX)]
    try:
        result = approve(settings, key)
    except ApproveRefused as exc:
        if _draft_on_its_way(settings, key):
            log.info("approve marker waits for its draft to be published", marker=str(marker))
            return False
        raise MarkerRefused(f"approve marker {rel}: {exc}") from exc
    if result.outcome == "already":
        try:
            arrived = os.stat(marker).st_ctime_ns
        except FileNotFoundError:
            return True  # the worker that approved removed it meanwhile
        approved = approved_at_ns(result.draft, settings)
        if approved is None or arrived > approved:
            raise MarkerRefused(f"approve marker {rel}: {result.message}; this marker came after that "
                                "and queued nothing")
    log.info(result.message, marker=str(marker))
    with contextlib.suppress(FileNotFoundError):  # another worker removed it first
        os.unlink(marker)
    return True


def _draft_on_its_way(settings: Settings, key: str) -> bool:
    """An image of that name waits in the inbox, or a job of that name is in progress in work/."""
    if any(os.path.lexists(settings.inbox / f"{key}{suffix}") for suffix in IMAGE_SUFFIXES):
        return True
    for path in list(settings.work.glob(f"*/*/{STATE_FILE}"))[:MAX_STATES_READ]:
        with contextlib.suppress(OSError, ValueError):
            if JobState.read(path, MAX_STATE_BYTES).key == key:
                return True
    return False
