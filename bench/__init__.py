"""Benchmarks: model-only ceiling, end to end through gRPC and through the REST bridge.

Run with `python -m bench` (or `make bench`); `python -m bench --help` lists the options.
"""
