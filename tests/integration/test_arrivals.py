"""How real writers fill incoming/: odd names, folders moved away, permissions fixed later.

Each test runs the real daemon as a subprocess on real folders and changes them with the same
system calls `cp`, `mv`, `rm` and `chmod` make.
"""

from __future__ import annotations

import os

from tests.conftest import Daemon, all_files, wait_until
from tests.integration.test_robustness import drop, jpeg_bytes


def test_names_that_are_not_utf8_are_skipped_with_a_warning_and_the_daemon_goes_on(
    daemon: Daemon,
) -> None:
    data = jpeg_bytes((300, 200))
    early = os.fsdecode(b"caf\xe9.jpg")  # Latin-1, from an old archive: found by the scan
    (daemon.incoming / early).write_bytes(data)
    folder = daemon.incoming / os.fsdecode(b"alb\xfcm")
    folder.mkdir()
    (folder / "x.jpg").write_bytes(data)
    daemon.start()
    late = os.fsdecode(b"late\xff.jpg")
    drop(daemon.incoming, [late, "good.jpg"], data)  # arrives while it runs: an event
    wait_until(lambda: daemon.done("good.jpg"), 30, "the file with a good name")
    (daemon.incoming / early).unlink()  # a deletion event for a name never recorded
    (daemon.incoming / late).rename(daemon.incoming / "late.jpg")  # renamed: now it is work
    wait_until(lambda: daemon.done("late.jpg"), 30, "the renamed file")
    assert daemon.proc is not None and daemon.proc.poll() is None, daemon.read_log()
    log = daemon.read_log()
    assert "Traceback" not in log
    for name in (r"caf\xe9.jpg", r"alb\xfcm", r"late\xff.jpg"):
        assert f"incoming/{name}: its name is not valid UTF-8" in log, log
    made = {p.relative_to(daemon.outgoing).as_posix() for p in all_files(daemon.outgoing)}
    assert made == {f"{s}_{w}.jpg" for s in ("good", "late") for w in (200, 64, 32)}
    status = daemon.status()
    assert status == {**status, "done": 2, "failed": 0, "pending": 0}
    assert daemon.stop() == 0
