"""Benchmarks of the batched sampler (issue 4): scripts, not tests. See BENCHMARKS.md."""
