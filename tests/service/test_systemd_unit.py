"""The systemd unit passes `systemd-analyze verify` and rates 2.0 or better for security.

Both run offline: no running systemd is needed. `verify` checks that ExecStart= exists, so it
runs on a copy whose ExecStart points at this checkout's thumbd instead of /opt/thumbd.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import ROOT

UNIT = ROOT / "systemd" / "thumbd.service"
VENV = "/opt/thumbd/venv"
INSTALLED = f"{VENV}/bin/thumbd"


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


def unit_settings(unit: Path) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_every_unit_runs_from_the_venv_the_readme_installs() -> None:
    readme = (ROOT / "README.md").read_text()
    assert f"python3 -m venv {VENV}" in readme
    units = sorted((ROOT / "systemd").glob("*.service"))
    assert len(units) == 3
    for unit in units:
        (exec_start,) = unit_settings(unit)["ExecStart"]
        assert exec_start.startswith(f"{VENV}/bin/"), unit.name
    worker = (ROOT / "systemd" / "thumbd-dask-worker.service").read_text()
    assert f"python3 -m venv {VENV} && {VENV}/bin/pip install" in worker  # its install comment
    assert "/opt/thumbd/bin/" not in readme + "".join(u.read_text() for u in units)


def test_the_readmes_service_paths_are_the_ones_the_unit_may_write() -> None:
    """README's example [paths] for the service lie inside what the unit lets thumbd write:
    ReadWritePaths= and its StateDirectory= (under /var/lib)."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Run as a service") :]
    block = re.search(r"```toml\n(.*?)```", section, re.S)
    assert block, "the service's [paths] example"
    paths = tomllib.loads(block[1])["paths"]
    settings = unit_settings(UNIT)
    writable = [p.lstrip("-") for p in settings["ReadWritePaths"]]
    state = f"/var/lib/{settings['StateDirectory'][0]}"
    for key in ("incoming", "outgoing"):
        assert any(paths[key].startswith(w + "/") for w in writable), (key, writable)
    assert paths["state"] == state
    assert f"ExecStart={INSTALLED} run -c /etc/thumbd/thumbd.toml" in UNIT.read_text()
