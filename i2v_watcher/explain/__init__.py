"""Mistakes in plain words: pydantic validation errors translated into one line per mistake, with the
value, the range and a did-you-mean. One core (core.py: the Problem, the value printer, the kinds of
error, the did-you-mean, the Wording); the job's wording (job.py: sidecars, backend options, steps) and
the configuration's (config/errors.py) are built on it."""
