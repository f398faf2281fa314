"""``python -m benchmark.table RESULTS_DIR``: Table 1 of the runs under RESULTS_DIR."""

import sys

from benchmark.table.aggregate import main

sys.exit(main())
