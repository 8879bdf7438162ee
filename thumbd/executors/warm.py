"""Imported once by the workers' fork server (executor.PRELOAD), so that every worker starts warm.

Pillow imports its format plugins (about 40 modules) the first time anything opens a file:
`Image.init()`, about 0.1 s. A fresh worker would pay that again every `max_tasks_per_child`
files; done here, in the fork server, every worker inherits the plugins already imported. The
video and RAW decoders are not preloaded: PyAV, rawpy and numpy map hundreds of MB of address
space, which `[resize] max_memory_mb` (RLIMIT_AS) counts in every worker; a worker imports them
with its first clip or RAW instead (about 0.2 s, once per `max_tasks_per_child` files).

The fork server also ignores SIGTERM (multiprocessing only protects it from SIGINT): a SIGTERM
sent to the daemon's whole process group must not kill it (see executor.ProcessPool._supervise).
It exits by itself once the daemon is gone.
"""

from __future__ import annotations

import signal

from PIL import Image

import thumbd.render.decoders.heif
import thumbd.render.pipeline  # noqa: F401  (the task function and everything it imports)

signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal.signal(signal.SIGHUP, signal.SIG_IGN)
Image.init()
