"""Throughput, time-to-first-batch and peak-RSS benchmarks of reading and building M3LEO shards.

``python -m benchmarks`` (``make bench``) generates a sample chip tree, builds it, runs every case in
its own subprocess and writes a ratio table (see ``benchmarks.cli``).
"""
