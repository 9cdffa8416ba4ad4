"""A test plugin: the slow backend, whose generating thread spends `block_s` of each frame inside one C
call that no signal interrupts, as a denoising step on a GPU does (Python runs a signal handler only
between two bytecodes of the main thread: not until such a call returns). The call is a
pthread_mutex_lock on a mutex that another thread holds for `block_s` (pthread_mutex_lock is never
interrupted by a signal, unlike sleep or read). Its `backend_options` add `block_s` to the slow
backend's."""

from __future__ import annotations

import ctypes
import threading
import time

from PIL import Image
from pydantic import Field
from slow_backend import SlowBackend, SlowOptions

from i2v_watcher.backends import register
from i2v_watcher.backends.base import Frames, Progress
from i2v_watcher.job.spec import JobParams

MUTEX_BYTES = 64  # more than glibc's pthread_mutex_t (40 bytes on x86-64); zeroed: a default mutex
libc = ctypes.CDLL(None)


class BlockingOptions(SlowOptions):
    block_s: float = Field(default=1.5, ge=0, le=60)


def blocked_in_c(seconds: float) -> None:
    """Return after `seconds`, spent inside pthread_mutex_lock."""
    mutex = ctypes.create_string_buffer(MUTEX_BYTES)
    held = threading.Event()

    def hold() -> None:
        libc.pthread_mutex_lock(mutex)
        held.set()
        time.sleep(seconds)
        libc.pthread_mutex_unlock(mutex)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    held.wait()
    libc.pthread_mutex_lock(mutex)  # waits for hold() to let go
    libc.pthread_mutex_unlock(mutex)
    holder.join()


@register
class BlockingBackend(SlowBackend):
    name = "blocking"
    options_model = BlockingOptions

    def generate(self, image: Image.Image, params: JobParams, progress: Progress,
                 preloaded: object | None = None) -> Frames:
        block_s = self.options(params).block_s

        def blocking(done: int, total: int) -> None:
            blocked_in_c(block_s)
            progress(done, total)

        return super().generate(image, params, blocking, preloaded)
