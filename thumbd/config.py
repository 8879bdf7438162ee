"""Configuration: frozen dataclasses filled from TOML, validated once, passed down.

Every key is optional. Unknown keys and bad values are errors that name the file, the key and
what was expected. Relative paths resolve against the configuration file's directory (or the
current directory when thumbd runs on its built-in defaults).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """A user mistake in the configuration: the message names the file and the key."""


Check = Callable[[Any], str | None]  # returns what was expected, or None when the value is fine


def _positive(v: Any) -> str | None:
    return None if v > 0 else "a number greater than 0"


def _non_negative(v: Any) -> str | None:
    return None if v >= 0 else "a number of 0 or more"


def _widths(v: Any) -> str | None:
    if not v or any(w <= 0 or w > 10_000 for w in v) or len(set(v)) != len(v):
        return "a non-empty list of distinct widths between 1 and 10000"
    return None


def _quality(v: Any) -> str | None:
    return None if 1 <= v <= 100 else "an integer from 1 to 100"


def _on_delete(v: Any) -> str | None:
    return None if v in ("keep", "remove") else '"keep" or "remove"'


def _check(fn: Check, default: Any = dataclasses.MISSING, **kw: Any) -> Any:
    if default is dataclasses.MISSING:
        return field(metadata={"check": fn}, **kw)
    return field(default=default, metadata={"check": fn}, **kw)


@dataclass(frozen=True)
class PathsConfig:
    incoming: Path = Path("incoming")
    outgoing: Path = Path("outgoing")
    state: Path = Path(".thumbd")


@dataclass(frozen=True)
class ThumbnailsConfig:
    widths: tuple[int, ...] = _check(_widths, (200, 64, 32))
    quality: int = _check(_quality, 85)
    # What happens to the thumbnails of a source that is deleted (or moved away).
    on_delete: str = _check(_on_delete, "keep")


@dataclass(frozen=True)
class ResizeConfig:
    workers: int = _check(_positive, default_factory=lambda: os.cpu_count() or 1)
    max_tasks_per_child: int = _check(_positive, 100)
    timeout: float = _check(_positive, 60.0)
    max_pixels: int = _check(_positive, 100_000_000)
    max_file_bytes: int = _check(_positive, 1_000_000_000)
    # Address-space cap per worker (RLIMIT_AS); 0 means none. 100 MP of 16-bit pixels peaks
    # near 1.1 GB in a worker, so the default leaves room for max_pixels and no more.
    max_memory_mb: int = _check(_non_negative, 2048)


@dataclass(frozen=True)
class WatchConfig:
    ignore: tuple[str, ...] = ()
    settle_seconds: float = _check(_non_negative, 0.1)
    quiet_seconds: float = _check(_non_negative, 2.0)
    rescan_interval: float = _check(_positive, 600.0)
    polling: bool = False


@dataclass(frozen=True)
class DaemonConfig:
    shutdown_timeout: float = _check(_positive, 30.0)


@dataclass(frozen=True)
class Config:
    paths: PathsConfig = field(default_factory=PathsConfig)
    thumbnails: ThumbnailsConfig = field(default_factory=ThumbnailsConfig)
    resize: ResizeConfig = field(default_factory=ResizeConfig)
    watch: WatchConfig = field(default_factory=WatchConfig)
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    source: Path | None = None  # the file this came from; None for built-in defaults

    @property
    def state_db(self) -> Path:
        return self.paths.state / "thumbd.db"


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
    return _resolve(config, path.resolve().parent, path)


def _resolve(config: Config, base: Path, source: Path | None) -> Config:
    """Make every path absolute against the configuration file's directory."""
    paths = config.paths
    resolved = PathsConfig(
        **{f.name: _absolute(getattr(paths, f.name), base) for f in dataclasses.fields(paths)}
    )
    return dataclasses.replace(config, paths=resolved, source=source)


def _absolute(p: Path, base: Path) -> Path:
    p = p.expanduser()
    return Path(os.path.normpath(p if p.is_absolute() else base / p))


def _build(cls: type[Any], data: dict[str, Any], path: Path, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        where = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(
                f"{path}: unknown key {_show(where)}; expected one of: {', '.join(sorted(fields))}"
            )
        kwargs[key] = _value(hints[key], fields[key], value, path, where)
    return cls(**kwargs)


def _show(where: str) -> str:
    section, _, key = where.rpartition(".")
    return f"[{section}] {key}" if section else repr(key)


def _value(hint: Any, f: dataclasses.Field[Any], value: Any, path: Path, where: str) -> Any:
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: [{where}]: expected a table")
        return _build(typing.cast(type[Any], hint), value, path, where + ".")
    converted, expected = _convert(hint, value)
    if expected is not None:
        raise ConfigError(f"{path}: {_show(where)}: expected {expected}, got {value!r}")
    check: Check | None = f.metadata.get("check")
    problem = check(converted) if check else None
    if problem is not None:
        raise ConfigError(f"{path}: {_show(where)}: expected {problem}, got {value!r}")
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


def to_toml(config: Config) -> str:
    """The effective configuration, as TOML a user can paste into a file."""
    lines: list[str] = []
    for f in dataclasses.fields(config):
        section = getattr(config, f.name)
        if not dataclasses.is_dataclass(section):
            continue
        lines.append(f"[{f.name}]")
        for sf in dataclasses.fields(section):
            lines.append(f"{sf.name} = {_toml_value(getattr(section, sf.name))}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, tuple | list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    import json

    return json.dumps(str(v))
