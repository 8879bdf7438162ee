"""The real daemon's workers: decoders' own output arrives as log records, never raw."""

from __future__ import annotations

import json

from tests import tiffs
from tests.conftest import Daemon


def test_json_logs_stay_json_with_hostile_tiffs(daemon: Daemon) -> None:
    daemon.write_config({"log": {"format": "json"}})
    daemon.start()
    tiffs.webp_tiff(daemon.incoming / "webp.tif")
    tiffs.bad_lzw_tiff(daemon.incoming / "lzw.tif")
    tiffs.short_exif_tiff(daemon.incoming / "exif.tif")
    status = daemon.recorded(failed=3)
    reasons = {f["source"]: f["reason"] for f in status["failures"]}
    assert "WEBP compression support is not configured" in reasons["webp.tif"], reasons
    assert "Using code not yet in table" in reasons["lzw.tif"], reasons
    assert daemon.stop() == 0
    lines = daemon.read_log().splitlines()
    records = [json.loads(line) for line in lines]  # every line on stderr is JSON
    said = {r["source"]: r["message"] for r in records if r.get("logger") == "thumbd.worker"}
    assert "WEBP compression support is not configured" in said["webp.tif"], said
    assert "Corrupt EXIF data" in said["exif.tif"], said
    assert all(r["level"] == "warning" for r in records if r.get("logger") == "thumbd.worker")
