"""The workers' HTTP endpoint: Prometheus metrics, liveness and readiness.

Metrics are read from the workers' own plain counters when Prometheus scrapes,
through custom collectors: the hot loops (ingest ~60k frames/s, the detector
~30k events/s) never touch a Prometheus object. Only per-batch figures (the
PostgreSQL sink's batch size and latency) are observed as they happen.

``server`` serves the endpoint; ``probes`` checks the broker and PostgreSQL in
the background, so that a probe answers at once whatever a dependency does;
``ingest`` and ``detector`` know what each worker exports and when it is ready.
"""
