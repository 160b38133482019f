"""`python -m dtp.bench ...`: the same as `dtp bench ...`."""

from .cli import main

raise SystemExit(main())
