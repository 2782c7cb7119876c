"""`python -m edgefleet.controller.cli`: the same as the `edgefleet` command."""
import sys

from . import main

sys.exit(main())
