"""``python -m patchpack.cli``: the ``patchpack`` command."""

import sys

from . import main

sys.exit(main())
