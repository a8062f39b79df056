"""Benchmarks of streamapp against baselines measured in the same run: ``python -m bench``.

pipeline (raw → output throughput vs a plain aiokafka forward loop), backfill (records/s
vs the ceiling of the API's latency and rate limit), freshness (visible → output delay vs
the poll interval), memory (worker RSS after N ids through dedupe, memory and RocksDB
stores, vs an idle worker), idle (API requests per idle poll, idle worker CPU).
"""
