"""``python -m vaekit`` is the ``vaekit`` command."""

import sys

from vaekit.cli import main

sys.exit(main())
