"""`python -m orchestrator.cli ...` is `ovault ...`."""
import sys

from . import main

sys.exit(main())
