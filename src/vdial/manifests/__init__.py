"""Dataset manifests: AVSD, VisDial and folder/CSV readers producing media and dialog tables.

A `Manifest` is the single description of a dataset that extraction, caching and training
share: one media row per video or image (keyed by a unique id) and one dialog row per turn.

Names are re-exported lazily: `vdial.manifests.cli` lives in this package, and importing
pyarrow eagerly here would slow down every `vdial --help`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vdial.manifests.avsd import read_avsd
    from vdial.manifests.folder import read_folder
    from vdial.manifests.manifest import Manifest
    from vdial.manifests.schema import DIALOG_SCHEMA, MEDIA_SCHEMA, ManifestError
    from vdial.manifests.validation import SplitCounts, ValidationReport
    from vdial.manifests.visdial import read_visdial

_EXPORTS = {
    "DIALOG_SCHEMA": "vdial.manifests.schema",
    "MEDIA_SCHEMA": "vdial.manifests.schema",
    "Manifest": "vdial.manifests.manifest",
    "ManifestError": "vdial.manifests.schema",
    "SplitCounts": "vdial.manifests.validation",
    "ValidationReport": "vdial.manifests.validation",
    "read_avsd": "vdial.manifests.avsd",
    "read_folder": "vdial.manifests.folder",
    "read_visdial": "vdial.manifests.visdial",
}

__all__ = [
    "DIALOG_SCHEMA",
    "MEDIA_SCHEMA",
    "Manifest",
    "ManifestError",
    "SplitCounts",
    "ValidationReport",
    "read_avsd",
    "read_folder",
    "read_visdial",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
