"""Glue for other engines, built on the public `clip_grpc.client.Client` only.

`clip_grpc.integrations.ray`: a callable class for Ray Data's `map_batches` (also usable from
Spark's `mapInPandas`). No engine is imported here: install the `ray` extra to run it on Ray.
"""
