"""The ingest worker: Kraken WebSocket → decode → validate → Kafka.

``frames`` and ``protocol`` are pure; ``worker`` owns the socket and the producer.
"""
