"""i2v-watcher: a daemon that turns still images dropped into an inbox into short videos."""

__version__ = "0.1.0"
