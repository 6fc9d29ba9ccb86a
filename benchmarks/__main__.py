import sys

from benchmarks import (  # noqa: F401  (each module registers its benchmark)
    detector_throughput,
    end_to_end,
    ingest_throughput,
    operator_reconcile,
    reconnect_recovery,
    slice_throughput,
    tracing_overhead,
)
from benchmarks.nab import run as nab  # noqa: F401
from benchmarks.runner import run, write_results

write_results(run(sys.argv[1:]))
