"""The operator's own settings: flags, each also an environment variable.

The flags are the contracts' ``OPERATOR_OPTIONS``; the flag wins over its
``KRAKENFEED_*`` variable, which wins over the default.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from krakenfeed.contracts import OPERATOR_OPTIONS, Option, env_var

ALL_NAMESPACES = "*"


@dataclass(frozen=True)
class OperatorConfig:
    watch_namespaces: tuple[str, ...]
    liveness_port: int
    metrics_port: int
    peering: str
    worker_image: str
    resync_interval_s: float
    log_level: str

    @property
    def clusterwide(self) -> bool:
        return ALL_NAMESPACES in self.watch_namespaces

    @property
    def liveness_endpoint(self) -> str:
        return f"http://0.0.0.0:{self.liveness_port}/healthz"


def _convert(option: Option, text: str) -> object:
    if option.is_list:
        return tuple(value.strip() for value in text.split(",") if value.strip())
    if option.value_type == "str":
        return text
    number = int(text) if option.value_type == "int" else float(text)
    if option.minimum is not None and number < option.minimum:
        raise ValueError(f"must be >= {option.minimum:g}")
    return number


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="krakenfeed operator",
        description=(
            "Run KrakenFeed resources as workers: a kopf operator that creates, observes"
            " and heals each feed's ConfigMap, Deployments and KafkaTopics."
        ),
        epilog=f"Every --some-flag may also be set as {env_var('--some-flag')}.",
    )
    log_level = env_var("--log-level")
    parser.add_argument(
        "--log-level",
        default=environ.get(log_level, "INFO"),
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help=f"logging level [env {log_level}]",
    )
    for option in OPERATOR_OPTIONS:
        from_env = environ.get(option.env)
        origin = f" (from {option.env})" if from_env is not None else ""

        def convert(text: str, option: Option = option, origin: str = origin) -> object:
            try:
                return _convert(option, text)
            except ValueError as exc:
                raise argparse.ArgumentTypeError(f"got {text!r}{origin}: {exc}") from None

        convert.__name__ = option.dest
        parser.add_argument(
            option.flag,
            dest=option.dest,
            default=from_env if from_env is not None else option.default,
            type=convert,
            help=f"{option.help} [env {option.env}] (default: {option.default!r})",
        )
    return parser


def parse_config(argv: Sequence[str], environ: Mapping[str, str]) -> OperatorConfig:
    # argparse passes string defaults through ``type`` too, so env values are checked.
    return OperatorConfig(**vars(build_parser(environ).parse_args(argv)))


def config_from_env(environ: Mapping[str, str]) -> OperatorConfig:
    """The configuration when kopf's own CLI runs the handlers (as in tests)."""
    return parse_config([], environ)
