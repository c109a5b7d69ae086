"""Frozen, typed dataclass configs loaded from YAML and saved back (runs, store attributes).

`load_config(cls, path, **overrides)` builds a config from a YAML mapping; unknown keys and
wrong types are errors that name the file, the key (as a dotted path, e.g. `model.d_model`)
and, for an unknown key, the valid ones, so a typo in a recipe never passes silently.

Field types understood: bool, int, float (an int is accepted), str, Literal[...], X | None,
unions (the first alternative that fits), tuple[X, ...] (a YAML list), dict[str, X] (a YAML
mapping), nested dataclasses, and Any (taken as it is, e.g. a block validated later).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

C = TypeVar("C")


class ConfigError(ValueError):
    """A config file or mapping does not match its dataclass."""


def _fail(file: str, key: str, message: str) -> ConfigError:
    return ConfigError(f"{file}: {key}: {message}" if key else f"{file}: {message}")


def _coerce(value: Any, annotation: Any, file: str, key: str) -> Any:
    if annotation is Any:
        return value
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        if value is None:
            if type(None) in args:
                return None
            raise _fail(file, key, "may not be empty (null)")
        errors = []
        for alternative in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, alternative, file, key)
            except ConfigError as err:
                errors.append(err)
        raise errors[0]
    if origin is tuple:
        inner = typing.get_args(annotation)
        if not isinstance(value, list | tuple):
            raise _fail(file, key, f"expected a list, got {value!r}")
        if len(inner) == 2 and inner[1] is Ellipsis:
            return tuple(_coerce(v, inner[0], file, f"{key}[{i}]") for i, v in enumerate(value))
        if len(inner) != len(value):
            raise _fail(file, key, f"expected a list of {len(inner)} values, got {value!r}")
        return tuple(
            _coerce(v, t, file, f"{key}[{i}]")
            for i, (v, t) in enumerate(zip(value, inner, strict=True))
        )
    if origin is dict:
        key_type, value_type = typing.get_args(annotation)
        if not isinstance(value, dict):
            raise _fail(file, key, f"expected a mapping, got {value!r}")
        return {
            _coerce(k, key_type, file, key): _coerce(v, value_type, file, f"{key}.{k}")
            for k, v in value.items()
        }
    if origin is typing.Literal:
        allowed = typing.get_args(annotation)
        if value not in allowed:
            raise _fail(file, key, f"{value!r} is not one of {list(allowed)}")
        return value
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        return _from_dict(annotation, value, file, key)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation in (int, float) and isinstance(value, bool):
        raise _fail(file, key, f"expected {annotation.__name__}, got {value!r}")
    if annotation in (int, float, str, bool) and not isinstance(value, annotation):
        raise _fail(file, key, f"expected {annotation.__name__}, got {value!r}")
    return value


def _from_dict(cls: type[C], data: Any, file: str, key: str) -> C:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise _fail(file, key, f"expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.init]
    names = [f.name for f in fields]
    prefix = f"{key}." if key else ""
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ConfigError(
            f"{file}: unknown key {prefix + str(unknown[0])!r}"
            + (f" (and {unknown[1:]})" if len(unknown) > 1 else "")
            + f"; valid keys{' of ' + key if key else ''}: {', '.join(names)}"
        )
    kwargs = {k: _coerce(v, hints[k], file, f"{prefix}{k}") for k, v in data.items()}
    required = [
        f.name
        for f in fields
        if f.name not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if required:
        raise _fail(file, key, f"missing required key(s) {', '.join(required)}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise _fail(file, key, str(err)) from None


def from_dict(cls: type[C], data: dict[str, Any] | None, where: str = "config", key: str = "") -> C:
    """Build dataclass `cls` from a mapping, checking keys and types; errors name `where`
    (the file) and the dotted key under `key`."""
    return _from_dict(cls, data, where, key)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML file's top-level mapping; a missing file or another top level is a ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return loaded or {}


def load_config(cls: type[C], path: str | Path | None, **overrides: Any) -> C:
    """Read YAML at `path` (or start empty) into `cls`; `overrides` that are not None win."""
    data = read_yaml(path) if path is not None else {}
    data.update({k: v for k, v in overrides.items() if v is not None})
    return from_dict(cls, data, str(path) if path else cls.__name__)


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def to_dict(config: Any) -> dict[str, Any]:
    """A YAML/JSON-friendly dict of a (possibly nested) config dataclass."""
    return _plain(dataclasses.asdict(config))


def save_config(config: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
