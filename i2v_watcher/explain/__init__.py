"""Mistakes in plain words: pydantic validation errors translated into one line per mistake, with the
value, the range and a did-you-mean. One core; the job (sidecar) and config wordings build on it."""
