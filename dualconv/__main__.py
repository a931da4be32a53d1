"""``python -m dualconv``: the command line (see dualconv.cli)."""
from .cli import main

raise SystemExit(main())
