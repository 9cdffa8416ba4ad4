"""The queue goes by arrival, not by mtime (issue 18): `cp -p`, rsync and Finder keep a file's mtime, so a
file from 2015 must not jump the jobs that came in before it, and one dated a year ahead must neither wait
behind everything nor wait to settle. A real daemon claims them in the order they arrived."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from conftest import Daemon, Folders, make_image

YEAR_2015 = 1_420_070_400.0
A_YEAR_AHEAD = time.time() + 365 * 86400


def test_a_real_daemon_claims_in_the_order_of_arrival(folders: Folders, start: Callable[..., Daemon]) -> None:
    folders.write_config(sidecar_grace_s=0.0)
    for name, mtime in (("first", None), ("from-2015", YEAR_2015), ("from-next-year", A_YEAR_AHEAD)):
        image = make_image(folders.inbox / f"{name}.png")
        if mtime is not None:  # what `cp -p` of an old photo, or a camera clock a year ahead, leaves
            os.utime(image, (mtime, mtime))
        time.sleep(0.02)  # arrivals several ticks of the share's clock apart
    daemon = start(folders.config, "--once")
    assert daemon.wait() == 0, daemon.log
    claimed = [e["job"] for e in daemon.events() if e.get("event") == "claimed"]
    assert claimed == ["first", "from-2015", "from-next-year"], daemon.log
