"""Scripted faults for the replay server: what goes wrong, on which connection, when.

Pure. A script lists, connection by connection in the order they arrive, the
faults that connection meets; connections past the end of the script are served
cleanly. Faults with ``after`` fire once the connection has been sent that many
session data frames (0: as soon as its stream starts).

The same script is written in tests as objects and on the command line as text::

    drop@40 | refuse:429 | close:1011@25 + inject:malformed@5 | silence@10 | ok

Connections are separated by ``|``, faults within one by ``+``; ``ok`` (or nothing)
is a clean connection and ``X*N`` repeats connection ``X`` N times. Each fault is
``name[:argument][@after]``:

=====================  ==========================================================
``drop@N``             end the TCP connection with no close frame (a 1006)
``close:CODE@N``       close with CODE (1001, 1011, 1008…)
``silence[:S]@N``      send nothing at all, heartbeats included, for S seconds or
                       until the client leaves
``inject:KIND@N``      send one bad frame: malformed, schema, alert or error
``skip:COUNT@N``       never send this connection's next COUNT data frames (a gap)
``rate-limit:BURST``   answer ``Exceeded msg rate`` past a burst of BURST requests
                       (spot; Kraken documents no futures wording)
``reject:PRODUCT``     refuse PRODUCT as Kraken refuses an unknown one
``mute:CHANNEL``       leave the first subscribe request for CHANNEL unanswered
``refuse:STATUS``      answer the upgrade with HTTP STATUS (429, 503, 403…)
=====================  ==========================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal, TypeVar

from krakenfeed.contracts import Source

_N = TypeVar("_N", int, float)
InjectKind = Literal["malformed", "schema", "alert", "error"]
INJECT_KINDS: Final[tuple[InjectKind, ...]] = ("malformed", "schema", "alert", "error")


@dataclass(frozen=True)
class Drop:
    after: int = 0


@dataclass(frozen=True)
class Close:
    code: int
    after: int = 0
    reason: str = "replay fault"


@dataclass(frozen=True)
class Silence:
    after: int = 0
    seconds: float | None = None
    """None: silent until the client gives up on the connection."""


@dataclass(frozen=True)
class Inject:
    """One frame sent as written: a preset ``kind`` or, from tests, any ``text``."""

    kind: InjectKind | None = None
    after: int = 0
    text: str | None = None

    def frame(self, api: Source, product: str) -> str:
        if self.text is not None:
            return self.text
        assert self.kind is not None
        return _PRESETS[api][self.kind].replace("{product}", product)


@dataclass(frozen=True)
class Skip:
    count: int
    after: int = 0


@dataclass(frozen=True)
class RateLimit:
    burst: int


@dataclass(frozen=True)
class Reject:
    product: str


@dataclass(frozen=True)
class Refuse:
    status: int


@dataclass(frozen=True)
class Mute:
    """A subscription lost without a word: no ack, no error, no data."""

    channel: str


Fault = Drop | Close | Silence | Inject | Skip | RateLimit | Reject | Refuse | Mute
Triggered = Drop | Close | Silence | Inject | Skip
"""Faults that fire at a point of the stream."""
Script = Sequence[Sequence[Fault]]

_PRESETS: Final[dict[Source, dict[InjectKind, str]]] = {
    "futures": {
        "malformed": '{"feed":"ticker","product_id":"{product}","bid":644',
        "schema": (
            '{"feed":"trade","product_id":"{product}","side":"buy","type":"fill",'
            '"time":1786046338116,"qty":"lots","price":64401.0,"seq":1}'
        ),
        "alert": '{"event":"alert","message":"replay fault: an injected alert"}',
        "error": '{"event":"error","message":"Json Error"}',
    },
    "spot": {
        "malformed": '{"channel":"trade","type":"update","data":[{',
        "schema": (
            '{"channel":"ticker","type":"update","data":[{"symbol":"{product}",'
            '"bid":"x","bid_qty":1.0,"ask":1.0,"ask_qty":1.0}]}'
        ),
        "alert": '{"Error":"replay fault: an injected alert"}',
        "error": '{"Error":"replay fault: an injected error"}',
    },
}


def parse_script(text: str) -> list[tuple[Fault, ...]]:
    """The text form above → one tuple of faults per connection; ValueError names the
    piece that is wrong."""
    script: list[tuple[Fault, ...]] = []
    for raw in text.split("|"):
        part, repeat = raw.strip(), 1
        if "*" in part:
            body, _, times = part.rpartition("*")
            repeat = _number(times, f"repeat count in {part!r}", int, 1)
            part = body.strip()
        faults = () if part in ("", "ok") else tuple(_fault(f.strip()) for f in part.split("+"))
        script += [faults] * repeat
    return script


def _fault(text: str) -> Fault:
    spec, _, after_text = text.partition("@")
    name, _, arg = spec.partition(":")
    after = _number(after_text, f"@ in {text!r}", int, 0) if after_text else 0
    if name in ("rate-limit", "reject", "refuse", "mute") and after_text:
        raise ValueError(f"fault {text!r}: {name} applies to the whole connection; drop '@'")
    match name:
        case "drop":
            return Drop(after)
        case "close":
            return Close(_number(arg, f"close code in {text!r}", int, 1000), after)
        case "silence":
            seconds = _number(arg, f"seconds in {text!r}", float, 0) if arg else None
            return Silence(after, seconds)
        case "inject":
            if arg not in INJECT_KINDS:
                raise ValueError(f"fault {text!r}: inject one of {', '.join(INJECT_KINDS)}")
            return Inject(arg, after)
        case "skip":
            return Skip(_number(arg, f"count in {text!r}", int, 1), after)
        case "rate-limit":
            return RateLimit(_number(arg, f"burst in {text!r}", int, 0))
        case "reject":
            if not arg:
                raise ValueError(f"fault {text!r}: name the product, e.g. reject:PF_XBTUSD")
            return Reject(arg)
        case "refuse":
            return Refuse(_number(arg, f"HTTP status in {text!r}", int, 100))
        case "mute":
            if arg not in ("ticker", "trade"):
                raise ValueError(f"fault {text!r}: mute ticker or trade")
            return Mute(arg)
    raise ValueError(
        f"unknown fault {text!r}; known: drop, close, silence, inject, skip, rate-limit,"
        " reject, refuse, mute"
    )


def _number(text: str, what: str, kind: type[_N], minimum: _N) -> _N:
    try:
        value = kind(text)
    except ValueError:
        raise ValueError(f"{what}: got {text!r}; expected a number >= {minimum}") from None
    if value < minimum:
        raise ValueError(f"{what}: got {text!r}; expected a number >= {minimum}")
    return value
