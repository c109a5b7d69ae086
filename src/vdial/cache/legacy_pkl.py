"""Video-ChatGPT / BT-Adapter per-video `.pkl` feature folders into a feature store.

Both repositories write one `<video id>.pkl` per video holding a bare NumPy array (not a dict),
pickled with `pickle.dump`:

* mbzuai-oryx/Video-ChatGPT `scripts/save_spatio_temporal_clip_features.py`: CLIP ViT-L/14
  (penultimate layer, CLS dropped) over 100 frames gives (T, 256, 1024); the file holds
  `get_spatio_temporal_features(...)`, a float16 (356, 1024) array: rows 0-99 are each frame's
  mean over the 256 patches (zero rows when the video had fewer than 100 frames), rows 100-355
  each patch position's mean over frames.
* farewellthree/BT-Adapter `mmaction2/save_clip_features.py`: float16 CLIP ViT-L/14 tokens of
  layer -5 for 100 frames, (T, 257, 1024) with the CLS token first; its trainer
  (`llava_base/bt_adapter/train/train.py`) also accepts Video-ChatGPT's 2-D arrays.

Each file becomes one item as stored (axis 0 is rows: tokens for Video-ChatGPT, frames for
BT-Adapter); the layout recognised from the first array is written into the spec. Pickles are
loaded with `legacy_common.load_pickle`, which refuses anything but arrays and plain values.
A file that does not load, or holds something else, is recorded as a failed item; ids already
in the feature are skipped, so an interrupted import resumes. Export with `export_npy`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vdial.cache.legacy_common import (
    PICKLE_ERRORS,
    BadItem,
    DtypePolicy,
    ImportReport,
    create_or_resume,
    default_name,
    first_loadable,
    folder_provenance,
    import_files,
    load_pickle,
    progress_bar,
    resolve_dtype,
)
from vdial.cache.store import FeatureStore

VIDEO_CHATGPT_ROWS = 356  # 100 temporal + 256 spatial tokens
BT_ADAPTER_TOKENS = 257  # CLS + 16 x 16 patches per frame


def describe_layout(shape: tuple[int, ...]) -> str:
    """Name the known layout an array of `shape` follows ("array" when none fits)."""
    if len(shape) == 2 and shape[0] == VIDEO_CHATGPT_ROWS:
        return (
            "video-chatgpt: rows 0-99 per-frame mean of patch tokens (zero-padded), rows 100-355 "
            "per-patch mean over frames"
        )
    if len(shape) == 3 and shape[1] == BT_ADAPTER_TOKENS:
        return "bt-adapter: per frame, CLS then 16x16 patch tokens"
    return "array"


def _load(path: Path) -> np.ndarray:
    try:
        value = load_pickle(path)
    except (*PICKLE_ERRORS, OSError) as err:
        raise BadItem(f"{path}: cannot unpickle: {type(err).__name__}: {err}") from None
    if not isinstance(value, np.ndarray):
        what = f"dict with keys {sorted(map(str, value))[:5]}" if isinstance(value, dict) else None
        raise BadItem(f"{path}: holds a {what or type(value).__name__}; expected a NumPy array")
    if value.ndim == 0 or value.dtype.kind not in "biuf":
        raise BadItem(f"{path}: holds a {value.dtype} array of shape {value.shape}")
    return value


def import_videochatgpt_pkl(
    store: FeatureStore,
    folder: str | Path,
    *,
    name: str | None = None,
    dtype: DtypePolicy = "keep",
    progress: bool = True,
) -> ImportReport:
    """Import every `<id>.pkl` of `folder` as feature `name` (default: the folder's name).

    `dtype` is "keep" (exact), "float16" or "float32".
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no feature folder at {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix == ".pkl" and p.is_file())
    others = sorted(p.name for p in folder.iterdir() if p not in set(files))
    if not files:
        raise ValueError(f"{folder} holds no .pkl files; expected <video id>.pkl per video")
    template = first_loadable(files, _load)
    if template is None:
        raise ValueError(f"none of the {len(files)} .pkl files in {folder} holds a loadable array")
    stored = resolve_dtype(dtype, template.dtype)
    name = name or default_name(folder.name)
    source = {
        "format": "videochatgpt-pkl",
        "path": str(folder.resolve()),
        **folder_provenance(files),
        "dtype": template.dtype.name,
    }
    spec = {
        "name": name,
        "layout": describe_layout(template.shape),
        "dtype_policy": dtype,
        "source": source,
    }
    feature, note = create_or_resume(
        store, name, spec, item_shape=template.shape[1:], dtype=stored.name
    )
    with progress_bar(progress) as bar:
        added, skipped, failed = import_files(
            feature,
            [(path.stem, path) for path in files],
            _load,
            policy=dtype,
            bar=bar,
            description=f"{folder.name} -> {name}",
        )
    notes = [note] if note else []
    if others:
        notes.append(f"{folder}: ignored {len(others)} non-.pkl entries: {others[:5]}")
    return ImportReport(
        feature=name, added=added, skipped=skipped, failed=failed, notes=tuple(notes)
    )
