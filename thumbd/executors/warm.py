"""Imported once by the workers' fork server (executor.PRELOAD), so that every worker starts warm.

Pillow imports its format plugins (about 40 modules) the first time anything opens a file:
`Image.init()`, about 0.1 s. A fresh worker would pay that again every `max_tasks_per_child`
files; done here, in the fork server, every worker inherits the plugins already imported. The
same goes for the video and RAW decoders (PyAV and rawpy, with numpy, take about as long).

The fork server also ignores SIGTERM (multiprocessing only protects it from SIGINT): a SIGTERM
sent to the daemon's whole process group must not kill it (see executor.ProcessPool._supervise).
It exits by itself once the daemon is gone.
"""

from __future__ import annotations

import signal

from PIL import Image

# The decoders a camera roll needs, PyAV and LibRaw with them (~0.2 s), and the task function.
import thumbd.render.decoders.heif
import thumbd.render.decoders.raw
import thumbd.render.decoders.video
import thumbd.render.pipeline  # noqa: F401  (the task function and everything it imports)

signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal.signal(signal.SIGHUP, signal.SIG_IGN)
Image.init()
