"""The benchmark suite: `python -m bench` runs every benchmark and writes docs/benchmarks.md."""
