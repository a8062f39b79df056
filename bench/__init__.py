"""Benchmarks of streamapp against baselines measured in the same run: ``python -m bench``.

pipeline (raw → output throughput vs a plain aiokafka forward loop, without and with the
detections, and the worker's CPU per record), backfill (``faust ... backfill --since 30d``
vs the rate-limit ceiling of 960 requests/min x 100 records, and 429s), freshness (visible
→ output delay vs the poll interval), busy (API requests per poll of a busy account vs the
least that fetches its new records, learning and learned overlap; late records caught),
fleet (1,000 idle sources on one worker: spread, one request per interval, CPU, RSS,
start-up), memory (worker RSS at 1,000,000 dedupe ids with RocksDB, vs an idle worker).
"""
