"""Benchmarks of bertserve against what its users would otherwise run (`make bench`)."""
