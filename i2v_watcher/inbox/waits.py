"""Why a job of the inbox waits, said in the log once per wait (not at every scan), and when a wait
ends by itself: a file still being written or not openable yet, an image waiting for its sidecar
(`sidecar_grace_s`), a sidecar waiting for its image (`orphan_sidecar_s`). watch.Inbox decides; this
only tells."""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from i2v_watcher.config.settings import Settings
from i2v_watcher.inbox.scan_cache import FileInfo

STILL_WRITING_EVERY_S = 60.0  # a file written for a long time is logged again this often
SETTLE_INFO_S = 5.0  # a settle_s this long is worth an info line for every file dropped
log = structlog.get_logger("i2v_watcher.inbox.watch")


@dataclass
class _Wait:
    kind: str  # "settling", "writing", "locked", "sidecar", "orphan"
    since: float  # when this wait began (monotonic)
    logged: float  # when it was last logged


class Waits:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._waits: dict[str, _Wait] = {}

    def settling(self, key: str, pending: list[tuple[FileInfo, float]], now: float, give_up_s: float) -> None:
        """The group's files in `pending` are not settled, each with when to look at it again (`now` or
        earlier: it could not be opened)."""
        wait = self._waits.get(key)
        locked = sorted(i.path.name for i, at in pending if at <= now)
        newest = max((i for i, _ in pending), key=lambda i: i.since)
        settle_s = self.settings.settle_s
        if locked:
            if wait is None or wait.kind != "locked":
                self._start(key, "locked", now, wait)
                log.info("waiting: a file cannot be opened yet (does its writer still hold it?)", job=key,
                         file=locked[0], taken_anyway_after_s=give_up_s)
        elif wait is None or wait.kind not in ("settling", "writing"):
            self._start(key, "settling", now, wait)
            (log.info if settle_s >= SETTLE_INFO_S else log.debug)(
                f"settling: waiting {settle_s:g} s for its files to stay unchanged", job=key,
                file=newest.path.name, settle_s=settle_s)
        elif newest.since > wait.logged and (wait.kind == "settling"
                                             or now - wait.logged >= STILL_WRITING_EVERY_S):
            wait.kind, wait.logged = "writing", now
            log.info("settling: a file is still being written", job=key, file=newest.path.name,
                     changing_for_s=round(now - wait.since, 1), settle_s=settle_s)

    def sidecar(self, key: str, due: float, now: float) -> None:
        """An image waits for its sidecar until `due`."""
        if self._is(key, "sidecar"):
            return
        self._start(key, "sidecar", now, self._waits.get(key))
        log.info(f"waiting {_seconds(due - now)} s for a sidecar", job=key, wait_s=round(due - now, 1),
                 setting="sidecar_grace_s")

    def orphan(self, key: str, due: float, now: float) -> None:
        """A sidecar waits for its image until `due`; then it goes to failed/."""
        if self._is(key, "orphan"):
            return
        self._start(key, "orphan", now, self._waits.get(key))
        log.info(f"a sidecar without an image: waiting up to {_seconds(due - now)} s for the image", job=key,
                 wait_s=round(due - now, 1), setting="orphan_sidecar_s")

    def ended(self, key: str, now: float, defaults: bool) -> None:
        """The group no longer waits (ready, gone, or to be reported); `defaults`: it is ready, an image
        without a sidecar."""
        wait = self._waits.pop(key, None)
        if wait is not None and wait.kind == "sidecar" and defaults:
            log.info("no sidecar came: taking the image with the defaults", job=key,
                     waited_s=round(now - wait.since, 1))

    def _is(self, key: str, kind: str) -> bool:
        wait = self._waits.get(key)
        return wait is not None and wait.kind == kind

    def _start(self, key: str, kind: str, now: float, previous: _Wait | None) -> None:
        # While files are being written (settling, locked) the wait keeps its start: how long it lasts.
        writing = ("settling", "writing", "locked")
        same = previous is not None and previous.kind in writing and kind in writing
        self._waits[key] = _Wait(kind, previous.since if same and previous else now, now)


def _seconds(value: float) -> str:
    """10, 600, 0.4: whole seconds from 10 on, tenths below."""
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}".removesuffix(".0")
