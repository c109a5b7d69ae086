"""Shared pieces of the legacy importers and exporters (`legacy_npy`, `legacy_h5`, `legacy_pkl`).

Every importer records where its data came from (format, absolute path, size and mtime) in the
feature spec, stores the source dtype unless asked for float16/float32, reports what it did as an
`ImportReport`, and loads pickles through `load_pickle`, which only rebuilds NumPy arrays and
plain Python values: research feature dumps are downloaded from strangers, and a plain
`pickle.load` would run whatever code such a file names.
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

if TYPE_CHECKING:
    from vdial.cache.feature import Feature
    from vdial.cache.store import FeatureStore

DtypePolicy = Literal["keep", "float16", "float32"]
DTYPE_POLICIES: tuple[str, ...] = ("keep", "float16", "float32")
IMPORT_STAGE = "import"  # the stage name of failures recorded by the importers


@dataclass(frozen=True, kw_only=True)
class ImportReport:
    """What one import did to one feature."""

    feature: str  # the feature written
    added: int  # items written by this call
    skipped: int  # items already in the feature (a resumed import)
    failed: int  # items recorded as failed by this call (see `Feature.failures`)
    notes: tuple[str, ...] = ()  # things the user should know (ignored files, dropped padding)


class BadItem(Exception):
    """A source file that cannot become an item; the message is recorded as its failure."""


def resolve_dtype(policy: str, source: np.dtype) -> np.dtype:
    """The dtype to store: the source's ("keep"), or float16/float32 for a floating source."""
    if policy not in DTYPE_POLICIES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPE_POLICIES)}, got {policy!r}")
    if policy == "keep":
        return np.dtype(source)
    if np.dtype(source).kind not in "fiu":
        raise ValueError(f"cannot store {np.dtype(source)} source data as {policy}")
    return np.dtype(policy)


def check_castable(array: np.ndarray, dtype: np.dtype, policy: str) -> str | None:
    """Why `array` cannot go into a `dtype` feature under `policy`, or None if it can.

    "keep" promises an exact round trip, so only lossless casts are accepted (a float16 file in a
    float32 feature is fine, a float64 file is not); float16/float32 accept any numeric source.
    """
    if policy == "keep":
        ok = np.can_cast(array.dtype, dtype, casting="safe")
    else:
        ok = array.dtype.kind in "fiu"
    if ok:
        return None
    return f"dtype {array.dtype} cannot be stored as {dtype} under --dtype {policy}"


def import_files(
    feature: Feature,
    entries: list[tuple[str, Path]],
    load: Callable[[Path], np.ndarray],
    *,
    policy: str,
    bar: Progress,
    description: str,
) -> tuple[int, int, int]:
    """Add one item per (id, file) with `load`; returns (added, skipped, failed).

    Ids already in the feature are skipped (resume); a file that `load` rejects (`BadItem`), of
    another row shape or dtype, or whose values the writer refuses (float16 overflow), is
    recorded as a failed item and the import goes on.
    """
    added = skipped = failed = 0
    stored = feature.dtype
    task = bar.add_task(description, total=len(entries))
    with feature.writer() as writer:
        for item_id, path in entries:
            bar.advance(task)
            if item_id in feature:
                skipped += 1
                continue
            try:
                array = load(path)
                if array.shape[1:] != feature.item_shape:
                    rows = ", ".join(["rows", *map(str, feature.item_shape)])
                    raise BadItem(f"{path}: shape {array.shape}, expected ({rows})")
                reason = check_castable(array, stored, policy)
                if reason:
                    raise BadItem(f"{path}: {reason}")
                writer.add(item_id, array)
            except (BadItem, ValueError) as err:
                # ValueError comes from the writer refusing values: a per-item problem too.
                writer.fail(item_id, IMPORT_STAGE, str(err))
                failed += 1
            else:
                added += 1
    return added, skipped, failed


def first_loadable(paths: list[Path], load: Callable[[Path], np.ndarray]) -> np.ndarray | None:
    """The first file that loads: it fixes the feature's item shape and source dtype."""
    for path in paths:
        try:
            return load(path)
        except BadItem:
            continue
    return None


# Provenance that moves when a broken file is replaced or a file is added; resuming may go on.
_VOLATILE = frozenset({"size", "mtime", "files", "bytes"})


def _stable(value: Any) -> Any:
    """`value` as plain JSON without the volatile provenance keys, at any depth."""
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in _VOLATILE}
    if isinstance(value, list | tuple):
        return [_stable(v) for v in value]
    return value


def create_or_resume(
    store: FeatureStore, name: str, spec: dict[str, Any], **kwargs: Any
) -> tuple[Feature, str | None]:
    """`store.create_feature(name, spec=spec, exist_ok=True, **kwargs)`, tolerant of a source
    whose size or mtime moved since the first import (say, a broken file was re-extracted).

    The spec keeps the first import's provenance then, and the returned note says so; anything
    else that differs (layout, dtype, test-set membership) is still refused by the store.
    """
    spec = json.loads(json.dumps(spec))
    if name in store:
        stored = store[name].spec
        if stored != spec and _stable(stored) == _stable(spec):
            note = f"{name}: source files changed since the first import (size or mtime); resumed"
            return store.create_feature(name, spec=stored, exist_ok=True, **kwargs), note
    return store.create_feature(name, spec=spec, exist_ok=True, **kwargs), None


def file_provenance(path: Path) -> dict[str, Any]:
    """Absolute path, size and mtime of a file: enough to notice that a source changed."""
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime": stat.st_mtime}


def folder_provenance(files: list[Path]) -> dict[str, Any]:
    """Count, total size and newest mtime of a folder's files (hashing 100 GB of .npy is not
    worth it: size plus mtime already catches re-extracted or truncated files)."""
    stats = [f.stat() for f in files]
    return {
        "files": len(stats),
        "bytes": sum(s.st_size for s in stats),
        "mtime": max((s.st_mtime for s in stats), default=0.0),
    }


def default_name(text: str) -> str:
    """A valid feature name from a file or folder name ("feats v2.h5" stem -> "feats_v2")."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", text).lstrip("_.-")
    return name or "legacy"


def json_value(value: Any) -> Any:
    """NumPy scalars, arrays and bytes as plain JSON values (for the spec)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray | np.generic):
        return json_value(value.tolist())
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    return value


def progress_bar(enabled: bool) -> Progress:
    """A rich progress bar with counts and time left (silent when disabled)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
    )


# (module, name) pairs a feature pickle may reference: array reconstruction in NumPy 1.x and 2.x
# module spellings, and the byte-string codec pickle protocol 2 uses for array buffers.
_ALLOWED_GLOBALS = {
    (module, name)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
} | {
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
    ("collections", "OrderedDict"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS or (module == "numpy.dtypes" and name[0].isupper()):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name}: only NumPy arrays and plain Python values are "
            f"accepted in feature pickles"
        )


# What a corrupt or truncated pickle raises from inside the unpickler.
PICKLE_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    AttributeError,
)


def load_pickle(path: Path) -> Any:
    """Unpickle `path`, allowing only NumPy arrays and plain values.

    `encoding="latin1"` makes Python 2 pickles of NumPy arrays (the DSTC7-era dumps) load.
    """
    with open(path, "rb") as f:
        return _SafeUnpickler(f, encoding="latin1").load()
