"""The ``KrakenFeed`` custom resource: its identity and its spec model.

``KrakenFeedSpec`` is the single source of the CRD's OpenAPI schema (the chart's
CRD is generated from it) and of manifest validation in the local runtime.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta

CRD_GROUP: Final = "krakenfeed.io"
CRD_VERSION: Final = "v1alpha1"
CRD_KIND: Final = "KrakenFeed"
CRD_PLURAL: Final = "krakenfeeds"
CRD_SINGULAR: Final = "krakenfeed"
CRD_SHORT_NAMES: Final = ("kf",)
API_VERSION: Final = f"{CRD_GROUP}/{CRD_VERSION}"

Api = Literal["futures", "spot"]
Channel = Literal["ticker", "trade"]

_PRODUCT_PATTERNS: Final[dict[str, re.Pattern[str]]] = {
    "futures": re.compile(r"^[A-Z0-9]+(_[A-Z0-9]+)+$"),
    "spot": re.compile(r"^[A-Z0-9]+/[A-Z0-9]+$"),
}
_PRODUCT_EXAMPLES: Final = {"futures": "PF_XBTUSD", "spot": "BTC/USD"}


def product_id_problem(api: str, product: str) -> str | None:
    """Why ``product`` cannot be a product id of ``api``, or None when it can."""
    if not _PRODUCT_PATTERNS[api].match(product):
        return f"{product!r} is not a {api} product id (expected the form {_PRODUCT_EXAMPLES[api]})"
    return None


ProductId = Annotated[
    str,
    Meta(
        pattern=r"^[A-Z0-9]+([_/][A-Z0-9]+)+$",
        description="Product id exactly as Kraken spells it: PF_XBTUSD (futures), BTC/USD (spot)",
    ),
]


class SourceSpec(
    msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True, rename="camel"
):
    """One Kraken WebSocket connection; each source runs as one ingest worker."""

    api: Annotated[Api, Meta(description="Kraken API: futures (v1) or spot (v2)")]
    products: Annotated[
        list[ProductId],
        Meta(min_length=1, max_length=100, description="Products to subscribe to"),
    ]
    channels: Annotated[
        list[Channel],
        Meta(min_length=1, description="Channels to subscribe to for every product"),
    ] = msgspec.field(default_factory=lambda: ["ticker", "trade"])
    url: (
        Annotated[
            str,
            Meta(
                pattern=r"^wss?://",
                description="WebSocket URL; defaults to Kraken's public endpoint for the api",
            ),
        ]
        | None
    ) = None

    def __post_init__(self) -> None:
        for index, product in enumerate(self.products):
            problem = product_id_problem(self.api, product)
            if problem:
                raise ValueError(f"products[{index}] {problem}")
        for name, values in (("products", self.products), ("channels", self.channels)):
            if len(set(values)) != len(values):
                raise ValueError(f"{name} lists a value twice: {values}")


class KrakenFeedSpec(
    msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True, rename="camel"
):
    """Desired state of a KrakenFeed: what to read from Kraken and where it goes."""

    sources: Annotated[
        list[SourceSpec],
        Meta(min_length=1, max_length=8, description="Kraken connections feeding this feed"),
    ]

    def __post_init__(self) -> None:
        apis = [source.api for source in self.sources]
        for api in set(apis):
            if apis.count(api) > 1:
                raise ValueError(
                    f"sources lists api {api!r} {apis.count(api)} times; "
                    "merge its products into one source"
                )


class SpecError(ValueError):
    """A manifest failed validation; the message names the offending field."""


def parse_spec(obj: Any) -> KrakenFeedSpec:
    """Validate a decoded ``spec`` mapping; errors name the field as ``spec.<path>``."""
    try:
        return msgspec.convert(obj, KrakenFeedSpec)
    except msgspec.ValidationError as exc:
        message = str(exc)
        if " - at `$" not in message:
            message += " - at `$`"
        raise SpecError(message.replace("`$", "`spec")) from None
