"""Configuration: frozen dataclasses filled from TOML, validated once, passed down.

Every key is optional. Unknown keys and bad values are errors that name the file, the key and
what was expected. Relative paths resolve against the configuration file's directory (or the
current directory when thumbd runs on its built-in defaults).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import tomllib
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thumbd import __version__
from thumbd.render.spec import CROPS, FORMATS, METADATA_ITEMS, MODES


class ConfigError(Exception):
    """A user mistake in the configuration: the message names the file and the key."""


Check = Callable[[Any], str | None]  # returns what was expected, or None when the value is fine


def _positive(v: Any) -> str | None:
    return None if v > 0 else "a number greater than 0"


def _non_negative(v: Any) -> str | None:
    return None if v >= 0 else "a number of 0 or more"


# Seconds: at most about 11 days. Longer waits overflow the system calls they end up in (poll()
# takes milliseconds in a C int: about 24.8 days), and `inf` would stop the worker pool's thread.
MAX_SECONDS = 1_000_000


def _seconds(v: Any) -> str | None:
    return None if 0 < v <= MAX_SECONDS else f"a number of seconds above 0, at most {MAX_SECONDS}"


def _seconds_or_zero(v: Any) -> str | None:
    return None if 0 <= v <= MAX_SECONDS else f"a number of seconds from 0 to {MAX_SECONDS}"


def _widths(v: Any) -> str | None:
    if any(w <= 0 or w > 10_000 for w in v) or len(set(v)) != len(v):
        return "a list of distinct widths between 1 and 10000"
    return None


def _dimension(v: Any) -> str | None:
    return None if 1 <= v <= 10_000 else "an integer from 1 to 10000"


def _height(v: Any) -> str | None:
    return None if 0 <= v <= 10_000 else "an integer from 0 (no limit) to 10000"


def _one_of(*choices: str) -> Check:  # pragma: no mutate block (docs/mutation.md)
    def check(v: Any) -> str | None:
        return None if v in choices else "one of " + ", ".join(f'"{c}"' for c in choices)

    return check


def _format(v: Any) -> str | None:
    return None if v in FORMATS else "one of " + ", ".join(f'"{c}"' for c in FORMATS)


def _size_name(v: Any) -> str | None:
    # Part of file names (`<stem>_<name>.<ext>`); all digits would collide with a width's.
    if re.fullmatch(r"[A-Za-z0-9_-]{1,40}", v) and not v.isdigit():
        return None
    return "a name of letters, digits, - and _ (not only digits)"


def _metadata(v: Any) -> str | None:
    if all(item in METADATA_ITEMS for item in v):
        return None
    return "a list of: " + ", ".join(METADATA_ITEMS)


def _distinct_names(v: Any) -> str | None:
    names = [s.name for s in v]
    return None if len(set(names)) == len(names) else "sizes with distinct names"


def _quality(v: Any) -> str | None:
    return None if 1 <= v <= 100 else "an integer from 1 to 100"


def _listen(v: Any) -> str | None:
    """Empty (off) or host:port, with IPv6 hosts in brackets: "[::1]:9188"."""
    if v == "":
        return None
    host, sep, port = v.rpartition(":")
    if sep and host.strip("[]") and port.isdigit() and int(port) <= 65535:
        return None
    return 'an address as "host:port" (e.g. "127.0.0.1:9188"), or "" for off'


def _non_empty(v: Any) -> str | None:
    return None if v.strip() else "a non-empty string"


def _scheduler_address(v: Any) -> str | None:
    ok = v == "" or "://" in v
    return None if ok else 'a scheduler address such as "tcp://10.0.0.5:8786"'


def _on_delete(v: Any) -> str | None:
    return None if v in ("keep", "remove") else '"keep" or "remove"'


def _check(
    fn: Check, default: Any = dataclasses.MISSING, *, fold: bool = False, **kw: Any
) -> Any:  # pragma: no mutate block
    """A field whose value `fn` checks; `fold`: a word taken in any case ("INFO"), kept lower."""
    metadata = {"check": fn, "fold": fold}
    if default is dataclasses.MISSING:
        return field(metadata=metadata, **kw)
    return field(default=default, metadata=metadata, **kw)


@dataclass(frozen=True)
class PathsConfig:
    incoming: Path = Path("incoming")
    outgoing: Path = Path("outgoing")
    state: Path = Path(".thumbd")


@dataclass(frozen=True)
class SizeConfig:
    """One `[[thumbnails.size]]` table: a named size, `<stem>_<name>.<ext>`."""

    name: str = _check(_size_name)
    width: int = _check(_dimension)
    height: int = _check(_height, 0)
    mode: str = _check(_one_of(*MODES), "fit")
    crop: str = _check(_one_of(*CROPS), "centre")

    def problem(self) -> str | None:
        if self.mode == "cover" and self.height == 0:
            return 'mode "cover" needs a height'
        return None


@dataclass(frozen=True)
class ThumbnailsConfig:
    widths: tuple[int, ...] = _check(_widths, (200, 64, 32))
    quality: int = _check(_quality, 85)
    size: tuple[SizeConfig, ...] = _check(_distinct_names, ())
    format: str = _check(_format, "auto")
    webp_quality: int = _check(_quality, 80)
    avif_quality: int = _check(_quality, 60)
    progressive: bool = False
    background: str = "#ffffff"  # a colour: the render stage checks it (Pillow knows them)
    keep_metadata: tuple[str, ...] = _check(_metadata, ())
    animated: bool = False
    sharpen: bool = False
    index: bool = False
    # Also write outgoing/<folder>/index.html, a page of the folder's thumbnails (output/gallery).
    gallery: bool = False
    # What happens to the thumbnails of a source that is deleted (or moved away).
    on_delete: str = _check(_on_delete, "keep")
    # An iPhone Live Photo (a still and a short .MOV of the same stem): "still" makes one
    # photo of the pair (the MOV gets no thumbnails); "both" takes the MOV as any video.
    live_photos: str = _check(_one_of("still", "both"), "still")

    def problem(self) -> str | None:
        if not self.widths and not self.size:
            return "nothing to make: widths is empty and there is no [[thumbnails.size]]"
        return None


@dataclass(frozen=True)
class ResizeConfig:
    workers: int = _check(_positive, default_factory=lambda: os.cpu_count() or 1)
    max_tasks_per_child: int = _check(_positive, 100)
    timeout: float = _check(_seconds, 60.0)
    max_pixels: int = _check(_positive, 100_000_000)
    max_file_bytes: int = _check(_positive, 1_000_000_000)  # stills and RAW
    # Videos are read only where the poster frame is, so their size costs little: 64 GB.
    max_video_bytes: int = _check(_positive, 64_000_000_000)
    # Address-space cap per worker (RLIMIT_AS); 0 means none. 100 MP of 16-bit pixels peaks
    # near 1.1 GB in a worker, so the default leaves room for max_pixels and no more.
    max_memory_mb: int = _check(_non_negative, 2048)


@dataclass(frozen=True)
class WatchConfig:
    ignore: tuple[str, ...] = ()
    settle_seconds: float = _check(_seconds_or_zero, 0.1)
    quiet_seconds: float = _check(_seconds_or_zero, 2.0)
    rescan_interval: float = _check(_seconds, 600.0)
    polling: bool = False


@dataclass(frozen=True)
class DaemonConfig:
    shutdown_timeout: float = _check(_seconds, 30.0)


@dataclass(frozen=True)
class LogConfig:
    level: str = _check(_one_of("debug", "info", "warning", "error"), "info", fold=True)
    format: str = _check(_one_of("text", "json"), "text", fold=True)
    file: str = ""  # empty: stderr (the journal under systemd); resolved like [paths]


@dataclass(frozen=True)
class MetricsConfig:
    listen: str = _check(_listen, "")  # host:port for Prometheus; empty: off


@dataclass(frozen=True)
class DownloadConfig:
    """URL manifests (`*.urls`): the downloader's event loop and its limits."""

    # Keys that are gone, and what to write instead (an old file gets this, not "unknown key").
    REPLACED: typing.ClassVar[dict[str, str]] = {
        "threads": "it is gone: downloads run on one event loop; set concurrency (requests in"
        " flight in all, default 64) and max_per_host (per host, default 4) instead",
    }

    concurrency: int = _check(_positive, 64)
    max_per_host: int = _check(_positive, 4)
    connect_timeout: float = _check(_seconds, 10.0)
    read_timeout: float = _check(_seconds, 30.0)
    total_timeout: float = _check(_seconds, 300.0)
    max_bytes: int = _check(_positive, 50_000_000)
    retries: int = _check(_non_negative, 3)
    max_redirects: int = _check(_non_negative, 5)
    allow_private_addresses: bool = False
    user_agent: str = _check(_non_empty, f"thumbd/{__version__}")


@dataclass(frozen=True)
class ExecutorConfig:
    """Where render() runs: the local process pool, or a Dask cluster (thumbd.dask_executor)."""

    kind: str = _check(_one_of("local", "dask"), "local")
    address: str = _check(_scheduler_address, "")
    scheduler_file: Path | None = None
    max_in_flight: int = _check(_positive, 64)
    retries: int = _check(_non_negative, 2)
    shared_storage: bool = False

    def problem(self) -> str | None:
        if self.address and self.scheduler_file is not None:
            return "address and scheduler_file: set one, not both"
        if self.kind == "dask" and not (self.address or self.scheduler_file):
            return 'kind = "dask" needs address = "tcp://HOST:8786" or scheduler_file'
        return None


@dataclass(frozen=True)
class Config:
    paths: PathsConfig = field(default_factory=PathsConfig)
    thumbnails: ThumbnailsConfig = field(default_factory=ThumbnailsConfig)
    resize: ResizeConfig = field(default_factory=ResizeConfig)
    watch: WatchConfig = field(default_factory=WatchConfig)
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    log: LogConfig = field(default_factory=LogConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    download: DownloadConfig = field(default_factory=DownloadConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    source: Path | None = None  # the file this came from; None for built-in defaults

    @property
    def state_db(self) -> Path:
        return self.paths.state / "thumbd.db"


_SECTIONS = frozenset(f.name for f in dataclasses.fields(Config) if f.name != "source")
_SECTION_KEYS = {  # for "did you mean [resize] workers?" when a key is in the wrong section
    name: frozenset(f.name for f in dataclasses.fields(hint))
    for name, hint in typing.get_type_hints(Config).items()
    if name in _SECTIONS
}


def load_config(path: Path | str | None) -> Config:
    """Read, validate and resolve a configuration; `None` means the built-in defaults."""
    if path is None:
        return _resolve(Config(), Path.cwd(), None)
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    config = _build(Config, data, path, "")
    # An absolute source: a daemon in the background (working directory /) reloads it on SIGHUP.
    config = _resolve(config, path.resolve().parent, path.absolute())
    _check_folders(config.paths, path)
    return config


def _check_folders(paths: PathsConfig, path: Path) -> None:
    """outgoing/ inside incoming/ (or the same folder) would have every thumbnail taken as a new
    image and thumbnailed again, without end; incoming/ inside outgoing/ can come to the same."""
    incoming, outgoing = os.path.realpath(paths.incoming), os.path.realpath(paths.outgoing)
    if incoming == outgoing:
        problem = f"[paths] outgoing: must not be the incoming folder ({incoming})"
    elif _inside(outgoing, incoming):
        problem = f"[paths] outgoing: must not be inside the incoming folder ({incoming})"
    elif _inside(incoming, outgoing):
        problem = f"[paths] incoming: must not be inside the outgoing folder ({outgoing})"
    else:
        return
    raise ConfigError(f"{path}: {problem}: thumbnails would be taken as new images")


def _inside(path: str, folder: str) -> bool:
    return path.startswith(folder.rstrip(os.sep) + os.sep)


def _resolve(config: Config, base: Path, source: Path | None) -> Config:
    """Make every path absolute against the configuration file's directory."""
    paths = config.paths
    resolved = PathsConfig(
        **{f.name: _absolute(getattr(paths, f.name), base) for f in dataclasses.fields(paths)}
    )
    log_file = str(_absolute(Path(config.log.file), base)) if config.log.file else ""
    log = dataclasses.replace(config.log, file=log_file)
    executor = config.executor
    if executor.scheduler_file is not None:
        executor = dataclasses.replace(
            executor, scheduler_file=_absolute(executor.scheduler_file, base)
        )
    return dataclasses.replace(config, paths=resolved, log=log, executor=executor, source=source)


def _absolute(p: Path, base: Path) -> Path:
    p = p.expanduser()
    return Path(os.path.normpath(p if p.is_absolute() else base / p))


def _build(cls: type[Any], data: dict[str, Any], path: Path, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        where = f"{prefix}{key}"
        replaced = getattr(cls, "REPLACED", {}).get(key)
        if replaced is not None:
            raise ConfigError(f"{path}: {_show(where)}: {replaced}")
        if key not in fields:
            raise ConfigError(
                f"{path}: unknown key {_show(where)}{_suggest(key, fields, prefix)}; "
                f"expected one of: {', '.join(sorted(fields))}"
            )
        kwargs[key] = _value(hints[key], fields[key], value, path, where)
    for name, f in fields.items():
        if name not in kwargs and _required(f):
            raise ConfigError(f"{path}: {_show(prefix + name)}: missing (it has no default)")
    built = cls(**kwargs)
    problem = built.problem() if hasattr(built, "problem") else None
    if problem is not None:
        raise ConfigError(f"{path}: {_show(prefix.rstrip('. '))}: {problem}")
    return built


def _suggest(key: str, fields: Iterable[str], prefix: str) -> str:
    """What follows an unknown key: " (did you mean [thumbnails] widths?)", the closest key of
    the same table, else the section that has this very key (`workers` under [watch] belongs to
    [resize]), else nothing."""
    close = difflib.get_close_matches(key, list(fields), n=1)
    in_table = "#" in prefix  # a [[thumbnails.size]] entry: its key alone says enough
    if close:
        return f" (did you mean {close[0] if in_table else _show(prefix + close[0])}?)"
    if prefix.count(".") == 1 and not in_table:  # a key of a section
        elsewhere = [s for s, keys in _SECTION_KEYS.items() if key in keys]
        if elsewhere:
            return f" (did you mean {_show(elsewhere[0] + '.' + key)}?)"
    return ""


def _required(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _show(where: str) -> str:
    """`thumbnails.quality` -> `[thumbnails] quality`; `thumbnails.size.#2 mode` ->
    `[thumbnails.size] #2 mode` (an entry of an array of tables); `thumbnails` -> `[thumbnails]`."""
    section, _, key = where.rpartition(".")
    if not section:
        return f"[{key}]" if key in _SECTIONS else repr(key)
    return f"[{section}] {key}"


def _value(hint: Any, f: dataclasses.Field[Any], value: Any, path: Path, where: str) -> Any:
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: [{where}]: expected a table")
        return _build(typing.cast(type[Any], hint), value, path, where + ".")
    item = _table_array_item(hint)
    converted: Any
    if item is not None:
        converted = _build_tables(item, value, path, where)
    else:
        converted = _checked(hint, value, path, where)
        if f.metadata.get("fold") and isinstance(converted, str):
            converted = converted.lower()
    check: Check | None = f.metadata.get("check")
    problem = check(converted) if check else None
    if problem is not None:
        raise ConfigError(f"{path}: {_show(where)}: expected {problem}, got {value!r}")
    return converted


def _table_array_item(hint: Any) -> type[Any] | None:
    """The dataclass of a `tuple[SomeConfig, ...]` field (a TOML array of tables), else None."""
    if typing.get_origin(hint) is not tuple:
        return None
    item = typing.get_args(hint)[0]
    return typing.cast(type[Any], item) if dataclasses.is_dataclass(item) else None


def _build_tables(item: type[Any], value: Any, path: Path, where: str) -> tuple[Any, ...]:
    """`[[section.key]]` tables, each built and checked like a section; errors say which one."""
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"{path}: [[{where}]]: expected an array of tables ([[{where}]])")
    return tuple(_build(item, v, path, f"{where}.#{n} ") for n, v in enumerate(value, 1))


def _checked(hint: Any, value: Any, path: Path, where: str) -> Any:
    converted, expected = _convert(hint, value)
    if expected is not None:
        raise ConfigError(f"{path}: {_show(where)}: expected {expected}, got {value!r}")
    return converted


def _convert(hint: Any, value: Any) -> tuple[Any, str | None]:
    """Check one TOML value against a field's type; return (value, None) or (None, expected)."""
    origin = typing.get_origin(hint)
    if hint is bool:
        return (value, None) if isinstance(value, bool) else (None, "true or false")
    if hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return (value, None) if ok else (None, "an integer")
    if hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return (float(value), None) if ok else (None, "a number")
    if hint is str:
        return (value, None) if isinstance(value, str) else (None, "a string")
    if hint is Path:
        ok = isinstance(value, str) and value != ""
        return (Path(value), None) if ok else (None, "a path (a non-empty string)")
    if origin is tuple:
        item = typing.get_args(hint)[0]
        if not isinstance(value, list):
            return None, f"a list of {_name(item)}"
        items = [_convert(item, v) for v in value]
        if any(e is not None for _, e in items):
            return None, f"a list of {_name(item)}"
        return tuple(v for v, _ in items), None
    if origin in (types.UnionType, typing.Union):
        for arm in typing.get_args(hint):
            if arm is type(None):
                continue
            converted, expected = _convert(arm, value)
            if expected is None:
                return converted, None
        return None, " or ".join(_name(a) for a in typing.get_args(hint) if a is not type(None))
    raise TypeError(f"thumbd.config has no conversion for {hint!r}")


def _name(hint: Any) -> str:
    return {int: "integers", float: "numbers", str: "strings", bool: "booleans"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )


def differences(old: Config, new: Config) -> list[str]:
    """The keys whose values differ, as "[section] key" (for the log line of a reload)."""
    changed: list[str] = []
    for f in dataclasses.fields(old):
        a, b = getattr(old, f.name), getattr(new, f.name)
        if dataclasses.is_dataclass(a) and a != b:
            changed += [
                f"[{f.name}] {sf.name}"
                for sf in dataclasses.fields(a)
                if getattr(a, sf.name) != getattr(b, sf.name)
            ]
    return changed
