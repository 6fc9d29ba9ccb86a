"""Raw frames on disk, written by the ingest worker's ``--capture`` and read by the
replay server: one JSON line per frame, gzip-compressed when the path ends in ``.gz``.

``{"received_time_ns": 1786046338033000000, "api": "futures", "frame": "{\\"feed\\":…}"}``

The frame is kept as text exactly as received, so a capture can replay bugs in the
client's own parsing too.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import BinaryIO, Final, Literal

import msgspec

from krakenfeed.contracts import Source

_FLUSH_BYTES: Final = 1 << 16
# Level 1 keeps up with a full-rate feed on one core; JSON still shrinks about tenfold.
_GZIP_LEVEL: Final = 1


class CapturedFrame(msgspec.Struct, frozen=True):
    received_time_ns: int
    api: Source
    frame: str


def _open(path: Path, mode: Literal["rb", "wb"]) -> BinaryIO | gzip.GzipFile:
    if path.suffix == ".gz":
        return gzip.open(path, mode, compresslevel=_GZIP_LEVEL)
    return path.open(mode)


class CaptureWriter:
    """Appends frames to a new capture file (an existing one is replaced).

    Lines are encoded into a memory buffer and written in blocks, because the ingest
    hot path calls :meth:`write` once per frame. Not thread-safe.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._file = _open(self.path, "wb")
        self._encoder = msgspec.json.Encoder()
        self._buffer = bytearray()

    def write(self, api: Source, received_time_ns: int, raw: bytes | str) -> None:
        # A frame that is not UTF-8 cannot be a JSON string; Kraken sends only text.
        text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
        self._encoder.encode_into(CapturedFrame(received_time_ns, api, text), self._buffer, -1)
        self._buffer += b"\n"
        if len(self._buffer) >= _FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        """Hand buffered lines to the OS, e.g. before a checkpoint or on shutdown."""
        self._file.write(self._buffer)
        self._buffer.clear()
        self._file.flush()

    def close(self) -> None:
        if self._file.closed:
            return
        self.flush()
        self._file.close()

    def __enter__(self) -> CaptureWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_capture(path: str | os.PathLike[str]) -> list[CapturedFrame]:
    """Every frame of a capture file, in the order received."""
    path = Path(path)
    decoder = msgspec.json.Decoder(CapturedFrame)
    frames = []
    number = 0
    try:
        with _open(path, "rb") as file:
            for line in file:
                number += 1
                if line.strip():
                    frames.append(decoder.decode(line))
    except msgspec.DecodeError as exc:
        raise ValueError(
            f"{path}:{number}: not a capture line ({exc}); each line must be "
            '{"received_time_ns": <int>, "api": "futures"|"spot", "frame": "<text>"}'
        ) from None
    except (EOFError, gzip.BadGzipFile) as exc:
        raise ValueError(f"{path}: unreadable gzip after line {number} ({exc})") from None
    return frames
