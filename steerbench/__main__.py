"""``python -m steerbench`` is the ``steerbench`` command."""

import sys

from steerbench.cli import main

sys.exit(main())
