"""`python -m thumbd` is the same program as the `thumbd` script."""

import sys

from thumbd.cli import main

sys.exit(main())
