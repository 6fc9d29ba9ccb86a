import sys

from benchmarks import slice_throughput  # noqa: F401  (registers its benchmark)
from benchmarks.runner import run, write_results

write_results(run(sys.argv[1:]))
