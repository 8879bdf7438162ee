"""The service keys: [log] and [metrics], their checks, and what a reload reports as changed."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest

from thumbd.config import ConfigError, differences, load_config
from thumbd.service import logs, metrics


def test_log_and_metrics_defaults_and_resolution(tmp_path: Path) -> None:
    cfg = tmp_path / "t.toml"
    cfg.write_text('[log]\nfile = "logs/thumbd.log"\nformat = "json"\n')
    config = load_config(cfg)
    assert config.log.file == str(tmp_path / "logs" / "thumbd.log")
    assert config.log.level == "info" and config.metrics.listen == ""


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[log]\nlevel = "verbose"\n', "[log] level"),
        ('[log]\nformat = "xml"\n', "[log] format"),
        ('[metrics]\nlisten = "9188"\n', "[metrics] listen"),
        ('[metrics]\nlisten = "localhost:http"\n', "[metrics] listen"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    cfg = tmp_path / "t.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    assert str(e.value).startswith(f"{cfg}: {key}: expected ")


def test_ipv6_listen_is_accepted(tmp_path: Path) -> None:
    cfg = tmp_path / "t.toml"
    cfg.write_text('[metrics]\nlisten = "[::1]:9188"\n')
    assert load_config(cfg).metrics.listen == "[::1]:9188"


def test_differences_names_section_and_key() -> None:
    old = load_config(None)
    new = dataclasses.replace(
        old, thumbnails=dataclasses.replace(old.thumbnails, widths=(300,), quality=70)
    )
    assert differences(old, new) == ["[thumbnails] widths", "[thumbnails] quality"]
    assert differences(old, old) == []


def test_failure_reasons_map_to_a_small_fixed_label_set() -> None:
    assert metrics.reason_kind("too large: 1 pixels exceeds max_pixels 0") == "too_large"
    assert metrics.reason_kind("image file is truncated") == "corrupt"
    assert metrics.reason_kind("cannot identify image file (not one of: JPEG)") == "unsupported"
    assert metrics.reason_kind("timed out after 60 s") == "timeout"
    assert metrics.reason_kind("worker crashed (killed by SIGKILL)") == "crashed"
    assert metrics.reason_kind("something nobody foresaw /tmp/x") == "other"
    assert set(metrics.REASON_KINDS) >= {"corrupt", "other", "timeout"}


def test_json_lines_carry_extra_fields_and_exceptions(tmp_path: Path) -> None:
    cfg = tmp_path / "t.toml"
    cfg.write_text('[log]\nformat = "json"\nfile = "out.log"\nlevel = "warning"\n')
    level = logging.getLogger().level
    logs.configure(load_config(cfg).log)
    try:
        log = logging.getLogger("thumbd.test")
        log.info("not shown at level warning")
        log.warning("failed %s", "x.jpg", extra={"source": "x.jpg"})
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("it broke")
        # The loggers stay enabled at WARNING whatever the level: watchdog's overflow warning
        # must reach the watcher's filter.
        assert logging.getLogger("watchdog.observers.inotify").isEnabledFor(logging.WARNING)
    finally:
        logs.reset()
        logging.getLogger().setLevel(level)
    entries = [json.loads(line) for line in (tmp_path / "out.log").read_text().splitlines()]
    assert [e["message"] for e in entries] == ["failed x.jpg", "it broke"]
    assert entries[0]["source"] == "x.jpg" and entries[0]["level"] == "warning"
    assert entries[0]["logger"] == "thumbd.test" and entries[0]["thread"] == "MainThread"
    assert "ValueError: boom" in entries[1]["exception"]
