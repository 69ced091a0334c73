"""`python -m mlvigil ...`: the same command line as `mlvigil ...` (mlvigil/cli.py)."""

import sys

from mlvigil.cli import main

sys.exit(main())
