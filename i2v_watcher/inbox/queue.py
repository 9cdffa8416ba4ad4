"""What "queued" means, for `status`, the dashboard and its /metrics alike: the job groups of the inbox
that a daemon will take or is waiting for, by the daemon's own rules (watch.Inbox):

- an image, with its sidecar or without one (ready, settling, or waiting for its sidecar);
- a sidecar without an image: waited for `orphan_sidecar_s`, then taken into failed/ with a report;
- an approve marker (`NAME.approve`, a kind of its own): acted on once by a daemon, then removed (or,
  approving nothing, taken into failed/ with a report);
- a file that cannot be a job (an unsupported suffix, several images under one name, a link): taken
  into failed/ with a report, so queued until then.

Not queued: names the daemon ignores (hidden files, `*.part` and the other `ignore_patterns`), folders
themselves, and what a failed job left in the inbox (reported already: the daemon leaves it alone).
A job is one group, whatever number of files it has.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from i2v_watcher.inbox.watch import Inbox, Queued


def queued_jobs(inbox: Inbox, warn: Callable[[str], None]) -> list[Queued]:
    """The queued jobs, ready ones first in the order they will be taken, then the waiting ones; a
    sub-folder that cannot be read, or one past the bounds (too deep, a path too long), is a warning
    (its jobs are not counted). Scans the inbox (an Inbox kept between calls remembers how long each
    file has been stable); raises InboxUnavailable when the inbox itself cannot be read."""
    inbox.scan()
    for line in inbox.skipped.warnings():
        warn(line)
    return inbox.listing()


def shown_file(job: Queued, root: Path) -> str:
    """One file that names the job, relative to the inbox: its image, else its first file."""
    first = job.image or (job.files[0] if job.files else None)
    return job.key if first is None else str(first.relative_to(root))
