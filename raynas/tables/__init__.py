"""Benchmark tables (NAS-Bench-201, NAS-Bench-101) for looking up searched architectures."""
