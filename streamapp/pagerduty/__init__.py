"""The PagerDuty REST API, as the collector needs it. Pure: no faust, no Kafka."""
