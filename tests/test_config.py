"""Configuration: defaults, resolution of paths, and errors that name file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from thumbd.commands.check import to_toml
from thumbd.config import ConfigError, load_config
from thumbd.render.pipeline import spec_from_config


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "thumbd.toml"
    p.write_text(text)
    return p


def assert_config_error(tmp_path: Path, text: str, expected: str) -> None:
    """Loading `text` (and building the render spec from it, as every command that renders
    does) fails with an error that names the file and says `expected`."""
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        spec_from_config(load_config(p))
    assert str(p) in str(e.value)
    assert expected in str(e.value)


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
    assert c.executor == defaults.executor
    assert c.download == defaults.download


def test_download_defaults() -> None:
    d = load_config(None).download
    assert (d.concurrency, d.max_per_host, d.retries, d.max_redirects) == (64, 4, 3, 5)
    assert (d.connect_timeout, d.read_timeout, d.total_timeout) == (10, 30, 300)
    assert d.max_bytes == 50_000_000
    assert d.allow_private_addresses is False
    assert d.user_agent.startswith("thumbd/")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[thumbnails]\nwidht = [1]\n",
            "unknown key [thumbnails] widht (did you mean [thumbnails] widths?); expected one of",
        ),
        ("[thumbnail]\nwidths = [1]\n", "unknown key 'thumbnail' (did you mean [thumbnails]?)"),
        ("[watch]\nworkers = 2\n", "unknown key [watch] workers (did you mean [resize] workers?)"),
        ("[watch]\nzzz = 2\n", "unknown key [watch] zzz; expected one of: ignore,"),
        (
            '[[thumbnails.size]]\nnam = "a"\nwidth = 9\n',
            "unknown key [thumbnails.size] #1 nam (did you mean name?)",
        ),
        ('[log]\nlevel = "verbose"\n', '[log] level: expected one of "debug", "info"'),
        ('[thumbnails]\nwidths = [200, "x"]\n', "[thumbnails] widths: expected a list of integers"),
        ("[thumbnails]\nwidths = []\n", "[thumbnails]: nothing to make: widths is empty"),
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
        ("[download]\nconcurrency = 0\n", "[download] concurrency: expected a number greater"),
        ("[download]\nthreads = 4\n", "[download] threads: it is gone: downloads run on one event"),
        ("[download]\nretries = -1\n", "[download] retries: expected a number of 0 or more"),
        ("[download]\nallow_private_addresses = 1\n", "expected true or false"),
        ('[download]\nuser_agent = " "\n', "[download] user_agent: expected a non-empty"),
        ("[download]\nmax_per_hots = 2\n", "unknown key [download] max_per_hots"),
    ],
)
def test_errors_name_the_file_and_the_key(tmp_path: Path, text: str, expected: str) -> None:
    assert_config_error(tmp_path, text, expected)


@pytest.mark.parametrize("level", ["INFO", "info", "Info"])
def test_log_level_and_format_take_any_case(tmp_path: Path, level: str) -> None:
    c = load_config(write(tmp_path, f'[log]\nlevel = "{level}"\nformat = "JSON"\n'))
    assert (c.log.level, c.log.format) == ("info", "json")


def test_a_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(tmp_path / "nope.toml")


def test_effective_configuration_round_trips(tmp_path: Path) -> None:
    c = load_config(write(tmp_path, '[thumbnails]\nwidths = [300]\n[watch]\nignore = ["*.raw"]\n'))
    again = load_config(write(tmp_path, to_toml(c)))
    assert again == c


SIZES = """
[thumbnails]
widths = [300]
format = "webp"
keep_metadata = ["copyright"]
background = "#102030"
animated = true
index = true

[[thumbnails.size]]
name = "avatar"
width = 200
height = 200
mode = "cover"
crop = "attention"

[[thumbnails.size]]
name = "card"
width = 400
height = 300
"""


def test_named_sizes_are_an_array_of_tables(tmp_path: Path) -> None:
    c = load_config(write(tmp_path, SIZES))
    t = c.thumbnails
    assert [(s.name, s.width, s.height, s.mode, s.crop) for s in t.size] == [
        ("avatar", 200, 200, "cover", "attention"),
        ("card", 400, 300, "fit", "centre"),
    ]
    assert (t.format, t.keep_metadata, t.background, t.animated, t.index) == (
        "webp",
        ("copyright",),
        "#102030",
        True,
        True,
    )
    assert load_config(write(tmp_path, to_toml(c))) == c  # check-config output loads back


def test_only_named_sizes_is_allowed(tmp_path: Path) -> None:
    c = load_config(
        write(tmp_path, '[thumbnails]\nwidths = []\n[[thumbnails.size]]\nname = "a"\nwidth = 9\n')
    )
    assert c.thumbnails.widths == () and c.thumbnails.size[0].name == "a"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[[thumbnails.size]]\nname = "a"\nwidth = 10\n'
            '[[thumbnails.size]]\nname = "b"\nwidth = 10\nmode = "stretch"\n',
            '[thumbnails.size] #2 mode: expected one of "width", "fit", "cover", got \'stretch\'',
        ),
        ("[[thumbnails.size]]\nwidth = 10\n", "[thumbnails.size] #1 name: missing"),
        ('[[thumbnails.size]]\nname = "a"\n', "[thumbnails.size] #1 width: missing"),
        (
            '[[thumbnails.size]]\nname = "200"\nwidth = 10\n',
            "[thumbnails.size] #1 name: expected a name",
        ),
        (
            '[[thumbnails.size]]\nname = "a/b"\nwidth = 10\n',
            "[thumbnails.size] #1 name: expected a name",
        ),
        (
            '[[thumbnails.size]]\nname = "a"\nwidth = 10\nmode = "cover"\n',
            '[thumbnails.size] #1: mode "cover" needs a height',
        ),
        (
            '[[thumbnails.size]]\nname = "a"\nwidth = 10\nsize = 3\n',
            "unknown key [thumbnails.size] #1 size",
        ),
        (
            '[[thumbnails.size]]\nname = "a"\nwidth = 10\ncrop = "left"\n',
            "[thumbnails.size] #1 crop: expected one of",
        ),
        (
            '[[thumbnails.size]]\nname = "a"\nwidth = 1\n'
            '[[thumbnails.size]]\nname = "a"\nwidth = 2\n',
            "[thumbnails] size: expected sizes with distinct names",
        ),
        ("[thumbnails]\nsize = 3\n", "[[thumbnails.size]]: expected an array of tables"),
        ('[thumbnails]\nformat = "gif"\n', '[thumbnails] format: expected one of "auto", "jpeg"'),
        (
            "[thumbnails]\nwebp_quality = 0\n",
            "[thumbnails] webp_quality: expected an integer from 1",
        ),
        ('[thumbnails]\nbackground = "blurple"\n', "[thumbnails] background: expected a colour"),
        (
            '[thumbnails]\nkeep_metadata = ["gps", "everything"]\n',
            "[thumbnails] keep_metadata: expected a list of: copyright",
        ),
        ("[thumbnails]\nprogressive = 1\n", "[thumbnails] progressive: expected true or false"),
    ],
)
def test_fidelity_keys_errors_name_the_file_and_the_key(
    tmp_path: Path, text: str, expected: str
) -> None:
    assert_config_error(tmp_path, text, expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[executor]\nkind = "ray"\n', '[executor] kind: expected one of "local", "dask"'),
        ('[executor]\nkind = "dask"\n', 'kind = "dask" needs address = "tcp://HOST:8786"'),
        ('[executor]\naddress = "10.0.0.5:8786"\n', "[executor] address: expected a scheduler"),
        (
            '[executor]\naddress = "tcp://h:8786"\nscheduler_file = "s.json"\n',
            "address and scheduler_file: set one, not both",
        ),
        ("[executor]\nmax_in_flight = 0\n", "[executor] max_in_flight: expected a number greater"),
        ("[executor]\nretries = -1\n", "[executor] retries: expected a number of 0 or more"),
        ('[executor]\nshared_storage = "yes"\n', "[executor] shared_storage: expected true"),
    ],
)
def test_executor_errors_name_the_file_and_the_key(
    tmp_path: Path, text: str, expected: str
) -> None:
    assert_config_error(tmp_path, text, expected)


def test_the_executor_defaults_to_the_local_pool(tmp_path: Path) -> None:
    e = load_config(None).executor
    assert (e.kind, e.address, e.scheduler_file) == ("local", "", None)
    assert (e.max_in_flight, e.retries, e.shared_storage) == (64, 2, False)


def test_a_dask_scheduler_file_resolves_against_the_files_folder(tmp_path: Path) -> None:
    sub = tmp_path / "etc"
    sub.mkdir()
    c = load_config(write(sub, '[executor]\nkind = "dask"\nscheduler_file = "../run/s.json"\n'))
    assert c.executor.scheduler_file == tmp_path / "run" / "s.json"
    text = to_toml(c)
    assert f'scheduler_file = "{tmp_path / "run" / "s.json"}"' in text
    assert load_config(write(sub, text)) == c


def test_an_unset_scheduler_file_is_shown_as_a_comment(tmp_path: Path) -> None:
    text = to_toml(load_config(None))
    assert "# scheduler_file is not set" in text
    assert load_config(write(tmp_path, text)).executor == load_config(None).executor


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[resize]\ntimeout = inf", "[resize] timeout: expected a number of seconds above 0"),
        ("[resize]\ntimeout = 1e12", "[resize] timeout: expected a number of seconds above 0"),
        ("[daemon]\nshutdown_timeout = inf", "[daemon] shutdown_timeout: expected a number of"),
        ("[watch]\nrescan_interval = inf", "[watch] rescan_interval: expected a number of"),
        ("[watch]\nsettle_seconds = nan", "[watch] settle_seconds: expected a number of seconds"),
        ("[download]\nread_timeout = inf", "[download] read_timeout: expected a number of"),
    ],
)
def test_endless_seconds_are_an_error(tmp_path: Path, text: str, expected: str) -> None:
    # `inf` stopped the worker pool's thread (poll() cannot wait that long) and made a SIGTERM
    # end in a traceback; an error that names the key says what to write instead.
    assert_config_error(tmp_path, text, expected)


@pytest.mark.parametrize(
    ("paths", "expected"),
    [
        ('incoming = "pics"\noutgoing = "pics"', "[paths] outgoing: must not be the incoming"),
        ('incoming = "pics"\noutgoing = "pics/thumbs"', "[paths] outgoing: must not be inside"),
        ('incoming = "out/pics"\noutgoing = "out"', "[paths] incoming: must not be inside"),
        ('incoming = "pics"\noutgoing = "link/thumbs"', "[paths] outgoing: must not be inside"),
    ],
)
def test_outgoing_inside_incoming_is_an_error(tmp_path: Path, paths: str, expected: str) -> None:
    # Every thumbnail written there was taken as a new image: x_200_200.jpg, and so on.
    (tmp_path / "pics").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "pics")
    assert_config_error(tmp_path, f"[paths]\n{paths}\n", expected)
    load_config(write(tmp_path, '[paths]\nincoming = "pics"\noutgoing = "pics-thumbs"\n'))
