"""``python -m dtp.tinyvla.train``: the training command line (see dtp.tinyvla.train.arguments)."""

import sys

from .arguments import main

sys.exit(main())
