"""`python -m microgpt` = the `microgpt` command."""

import sys

from .cli import main

sys.exit(main())
