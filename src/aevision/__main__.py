"""``python -m aevision``: the same as the ``aevision`` command."""

import sys

from aevision.cli import main

sys.exit(main())
