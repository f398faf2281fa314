"""``python -m benchmark.speed [key=value ...]``: the speed benchmark (``make bench``)."""

import sys

from benchmark.speed.bench import main

sys.exit(main(sys.argv[1:]))
