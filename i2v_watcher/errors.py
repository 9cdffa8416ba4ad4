"""The exceptions that decide a job's fate: failed, retried, or put back in the queue."""

from __future__ import annotations

import errno
from collections.abc import Sequence


class StartupError(Exception):
    """The daemon itself cannot run (bad config, missing ffmpeg, missing model); exit code 2."""


class JobError(Exception):
    """A job cannot succeed as dropped; it goes to failed/ with this message and an optional hint.
    `problems`: the separate mistakes the message lists, where it lists several (a sidecar's)."""

    def __init__(self, message: str, *, stage: str = "", hint: str = "",
                 problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.stage = stage
        self.hint = hint
        self.problems = list(problems) or [message]


class JobCancelled(Exception):
    """The daemon is stopping; the job is put back in the queue untouched."""


class FfmpegStalled(OSError):
    """ffmpeg stopped reporting progress and was killed: retried (from the kept frames) like a storage
    error, then the job fails."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.ETIMEDOUT, message)


class OutputInvalid(OSError):
    """An encoded output does not decode to what was asked (a damaged or truncated file): made again
    from the kept frames like a storage error, never published."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.EIO, message)


class DestinationUnavailable(Exception):
    """The outbox, done/ or failed/ cannot be written now (full, read-only, not writable, gone): an
    operator's problem, not the job's. The job is kept in the work folder and tried again later."""

    def __init__(self, stage: str, error: OSError) -> None:
        super().__init__(f"{stage}: {error.strerror or error}: {error.filename or ''}".rstrip(": "))
        self.stage = stage
        self.error = error


class JobLost(Exception):
    """Another worker took this job over (this one was frozen or cut off past its lease): whatever
    this process still had to do for it is dropped, without publishing or reporting anything."""


class StartupInterrupted(BaseException):
    """A stop signal arrived while the daemon was still starting (a model loading): start-up ends
    there. A BaseException, like KeyboardInterrupt, so no library's `except Exception` swallows it."""


class InboxUnavailable(Exception):
    """The inbox vanished or went stale (unmounted share); the daemon pauses until it is back."""


# Errors of the storage, not of the job: waiting and trying again usually cures them.
TRANSIENT_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.ESTALE, errno.EAGAIN, errno.EBUSY, errno.ETIMEDOUT,
     errno.ENOTCONN, errno.EHOSTDOWN, errno.EHOSTUNREACH, errno.ENETDOWN, errno.ENETUNREACH,
     errno.EMFILE, errno.ENFILE}  # out of descriptors: a burst of connections passes; the job is not at fault
)


# What a folder the daemon must write can raise besides those: fixed by an operator, not by waiting.
OPERATOR_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT, errno.ELOOP,
                             errno.ENOTDIR})


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS


def is_destination_problem(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS | OPERATOR_ERRNOS


class JobCancelledByOperator(JobError):
    """A person cancelled the job (`i2v-watcher cancel`): it ends in failed/ with a `cancelled` report."""

    def __init__(self, message: str) -> None:
        super().__init__(message, stage="cancelled", hint="`i2v-watcher retry NAME` queues it again")
