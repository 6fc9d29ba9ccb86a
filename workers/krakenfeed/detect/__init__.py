"""The detector's pure core: features → detectors → ``Anomaly`` records.

No I/O: the detector worker feeds records with their event time and its clock,
and persists each product's ``ProductState`` between records.
"""

from krakenfeed.detect.config import (
    DetectorConfig,
    LikelihoodConfig,
    PremiumDislocationConfig,
    PriceJumpConfig,
    ScorerConfig,
    SpreadBlowoutConfig,
    StaleConfig,
    TradeBurstConfig,
)
from krakenfeed.detect.engine import DetectorEngine, ProductState, decode_state, encode_state
from krakenfeed.detect.scorer import LikelihoodScorer, ScorerState

__all__ = [
    "DetectorConfig",
    "DetectorEngine",
    "LikelihoodConfig",
    "LikelihoodScorer",
    "PremiumDislocationConfig",
    "PriceJumpConfig",
    "ProductState",
    "ScorerConfig",
    "ScorerState",
    "SpreadBlowoutConfig",
    "StaleConfig",
    "TradeBurstConfig",
    "decode_state",
    "encode_state",
]
