"""streamapp: PagerDuty audit records into Kafka, deduplicated, enriched and routed."""

__version__ = "0.1.0"
