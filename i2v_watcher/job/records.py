"""The typed records that cross stages and processes, each written and read by one owner: what a job
publishes (its metadata), why it failed (the failure report), where it stands (its state), and what a
worker says of itself (the heartbeat) and `status` says of the share (the status snapshot).

Every record reads every file the current version writes: unknown keys from a newer writer are kept
(extra="allow") so that a rolling upgrade never makes a file unreadable."""

from __future__ import annotations

# --- The job's records: published metadata, failure report, job state -------------------------------


# --- The worker's records: heartbeat, status snapshot --------------------------------------------------
