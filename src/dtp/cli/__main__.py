"""`python -m dtp.cli ...`: the same as `dtp ...`."""

import sys

from . import main

sys.exit(main())
