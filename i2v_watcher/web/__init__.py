"""`i2v-watcher web`: the team's dashboard, a separate process that reads the shared folders and the
workers' heartbeats (never a daemon's memory), so it runs on any host that mounts the share and shows
every worker at once. Read-only unless the config allows submitting or retrying, and then every write
needs the token."""
