"""The work folder, a worker's own: taking a job out of the inbox (claim), the job folders of this
worker (store), leases and heartbeats that let workers take over each other's jobs, and the
reservation of output names."""
