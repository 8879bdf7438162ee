"""The flock-guarded pidfile: refuses a live holder, replaces a stale file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from thumbd.service.pidfile import AlreadyRunning, PidFile, holder

HOLD = """
import sys, time
from pathlib import Path
from thumbd.service.pidfile import PidFile
with PidFile(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_live_holder_is_refused_and_a_dead_ones_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "thumbd.pid"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
        assert holder(path) == proc.pid
        with pytest.raises(AlreadyRunning, match=f"pid {proc.pid}"), PidFile(path):
            pass
    finally:
        proc.kill()  # like kill -9: the file stays, the lock goes with the process
        proc.wait()
    assert path.read_text().strip() == str(proc.pid)
    assert holder(path) is None
    with PidFile(path) as pidfile:
        assert pidfile.stale == proc.pid
        assert path.read_text() == f"{os.getpid()}\n"
        assert holder(path) == os.getpid()
    assert not path.exists()


def test_holder_of_a_missing_file_is_none(tmp_path: Path) -> None:
    assert holder(tmp_path / "nothing.pid") is None
