"""``python -m buzon.loadgen``: the same as ``buzon-load``."""

import sys

from buzon.loadgen.cli import main

sys.exit(main())
