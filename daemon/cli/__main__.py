"""`python -m daemon.cli`: the `framewatch` command."""

import sys

from daemon.cli import main

sys.exit(main())
