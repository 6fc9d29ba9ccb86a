import sys

from krakenfeed.cli import main

sys.exit(main())
