"""What happened to the jobs, for readers that must not walk the share: an append-only event log per
worker on the share (events), and a local SQLite index of the published clips kept current from it
(index). The share stays the truth: the index is rebuilt from a walk of the outbox whenever in doubt."""
