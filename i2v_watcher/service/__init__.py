"""The long-running services and their life cycle: the folder daemon (`run`), the Celery dispatcher
and worker, stop signals, systemd notification, the metrics endpoint, retention and start-up
(bootstrap)."""
