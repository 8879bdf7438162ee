"""Configuration: each value check's bounds, both sides, and the whole message it gives."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest

from thumbd.config import ConfigError, _convert, _name, differences, load_config


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "thumbd.toml"
    p.write_text(text)
    return p


def error(tmp_path: Path, text: str) -> str:
    """The message loading `text` gives, after the file's name it starts with."""
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    message = str(e.value)
    assert message.startswith(f"{p}: ")
    return message.removeprefix(f"{p}: ")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[resize]\nworkers = 0\n", "[resize] workers: expected a number greater than 0, got 0"),
        (
            "[resize]\nmax_memory_mb = -1\n",
            "[resize] max_memory_mb: expected a number of 0 or more, got -1",
        ),
        (
            "[resize]\ntimeout = 0\n",
            "[resize] timeout: expected a number of seconds above 0, at most 1000000, got 0",
        ),
        (
            "[resize]\ntimeout = 1000000.5\n",
            "[resize] timeout: expected a number of seconds above 0, at most 1000000, got"
            " 1000000.5",
        ),
        (
            "[watch]\nquiet_seconds = -0.5\n",
            "[watch] quiet_seconds: expected a number of seconds from 0 to 1000000, got -0.5",
        ),
        (
            "[watch]\nsettle_seconds = 1000001\n",
            "[watch] settle_seconds: expected a number of seconds from 0 to 1000000, got 1000001",
        ),
        (
            "[thumbnails]\nwidths = [0]\n",
            "[thumbnails] widths: expected a list of distinct widths between 1 and 10000, got [0]",
        ),
        (
            "[thumbnails]\nwidths = [-1]\n",
            "[thumbnails] widths: expected a list of distinct widths between 1 and 10000, got [-1]",
        ),
        (
            "[thumbnails]\nwidths = [200, 10001]\n",
            "[thumbnails] widths: expected a list of distinct widths between 1 and 10000,"
            " got [200, 10001]",
        ),
        (
            "[thumbnails]\nquality = 101\n",
            "[thumbnails] quality: expected an integer from 1 to 100, got 101",
        ),
        (
            "[thumbnails]\navif_quality = 0\n",
            "[thumbnails] avif_quality: expected an integer from 1 to 100, got 0",
        ),
        (
            '[thumbnails]\nformat = "gif"\n',
            '[thumbnails] format: expected one of "auto", "jpeg", "png", "webp", "avif",'
            " got 'gif'",
        ),
        (
            '[thumbnails]\nkeep_metadata = ["all"]\n',
            "[thumbnails] keep_metadata: expected a list of: copyright, artist, datetime,"
            " camera, gps, xmp, comment, got ['all']",
        ),
        (
            '[thumbnails]\non_delete = "purge"\n',
            '[thumbnails] on_delete: expected "keep" or "remove", got \'purge\'',
        ),
        (
            '[thumbnails]\nlive_photos = "video"\n',
            '[thumbnails] live_photos: expected one of "still", "both", got \'video\'',
        ),
        (
            '[log]\nlevel = "verbose"\n',
            '[log] level: expected one of "debug", "info", "warning", "error", got \'verbose\'',
        ),
        ('[log]\nformat = "xml"\n', '[log] format: expected one of "text", "json", got \'xml\''),
        ("[log]\nfile = 3\n", "[log] file: expected a string, got 3"),
        ('[watch]\nignore = "*.raw"\n', "[watch] ignore: expected a list of strings, got '*.raw'"),
        ("[watch]\nignore = [1]\n", "[watch] ignore: expected a list of strings, got [1]"),
        ("[executor]\nscheduler_file = 3\n", "[executor] scheduler_file: expected Path, got 3"),
        (
            '[executor]\nkind = "ray"\n',
            '[executor] kind: expected one of "local", "dask", got \'ray\'',
        ),
        (
            '[executor]\naddress = "h:8786"\n',
            "[executor] address: expected a scheduler address such as"
            " \"tcp://10.0.0.5:8786\", got 'h:8786'",
        ),
        (
            '[executor]\nkind = "dask"\n',
            '[executor]: kind = "dask" needs address = "tcp://HOST:8786" or scheduler_file',
        ),
        (
            '[executor]\naddress = "tcp://h:8786"\nscheduler_file = "s.json"\n',
            "[executor]: address and scheduler_file: set one, not both",
        ),
        (
            '[download]\nuser_agent = ""\n',
            "[download] user_agent: expected a non-empty string, got ''",
        ),
        (
            "source = 'x.toml'\n",
            "unknown key 'source'; expected one of: daemon, download, executor, log,"
            " metrics, paths, resize, thumbnails, watch",
        ),
        (
            "workers = 2\n",
            "unknown key 'workers'; expected one of: daemon, download, executor, log,"
            " metrics, paths, resize, thumbnails, watch",
        ),
    ],
)
def test_each_error_message_whole(tmp_path: Path, text: str, message: str) -> None:
    assert error(tmp_path, text) == message


SIZE = '[[thumbnails.size]]\nname = "a"\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            SIZE + "width = 0\n",
            "[thumbnails.size] #1 width: expected an integer from 1 to 10000, got 0",
        ),
        (
            SIZE + "width = 10001\n",
            "[thumbnails.size] #1 width: expected an integer from 1 to 10000, got 10001",
        ),
        (
            SIZE + "width = 9\nheight = -1\n",
            "[thumbnails.size] #1 height: expected an integer from 0 (no limit) to 10000, got -1",
        ),
        (
            SIZE + "width = 9\nheight = 10001\n",
            "[thumbnails.size] #1 height: expected an integer from 0 (no limit) to 10000,"
            " got 10001",
        ),
        (
            SIZE + 'width = 9\nmode = "cover"\nheight = 0\n',
            '[thumbnails.size] #1: mode "cover" needs a height',
        ),
        (
            '[[thumbnails.size]]\nname = "a b"\nwidth = 9\n',
            "[thumbnails.size] #1 name: expected a name of letters, digits, - and _ (not"
            " only digits), got 'a b'",
        ),
        (
            f'[[thumbnails.size]]\nname = "{"a" * 41}"\nwidth = 9\n',
            f"[thumbnails.size] #1 name: expected a name of letters, digits, - and _ (not"
            f" only digits), got '{'a' * 41}'",
        ),
    ],
)
def test_each_named_size_error_message_whole(tmp_path: Path, text: str, message: str) -> None:
    assert error(tmp_path, text) == message


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("resize", "workers", 1),
        ("resize", "max_memory_mb", 0),
        ("resize", "timeout", 0.5),
        ("resize", "timeout", 1_000_000.0),
        ("watch", "quiet_seconds", 0.0),
        ("watch", "settle_seconds", 1_000_000.0),
        ("download", "retries", 0),
        ("download", "max_redirects", 0),
        ("executor", "retries", 0),
        ("thumbnails", "quality", 1),
        ("thumbnails", "quality", 100),
        ("thumbnails", "widths", (1,)),
        ("thumbnails", "widths", (10_000, 1)),
        ("thumbnails", "on_delete", "remove"),
        ("thumbnails", "live_photos", "both"),
        ("log", "level", "debug"),
        ("log", "level", "error"),
        ("download", "user_agent", "MyBot/1.0 (+https://example.com)"),  # kept as written
        ("thumbnails", "background", "#FFAA00"),
        ("metrics", "listen", "127.0.0.1:9188"),
        ("metrics", "listen", "[::1]:65535"),
        ("metrics", "listen", "X:1"),
        ("metrics", "listen", "localhost:0"),
    ],
)
def test_values_at_the_bounds_are_taken(
    tmp_path: Path, section: str, key: str, value: object
) -> None:
    shown = repr(list(value)) if isinstance(value, tuple) else repr(value).replace("'", '"')
    c = load_config(write(tmp_path, f"[{section}]\n{key} = {shown}\n"))
    assert getattr(getattr(c, section), key) == value


LISTEN = 'an address as "host:port" (e.g. "127.0.0.1:9188"), or "" for off'


@pytest.mark.parametrize(
    "listen", ["9188", ":9188", "[]:9188", "h:", "h:http", "h:-1", "h:65536", "h :9 188"]
)
def test_a_metrics_address_needs_a_host_and_a_port(tmp_path: Path, listen: str) -> None:
    message = error(tmp_path, f'[metrics]\nlisten = "{listen}"\n')
    assert message == f"[metrics] listen: expected {LISTEN}, got {listen!r}"


def test_named_sizes_take_any_case_and_every_bound(tmp_path: Path) -> None:
    text = (
        '[[thumbnails.size]]\nname = "Card_2-x"\nwidth = 10000\nheight = 10000\n'
        f'[[thumbnails.size]]\nname = "{"z" * 40}"\nwidth = 1\nheight = 0\n'
    )
    sizes = load_config(write(tmp_path, text)).thumbnails.size
    assert [(s.name, s.width, s.height) for s in sizes] == [
        ("Card_2-x", 10_000, 10_000),
        ("z" * 40, 1, 0),
    ]


def test_a_log_file_resolves_against_the_files_folder(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    c = load_config(write(tmp_path / "etc", '[log]\nfile = "../logs/thumbd.log"\n'))
    assert c.log.file == str(tmp_path / "logs" / "thumbd.log")
    assert load_config(write(tmp_path, "[log]\n")).log.file == ""  # stderr
    assert load_config(write(tmp_path, '[log]\nfile = "/var/log/t.log"\n')).log.file == (
        "/var/log/t.log"
    )


def test_a_file_that_cannot_be_read_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path)
    assert str(e.value) == f"{tmp_path}: cannot read: Is a directory"


def test_the_root_folder_holds_every_other(tmp_path: Path) -> None:
    text = f'[paths]\nincoming = "/"\noutgoing = "{tmp_path / "out"}"\n'
    assert error(tmp_path, text) == (
        "[paths] outgoing: must not be inside the incoming folder (/): thumbnails would be taken"
        " as new images"
    )


def test_conversions_of_every_kind_of_field() -> None:
    assert _convert(tuple[float, ...], [1, 2.5]) == ((1.0, 2.5), None)
    assert _convert(tuple[float, ...], ["x"]) == (None, "a list of numbers")
    assert _convert(tuple[bool, ...], [1]) == (None, "a list of booleans")
    assert _convert(tuple[int, ...], 3) == (None, "a list of integers")
    assert _convert(Path | None, "p") == (Path("p"), None)
    assert _convert(int | str, 2.5) == (None, "integers or strings")
    assert _convert(int | str, "s") == ("s", None)
    assert _convert(int | None | str, "s") == ("s", None)  # None is skipped wherever it is
    with pytest.raises(TypeError) as e:
        _convert(complex, 1)
    assert str(e.value) == "thumbd.config has no conversion for <class 'complex'>"
    assert _name(Path) == "Path"
    assert _name(typing.ForwardRef("Later")) == "ForwardRef('Later')"


def test_differences_list_every_changed_key_of_every_section() -> None:
    old = load_config(None)
    new = dataclasses.replace(
        old,
        thumbnails=dataclasses.replace(old.thumbnails, widths=(300,)),
        watch=dataclasses.replace(old.watch, quiet_seconds=5.0),
        log=dataclasses.replace(old.log, level="debug", format="json"),
        source=Path("/etc/thumbd.toml"),  # where it came from is not a key
    )
    assert differences(old, new) == [
        "[thumbnails] widths",
        "[watch] quiet_seconds",
        "[log] level",
        "[log] format",
    ]
    assert differences(new, new) == []
