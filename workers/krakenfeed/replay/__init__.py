"""A local Kraken: replays captured or generated sessions over both WebSocket APIs.

``capture`` reads and writes raw frames on disk, ``session`` turns them (or a seed)
into what a replay sends, ``protocol`` answers requests the way Kraken does, and
``server`` puts it all on a socket.
"""

from krakenfeed.replay.capture import CapturedFrame, CaptureWriter, read_capture
from krakenfeed.replay.server import PATHS, ReplayServer
from krakenfeed.replay.session import (
    CHANNELS,
    Channel,
    ProductState,
    Session,
    SessionFrame,
    generate_session,
    merge_sessions,
    session_from_capture,
    session_from_records,
    shift_times,
)

__all__ = [
    "CHANNELS",
    "PATHS",
    "CaptureWriter",
    "CapturedFrame",
    "Channel",
    "ProductState",
    "ReplayServer",
    "Session",
    "SessionFrame",
    "generate_session",
    "merge_sessions",
    "read_capture",
    "session_from_capture",
    "session_from_records",
    "shift_times",
]
