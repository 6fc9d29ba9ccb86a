import sys
import warnings

warnings.filterwarnings("ignore", message="The httpx module is deprecated")

from benchmarks import slice_throughput  # noqa: E402, F401  (registers its benchmark)
from benchmarks.runner import run, write_results  # noqa: E402

write_results(run(sys.argv[1:]))
