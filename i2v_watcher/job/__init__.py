"""One job's own records: the sidecar schema (`JobSpec`, `JobParams`) read as untrusted YAML, the
claimed job's folder and state, its checkpoint (how a stop request and progress reach it), and the
typed records that cross stages and processes."""
