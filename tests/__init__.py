"""The test suite. Importing it prepares Ray's environment before any test module imports ray:
a local Ray binds loopback only and runs with token auth (seller_dist/ray_cluster.py)."""

from seller_dist.ray_cluster import prepare_ray_environment

prepare_ray_environment()
