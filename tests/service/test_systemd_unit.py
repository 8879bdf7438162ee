"""The systemd unit passes `systemd-analyze verify` and rates 2.0 or better for security.

Both run offline: no running systemd is needed. `verify` checks that ExecStart= exists, so it
runs on a copy whose ExecStart points at this checkout's thumbd instead of /opt/thumbd.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

UNIT = ROOT / "systemd" / "thumbd.service"
INSTALLED = "/opt/thumbd/venv/bin/thumbd"


def analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip(reason="systemd-analyze is missing (`make system-deps` installs it as root)")
    return tool


def local_unit(tmp_path: Path) -> Path:
    thumbd = Path(sys.executable).parent / "thumbd"
    assert thumbd.exists(), f"{thumbd}: install thumbd into this venv (make test does)"
    text = UNIT.read_text()
    assert f"ExecStart={INSTALLED} run " in text
    copy = tmp_path / "thumbd.service"
    copy.write_text(text.replace(INSTALLED, str(thumbd)))
    return copy


def test_unit_verifies_cleanly(tmp_path: Path) -> None:
    r = subprocess.run(
        [analyze(), "verify", str(local_unit(tmp_path))], capture_output=True, text=True
    )
    # verify exits 0 on unknown keys and typos, with a warning: any output is a failure.
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r.stdout + r.stderr


def test_unit_security_exposure_is_at_most_2(tmp_path: Path) -> None:
    r = subprocess.run(
        [analyze(), "security", "--offline=yes", str(local_unit(tmp_path))],
        capture_output=True,
        text=True,
    )
    found = re.search(r"Overall exposure level for thumbd\.service: (\d+\.\d+)", r.stdout)
    assert found, r.stdout + r.stderr
    assert float(found[1]) <= 2.0, r.stdout


def test_unit_has_what_the_daemon_relies_on() -> None:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    assert settings["Type"] == ["notify"]
    assert settings["ExecStart"][0].startswith(f"{INSTALLED} run ")  # no shell in between
    assert settings["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert settings["KillMode"] == ["mixed"] and settings["OOMPolicy"] == ["continue"]
    assert settings["Restart"] == ["on-failure"] and settings["WatchdogSec"]
    stop = int(settings["TimeoutStopSec"][0].rstrip("s"))
    assert stop > 30  # the default [daemon] shutdown_timeout
    families = settings["RestrictAddressFamilies"][0].split()
    assert set(families) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    # Per-worker limits call setrlimit: @resources must stay allowed.
    assert not any("@resources" in v for v in settings["SystemCallFilter"] if v.startswith("~"))
