"""AVSD per-video `.npy` feature folders into a feature store, and any feature out as `.npy` files.

The layout is the one the DSTC7 AVSD official baseline reads (github
dialogtekgeek/AudioVisualSceneAwareDialog: `run_i3d.sh` sets `fea_file="<FeaType>/<ImageID>.npy"`
under `data/charades_features`, and `code/data_handler.py` loads one file per video), with the
feature packages listed by hudaAlamri/DSTC7-Audio-Visual-Scene-Aware-Dialog-AVSD-Challenge and
dialogtekgeek/AVSD-DSTC10_Official (`i3d_rgb.tgz`, `i3d_flow.tgz`, `vggish.tgz` for train and
validation, `*_testset.tgz` for the official test set); later baselines read the same folders,
e.g. `np.load("data/avsd/i3d_rgb_testset/" + vid + ".npy")`:

    charades_features/
        i3d_rgb/<video id>.npy           (T, 2048): one row per I3D clip, train + validation
        i3d_rgb_testset/<video id>.npy   (T, 2048): the official test videos
        i3d_flow/, i3d_flow_testset/     (T, 2048)
        vggish/, vggish_testset/         (T, 128): one row per ~1 s of audio

Each type (`i3d_rgb`, ...) becomes one feature whose items are the arrays as saved (axis 0 is the
ragged time axis); which ids came from `<type>_testset` is recorded in the spec so that
`export_npy` recreates both folders. Unreadable files are recorded as failed items and the import
goes on; ids already in the feature are skipped, so an interrupted import resumes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rich.progress import Progress

from vdial.cache.feature import Feature
from vdial.cache.legacy_common import (
    BadItem,
    DtypePolicy,
    ImportReport,
    create_or_resume,
    first_loadable,
    folder_provenance,
    import_files,
    progress_bar,
    resolve_dtype,
)
from vdial.cache.store import FeatureStore

TESTSET_SUFFIX = "_testset"
SPLITS = ("train", "test")  # "train" is `<type>/` (train + validation), "test" `<type>_testset/`


def _split_of(folder: Path) -> tuple[str, str]:
    name = folder.name
    if name.endswith(TESTSET_SUFFIX) and len(name) > len(TESTSET_SUFFIX):
        return name[: -len(TESTSET_SUFFIX)], "test"
    return name, "train"


def find_avsd_folders(root: Path) -> dict[str, dict[str, Path]]:
    """{type: {"train": folder, "test": folder}} for the `.npy` folders in `root`.

    `root` is either a features root holding `<type>/` and `<type>_testset/` folders, or one
    such folder itself.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no AVSD feature folder at {root}")
    candidates = [root] if any(root.glob("*.npy")) else sorted(p for p in root.iterdir())
    found: dict[str, dict[str, Path]] = {}
    for folder in candidates:
        if folder.is_dir() and any(folder.glob("*.npy")):
            feature_type, split = _split_of(folder)
            found.setdefault(feature_type, {})[split] = folder
    if not found:
        raise ValueError(
            f"{root} holds no .npy files and no folders of them; expected <type>/<id>.npy and "
            f"<type>_testset/<id>.npy (e.g. i3d_rgb/, i3d_rgb_testset/)"
        )
    return found


def _list_npy(folder: Path) -> tuple[list[Path], list[str]]:
    files, ignored = [], []
    for path in sorted(folder.iterdir()):
        (files if path.suffix == ".npy" and path.is_file() else ignored).append(path)
    return files, [p.name for p in ignored]


def _load(path: Path) -> np.ndarray:
    try:
        # allow_pickle=False: a .npy holding Python objects is not a feature array.
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise BadItem(f"{path}: cannot load .npy: {err}") from None
    if array.ndim == 0:
        raise BadItem(f"{path}: holds a 0-d array; expected (rows, ...) with rows on axis 0")
    return array


def import_avsd_npy(
    store: FeatureStore,
    root: str | Path,
    *,
    prefix: str | None = None,
    types: list[str] | None = None,
    dtype: DtypePolicy = "keep",
    progress: bool = True,
) -> list[ImportReport]:
    """Import each feature type found under `root` as feature `<prefix>/<type>` (or `<type>`).

    `types` limits the import to those types; `dtype` is "keep" (exact), "float16" or "float32".
    """
    root = Path(root)
    found = find_avsd_folders(root)
    if types:
        unknown = sorted(set(types) - set(found))
        if unknown:
            raise ValueError(f"{root}: no folders for type(s) {unknown}; found {sorted(found)}")
        found = {t: found[t] for t in types}
    reports = []
    with progress_bar(progress) as bar:
        for feature_type, folders in sorted(found.items()):
            name = f"{prefix}/{feature_type}" if prefix else feature_type
            reports.append(_import_type(store, name, feature_type, folders, dtype, bar))
    return reports


def _import_type(
    store: FeatureStore,
    name: str,
    feature_type: str,
    folders: dict[str, Path],
    policy: str,
    bar: Progress,
) -> ImportReport:
    entries: list[tuple[str, Path]] = []
    split_ids: dict[str, set[str]] = {}
    notes = []
    for split in SPLITS:
        if split not in folders:
            continue
        files, ignored = _list_npy(folders[split])
        if ignored:
            notes.append(
                f"{folders[split]}: ignored {len(ignored)} non-.npy entries: {ignored[:5]}"
            )
        split_ids[split] = {p.stem for p in files}
        entries += [(p.stem, p) for p in files]
    both = sorted(split_ids.get("train", set()) & split_ids.get("test", set()))
    if both:
        raise ValueError(
            f"{len(both)} id(s) are in both {folders['train']} and {folders['test']} (e.g. "
            f"{both[:5]}); one feature cannot hold two items per id: import the folders into "
            f"separate stores"
        )
    template = first_loadable([path for _, path in entries], _load)
    if template is None:
        raise ValueError(f"no loadable .npy file among the {len(entries)} for type {feature_type}")
    stored_dtype = resolve_dtype(policy, template.dtype)
    source = {
        "format": "avsd-npy",
        "path": str(next(iter(folders.values())).parent.resolve()),
        "folders": {split: folder.name for split, folder in folders.items()},
        **folder_provenance([path for _, path in entries]),
        "dtype": template.dtype.name,
        # Membership of the test folder, so export_npy recreates `<type>_testset/`.
        "testset_ids": sorted(split_ids.get("test", ())),
    }
    spec = {"name": feature_type, "dtype_policy": policy, "source": source}
    feature, note = create_or_resume(
        store, name, spec, item_shape=template.shape[1:], dtype=stored_dtype.name
    )
    notes += [note] if note else []
    added, skipped, failed = import_files(
        feature, entries, _load, policy=policy, bar=bar, description=f"{feature_type} -> {name}"
    )
    return ImportReport(
        feature=name, added=added, skipped=skipped, failed=failed, notes=tuple(notes)
    )


def _check_filename(item_id: str) -> str:
    if not item_id or item_id in (".", "..") or any(c in item_id for c in "/\\\0"):
        raise ValueError(f"id {item_id!r} cannot be used as a file name")
    return item_id


def export_npy(feature: Feature, out_dir: str | Path, *, progress: bool = True) -> int:
    """Write every item of `feature` as `<id>.npy` (its data array, in the feature's dtype).

    A feature imported from AVSD folders is written back as `<type>/<id>.npy` and
    `<type>_testset/<id>.npy`, as its source was. Returns the number of files written.
    """
    out_dir = Path(out_dir)
    source = feature.spec.get("source") or {}
    folders: dict[str, str] = (
        source.get("folders", {}) if source.get("format") == "avsd-npy" else {}
    )
    test_ids = set(source.get("testset_ids", ()))
    ids = feature.ids
    for item_id in ids:
        _check_filename(item_id)
    made: set[Path] = set()
    with progress_bar(progress) as bar:
        task = bar.add_task(f"exporting {feature.name} to {out_dir}", total=len(ids))
        for item_id in ids:
            folder = folders.get("test" if item_id in test_ids else "train")
            target = out_dir / folder if folder else out_dir
            if target not in made:
                target.mkdir(parents=True, exist_ok=True)
                made.add(target)
            np.save(target / f"{item_id}.npy", feature[item_id])
            bar.advance(task)
    return len(ids)
