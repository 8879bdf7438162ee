"""Configuration: defaults, resolution of paths, and errors that name file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from thumbd.config import ConfigError, load_config, to_toml


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "thumbd.toml"
    p.write_text(text)
    return p


def test_defaults_resolve_against_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    c = load_config(None)
    assert c.paths.incoming == tmp_path / "incoming"
    assert c.paths.outgoing == tmp_path / "outgoing"
    assert c.state_db == tmp_path / ".thumbd" / "thumbd.db"
    assert c.thumbnails.widths == (200, 64, 32)
    assert c.thumbnails.quality == 85
    assert c.resize.max_tasks_per_child == 100
    assert c.daemon.shutdown_timeout == 30


def test_relative_paths_resolve_against_the_files_folder(tmp_path: Path) -> None:
    sub = tmp_path / "etc"
    sub.mkdir()
    c = load_config(write(sub, '[paths]\nincoming = "../in"\noutgoing = "/srv/out"\n'))
    assert c.paths.incoming == tmp_path / "in"
    assert c.paths.outgoing == Path("/srv/out")
    assert c.paths.state == sub / ".thumbd"


def test_the_documented_example_is_valid_and_matches_the_defaults() -> None:
    example = Path(__file__).resolve().parent.parent / "etc" / "thumbd.toml"
    c = load_config(example)
    defaults = load_config(None)
    assert c.thumbnails == defaults.thumbnails
    assert c.watch == defaults.watch
    assert c.daemon == defaults.daemon


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[thumbnails]\nwidht = [1]\n", "unknown key [thumbnails] widht"),
        ("[thumbnail]\nwidths = [1]\n", "unknown key 'thumbnail'"),
        ('[thumbnails]\nwidths = [200, "x"]\n', "[thumbnails] widths: expected a list of integers"),
        ("[thumbnails]\nwidths = []\n", "[thumbnails] widths: expected a non-empty list"),
        ("[thumbnails]\nwidths = [64, 64]\n", "distinct"),
        ("[thumbnails]\nquality = 0\n", "[thumbnails] quality: expected an integer from 1 to 100"),
        ("[resize]\nworkers = 0\n", "[resize] workers: expected a number greater than 0"),
        ('[thumbnails]\non_delete = "purge"\n', '[thumbnails] on_delete: expected "keep" or'),
        ("[resize]\nmax_memory_mb = -1\n", "[resize] max_memory_mb: expected a number of 0"),
        ("[resize]\nmax_file_bytes = 0\n", "[resize] max_file_bytes: expected a number greater"),
        ("[resize]\nworkers = true\n", "[resize] workers: expected an integer"),
        ('[watch]\nsettle_seconds = "soon"\n', "[watch] settle_seconds: expected a number"),
        ("[watch]\npolling = 1\n", "[watch] polling: expected true or false"),
        ('[paths]\nincoming = ""\n', "[paths] incoming: expected a path"),
        ("paths = 3\n", "[paths]: expected a table"),
        ("[watch\n", "not valid TOML"),
    ],
)
def test_errors_name_the_file_and_the_key(tmp_path: Path, text: str, expected: str) -> None:
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(p) in str(e.value)
    assert expected in str(e.value)


def test_a_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(tmp_path / "nope.toml")


def test_effective_configuration_round_trips(tmp_path: Path) -> None:
    c = load_config(write(tmp_path, '[thumbnails]\nwidths = [300]\n[watch]\nignore = ["*.raw"]\n'))
    again = load_config(write(tmp_path, to_toml(c)))
    assert again == c
