"""krakenfeed: real-time anomaly detection for Kraken market data.

Kept empty on purpose: the operator image imports ``krakenfeed.contracts`` and
must not pull in any worker dependency through this package's ``__init__``.
"""
