import sys

from benchmarks import ingest_throughput, slice_throughput  # noqa: F401  (register benchmarks)
from benchmarks.runner import run, write_results

write_results(run(sys.argv[1:]))
