"""The feature cache: a Zarr feature store per dataset, crash-safe writers, and derived views.

Names are imported lazily so that `vdial.cache.cli` (and so `vdial --help`) loads no Zarr,
NumPy or torch until a command actually runs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Feature": "vdial.cache.feature",
    "FeatureReader": "vdial.cache.reader",
    "FeatureStore": "vdial.cache.store",
    "FeatureWriter": "vdial.cache.writer",
    "VIEW_OPS": "vdial.cache.view_ops",
    "make_view": "vdial.cache.views",
    "view_op": "vdial.cache.view_ops",
}

__all__ = [
    "Feature",
    "FeatureReader",
    "FeatureStore",
    "FeatureWriter",
    "VIEW_OPS",
    "make_view",
    "view_op",
]

if TYPE_CHECKING:
    from vdial.cache.feature import Feature
    from vdial.cache.reader import FeatureReader
    from vdial.cache.store import FeatureStore
    from vdial.cache.view_ops import VIEW_OPS, view_op
    from vdial.cache.views import make_view
    from vdial.cache.writer import FeatureWriter


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
