"""``python -m ppgen`` runs the command line (also under ``torchrun``)."""

import sys

from ppgen.cli import main

sys.exit(main())
