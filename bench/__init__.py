"""Benchmarks for thumbd (not tests): `make bench` or `python -m bench --help`."""
