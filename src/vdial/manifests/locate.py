"""Typed access to parsed JSON that reports errors as "file: location: problem".

Annotation files are large and hand-edited copies circulate between research repos, so a reader
must say exactly where a malformed entry is ("train.json: dialogs[12].dialog[3]: missing
'question'") instead of failing with a bare KeyError deep inside a loop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vdial.manifests.schema import ManifestError

_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    list: "a list",
    dict: "an object",
}

# the Python types json.load produces for each JSON kind (bool is not an int here)
_EXACT_TYPES = {
    str: {str},
    int: {int},
    float: {int, float},
    list: {list},
    dict: {dict},
}


def type_name(value: Any) -> str:
    """The JSON name of a parsed value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def is_kind(value: Any, kind: type) -> bool:
    """JSON type test: booleans are not numbers, and integers count as numbers."""
    if isinstance(value, bool):
        return False
    if kind is float:
        return isinstance(value, int | float)
    return isinstance(value, kind)


@dataclass(frozen=True)
class Where:
    """A position inside one annotation file: the file and a JSON path such as `dialogs[3]`."""

    file: Path
    path: str = ""

    def key(self, name: str) -> Where:
        return Where(self.file, f"{self.path}.{name}" if self.path else name)

    def at(self, index: int) -> Where:
        return Where(self.file, f"{self.path}[{index}]")

    @property
    def source(self) -> str:
        """Compact reference stored per row: file name, '#', location."""
        return f"{self.file.name}#{self.path}"

    def __str__(self) -> str:
        return f"{self.file}: {self.path}" if self.path else str(self.file)

    def error(self, problem: str) -> ManifestError:
        return ManifestError(f"{self}: {problem}")

    def field(self, obj: dict[str, Any], name: str, kind: type, *, optional: bool = False) -> Any:
        """`obj[name]` checked to be of JSON type `kind`; None when optional and absent."""
        if name not in obj:
            if optional:
                return None
            raise self.error(f"missing '{name}'")
        value = obj[name]
        if not is_kind(value, kind):
            raise self.error(f"'{name}' must be {_TYPE_NAMES[kind]}, got {type_name(value)}")
        return value

    def items(self, obj: dict[str, Any], name: str, kind: type) -> list[Any]:
        """`obj[name]` checked to be a list whose every element is of JSON type `kind`."""
        values = self.field(obj, name, list)
        # fast path in C over the element types: VisDial has 100 options per round
        if set(map(type, values)) <= _EXACT_TYPES[kind]:
            return values
        inner = self.key(name)
        for i, value in enumerate(values):
            if not is_kind(value, kind):
                raise inner.at(i).error(f"must be {_TYPE_NAMES[kind]}, got {type_name(value)}")
        return values

    def object(self, value: Any) -> dict[str, Any]:
        """`value` checked to be a JSON object (this position's own value)."""
        if not isinstance(value, dict):
            raise self.error(f"must be an object, got {type_name(value)}")
        return value


def load_json(path: Path) -> Any:
    """Parse a JSON file; unreadable files and syntax errors become ManifestError."""
    if not path.is_file():
        raise ManifestError(f"{path}: annotation file not found")
    try:
        with path.open("rb") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise ManifestError(
            f"{path}: line {err.lineno} column {err.colno}: invalid JSON: {err.msg}"
        ) from err
    except UnicodeDecodeError as err:
        raise ManifestError(f"{path}: not UTF-8 text: {err.reason}") from err
