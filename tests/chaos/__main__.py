"""`python -m tests.chaos`: see tests/chaos/driver.py."""

import sys

from tests.chaos.driver import main

sys.exit(main())
