"""`thumbd check-config`: whether the folders a configuration names can be used, and the
effective configuration as TOML.

Loading already checked every key and value (thumbd.config); this adds what only the file
system can say: that incoming/ exists and can be read, that outgoing/, the state folder and a
log file exist or can be made, and can be written. Each problem names the file and the key, as
a configuration error does. Pillow-free.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import typing
from pathlib import Path
from typing import Any

from thumbd.config import Config

DEFAULTS = "built-in defaults"  # what a message names instead of a file when there is none


def check_config(config: Config, origin: str) -> int:
    """Print the problems (exit 2), or the effective configuration headed by `origin` (0)."""
    found = problems(config)
    for problem in found:
        print(f"thumbd: configuration error: {problem}", file=sys.stderr)
    if found:
        return 2
    print(f"# configuration: {origin}")
    print(to_toml(config), end="")
    return 0


def problems(config: Config) -> list[str]:
    """What stands in the way of the folders and files `config` names, one line each:
    `/etc/thumbd/thumbd.toml: [paths] incoming: /srv/in does not exist`."""
    where = str(config.source) if config.source is not None else DEFAULTS
    paths = config.paths
    checks = [
        ("[paths] incoming", _readable_folder(paths.incoming)),
        ("[paths] outgoing", _writable_folder(paths.outgoing)),
        ("[paths] state", _writable_folder(paths.state)),
    ]
    if config.log.file:
        checks.append(("[log] file", _writable_file(Path(config.log.file))))
    return [f"{where}: {key}: {problem}" for key, problem in checks if problem is not None]


def _kind(path: Path) -> str | None:
    """ "folder", "file" (anything else that is there), None when nothing is; raises OSError when
    the path cannot be looked at (a parent that is not searchable)."""
    try:
        return "folder" if path.stat().st_mode & 0o170000 == 0o040000 else "file"
    except (FileNotFoundError, NotADirectoryError):
        return None


def _readable_folder(path: Path) -> str | None:
    try:
        kind = _kind(path)
    except OSError as e:
        return f"{path} cannot be looked at: {e.strerror}"
    if kind is None:
        return f"{path} does not exist"
    if kind != "folder":
        return f"{path} is not a folder"
    if not os.access(path, os.R_OK | os.X_OK):
        return f"{path} is not readable"
    return None


def _writable_folder(path: Path) -> str | None:
    """A folder thumbd writes into, made (with its parents) when it is not there yet."""
    try:
        kind = _kind(path)
    except OSError as e:
        return f"{path} cannot be looked at: {e.strerror}"
    if kind == "file":
        return f"{path} is not a folder"
    if kind == "folder":
        return None if os.access(path, os.W_OK | os.X_OK) else f"{path} is not writable"
    return _makeable(path)


def _writable_file(path: Path) -> str | None:
    """A file thumbd appends to, made (with its folder) when it is not there yet."""
    try:
        kind = _kind(path)
    except OSError as e:
        return f"{path} cannot be looked at: {e.strerror}"
    if kind == "folder":
        return f"{path} is a folder"
    if kind == "file":
        return None if os.access(path, os.W_OK) else f"{path} is not writable"
    return _makeable(path)


def _makeable(path: Path) -> str | None:
    """`path` is missing: can it be made? Its nearest existing parent must be a writable folder."""
    parent = path.parent
    while _kind_or_none(parent) is None and parent != parent.parent:
        parent = parent.parent
    if _kind_or_none(parent) != "folder":
        return f"{path} cannot be made: {parent} is not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"{path} cannot be made: {parent} is not writable"
    return None


def _kind_or_none(path: Path) -> str | None:
    try:
        return _kind(path)
    except OSError:
        return "unknown"  # there, but not to be looked into: not a folder to make things in


# -- the effective configuration as TOML ---------------------------------------------------


def to_toml(config: Config) -> str:
    """The effective configuration, as TOML a user can paste into a file and add to: arrays of
    tables (`[[thumbnails.size]]`) come after their section's keys and are never written inline,
    so a `[[thumbnails.size]]` block appended to the output still loads."""
    lines: list[str] = []
    for f in dataclasses.fields(config):
        section = getattr(config, f.name)
        if not dataclasses.is_dataclass(section):
            continue
        lines.append(f"[{f.name}]")
        tables: list[tuple[str, Any]] = []
        hints = typing.get_type_hints(type(section))
        for sf in dataclasses.fields(section):
            value = getattr(section, sf.name)
            if _is_table_array(hints[sf.name]):
                # `size = []` would make the key a plain array, closed to [[thumbnails.size]]
                if not value:
                    lines.append(f"# no [[{f.name}.{sf.name}]] tables")
                tables += [(f"{f.name}.{sf.name}", v) for v in value]
            elif value is None:
                lines.append(f"# {sf.name} is not set")
            else:
                lines.append(f"{sf.name} = {_toml_value(value)}")
        lines.append("")
        for name, table in tables:
            lines.append(f"[[{name}]]")
            lines += [
                f"{tf.name} = {_toml_value(getattr(table, tf.name))}"
                for tf in dataclasses.fields(table)
            ]
            lines.append("")
    return "\n".join(lines)


def _is_table_array(hint: Any) -> bool:
    """A `tuple[SomeConfig, ...]` field: a TOML array of tables."""
    args = typing.get_args(hint)
    return typing.get_origin(hint) is tuple and bool(args) and dataclasses.is_dataclass(args[0])


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, tuple | list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v))
