"""The long-running services, each a short composition of parts (parts.py) turned by a loop: the
folder daemon (`run`: intake, runner, recovery, heartbeat, retention), the Celery dispatcher (intake,
enqueuer) and the Celery worker (runner, lease watch, the Celery consumer); their life cycle (stop
signals, systemd notification, the metrics endpoint) and start-up (bootstrap)."""
