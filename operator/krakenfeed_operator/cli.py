"""``krakenfeed-operator`` (also reached as ``krakenfeed operator``).

Runs the kopf operator with the handlers of ``krakenfeed_operator.handlers``:
namespaces from ``--watch-namespaces`` (one, a list, or ``*`` for all), a
liveness endpoint at ``GET /healthz`` on ``--liveness-port``, and peering only
when ``--peering`` names a KopfPeering object.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from krakenfeed.contracts import env_var
from krakenfeed.telemetry import configure_logging, configure_tracing
from krakenfeed_operator.config import parse_config


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_config(sys.argv[1:] if argv is None else argv, os.environ)
    configure_logging(config.log_level)
    try:
        tracing = configure_tracing("krakenfeed-operator")
    except ValueError as exc:
        raise SystemExit(f"krakenfeed operator: {exc}") from None
    # The handlers size their resync timer from the environment when imported.
    os.environ[env_var("--resync-interval-s")] = str(config.resync_interval_s)
    import kopf

    import krakenfeed_operator.handlers  # noqa: F401  (registers the handlers)

    kopf.run(
        clusterwide=config.clusterwide,
        namespaces=() if config.clusterwide else config.watch_namespaces,
        liveness_endpoint=config.liveness_endpoint,
        standalone=not config.peering,
        peering_name=config.peering or None,
        memo=kopf.Memo(config=config, tracing=tracing),
    )
    if tracing:
        tracing.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
