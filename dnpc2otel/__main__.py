"""`python -m dnpc2otel` is the `dnpc2otel` command."""

import sys

from .cli import main

sys.exit(main())
