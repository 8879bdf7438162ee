"""What must not happen: a failed file rendered again though it never changed, a removal that
follows a symlinked folder out of outgoing/. The real daemon on real folders; each test causes
the event that could wrongly start work, waits until the daemon has provably looked
(Daemon.looked()), and only then asserts that nothing was done."""

from __future__ import annotations

import io
import os
import signal
import subprocess
from pathlib import Path

from PIL import Image

from tests.conftest import Daemon, wait_until


def jpeg(size: tuple[int, int] = (300, 200)) -> bytes:
    buf = io.BytesIO()
    Image.linear_gradient("L").resize(size).convert("RGB").save(buf, "JPEG")
    return buf.getvalue()


def drop(daemon: Daemon, rel: str, data: bytes) -> Path:
    """Write beside incoming/ and rename in: the file arrives complete."""
    staged = daemon.tmp / "staged" / os.path.basename(rel)
    staged.parent.mkdir(exist_ok=True)
    staged.write_bytes(data)
    target = daemon.incoming / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    os.rename(staged, target)
    return target


def tries(daemon: Daemon, rel: str) -> tuple[int, int]:
    """How often the log says rel was rendered ("done") and failed."""
    log = daemon.read_log()
    return log.count(f"done {rel}:"), log.count(f"failed {rel}:")


def test_a_failed_file_touched_without_a_change_is_not_rendered_again(daemon: Daemon) -> None:
    daemon.write_config({"watch": {"rescan_interval": 1.0}})
    daemon.start()
    bad = drop(daemon, "bad.jpg", b"not a picture at all, though its name says so")
    daemon.recorded(failed=1)
    wait_until(lambda: tries(daemon, "bad.jpg") == (0, 1), 30, "the failure's log line")
    st = bad.stat()

    def unchanged(what: str) -> None:
        daemon.looked()
        assert tries(daemon, "bad.jpg") == (0, 1), what
        status = daemon.status()
        assert status["failed"] == 1, what
        assert [f["source"] for f in status["failures"]] == ["bad.jpg"], what

    with bad.open("r+b"):  # opened for writing and closed, nothing written: a close_write
        pass
    unchanged("opened for writing and closed")
    bad.chmod(0o600)  # its attributes only
    unchanged("chmod")
    subprocess.run(["touch", str(bad)], check=True)  # a new mtime, then its old one back
    os.utime(bad, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert bad.stat().st_mtime_ns == st.st_mtime_ns
    unchanged("touched, then set back to its old mtime")
    scans = daemon.read_log().count("scan of")
    wait_until(lambda: daemon.read_log().count("scan of") > scans + 1, 30, "two more rescans")
    unchanged("rescanned")
    daemon.send(signal.SIGHUP)  # a reload with nothing changed looks again too
    wait_until(lambda: "reload" in daemon.read_log(), 30, "the reload")
    unchanged("a reload")

    # The control: a real change is rendered (and fails again), so the waits above would
    # have seen a retry had there been one.
    bad.write_bytes(b"still not a picture, but other bytes")
    wait_until(lambda: tries(daemon, "bad.jpg") == (0, 2), 30, "the changed file's retry")
    assert daemon.stop() == 0


def test_removing_thumbnails_never_follows_a_symlinked_folder_in_outgoing(daemon: Daemon) -> None:
    daemon.write_config({"thumbnails": {"on_delete": "remove"}})
    daemon.start()
    drop(daemon, "sub/x.jpg", jpeg())
    drop(daemon, "sub/y.jpg", jpeg())
    drop(daemon, "stay.jpg", jpeg())  # an empty incoming/ would look unmounted to a scan
    wait_until(lambda: daemon.done("sub/x.jpg") and daemon.done("sub/y.jpg"), 30, "sub/")
    daemon.recorded(done=3)
    # outgoing/sub is swapped for a link to a folder outside, holding the very names x.jpg's
    # record lists: a removal that followed the link would delete them there.
    outside = daemon.tmp / "outside"
    os.rename(daemon.outgoing / "sub", outside)
    os.symlink(outside, daemon.outgoing / "sub")
    before = sorted(p.name for p in outside.iterdir())
    assert len(before) == 6

    (daemon.incoming / "sub" / "x.jpg").unlink()
    wait_until(lambda: "removed sub/x.jpg" in daemon.read_log(), 30, "the deletion")
    assert daemon.record("sub/x.jpg") is None  # forgotten, as on_delete = "remove" says
    assert sorted(p.name for p in outside.iterdir()) == before
    assert "not removing" in daemon.read_log() and "symbolic link" in daemon.read_log()

    # Deleted while the daemon is stopped: the start-up scan's removal is guarded as well.
    assert daemon.stop() == 0
    (daemon.incoming / "sub" / "y.jpg").unlink()
    daemon.start()
    wait_until(lambda: daemon.record("sub/y.jpg") is None, 30, "the scan to forget y.jpg")
    daemon.looked()
    assert sorted(p.name for p in outside.iterdir()) == before
    assert (daemon.outgoing / "sub").is_symlink()
    assert daemon.stop() == 0
