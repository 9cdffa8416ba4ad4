"""Compatibility: the job sidecar's models under the import path that docs/plugins.md promises to
plugin authors (`from i2v_watcher.spec import JobParams`). They live in `i2v_watcher.job.spec`."""

from i2v_watcher.job.spec import JobDefaults as JobDefaults
from i2v_watcher.job.spec import JobParams as JobParams
from i2v_watcher.job.spec import JobSpec as JobSpec

__all__ = ["JobDefaults", "JobParams", "JobSpec"]
