"""`python -m dtp.bench ...`: the older spelling of `dtp bench ...`."""

import sys

from ..cli import main

sys.exit(main(["bench", *sys.argv[1:]]))
