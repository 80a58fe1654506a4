"""Benchmarks: model-only ceiling, end to end through gRPC and through the REST bridge.

Run with `python -m bench` (or `make bench`); `python -m bench --help` lists the options.
"""

import os

# The model-only ceiling runs with the server's OpenMP setting (see clip_grpc/__main__.py), set
# before anything loads torch; on a busy machine spinning OpenMP workers make numbers erratic.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
