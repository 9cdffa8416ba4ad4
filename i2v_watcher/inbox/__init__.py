"""The inbox: which jobs are there and ready (watch), the observer that wakes the scan (events), what
one scan learned for the next (scan cache) and why a job waits (waits)."""
