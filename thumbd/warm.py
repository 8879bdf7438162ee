"""Imported once by the workers' fork server (executor.PRELOAD), so that every worker starts warm.

Pillow imports its format plugins (about 40 modules) the first time anything opens a file:
`Image.init()`, about 0.1 s. A fresh worker would pay that again every `max_tasks_per_child`
files; done here, in the fork server, every worker inherits the plugins already imported.
"""

from __future__ import annotations

from PIL import Image

import thumbd.render  # noqa: F401  (the task function and everything it imports)

Image.init()
