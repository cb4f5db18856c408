"""`python -m nexa_forge ...` is the `nexa-forge` command line."""
import sys

from .cli import main

sys.exit(main())
