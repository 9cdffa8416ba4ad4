"""Files on a share that may fail: crash-safe writes and renames, no-follow opens, mount types, the
group and mode of what is published. The lowest layer: it knows nothing of jobs."""
