"""Locating media files on disk: videos by exact name, images by the integer id in their name.

Directories are listed once and looked up in memory: AVSD has ~10k videos and VisDial ~130k
images, and one stat per candidate extension per id would be needlessly slow on network disks.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from pathlib import Path

from vdial.manifests.schema import ManifestError

# Order matters: the first existing extension wins when a video exists in several containers.
VIDEO_EXTS = (".mp4", ".webm", ".mkv", ".avi", ".mov")
IMAGE_EXTS = (".jpg", ".jpeg", ".png")

_TRAILING_INT = re.compile(r"(\d+)$")


def kind_of(path: str | Path) -> str | None:
    """ "video" or "image" by file extension (case-insensitive), None for anything else."""
    ext = os.path.splitext(str(path))[1].lower()
    if ext in VIDEO_EXTS:
        return "video"
    if ext in IMAGE_EXTS:
        return "image"
    return None


def _require_dir(directory: Path, what: str) -> Path:
    if not directory.is_dir():
        raise ManifestError(f"{directory}: {what} directory not found")
    return directory.resolve()


class VideoDir:
    """`<dir>/<id>.<ext>` lookup for the first existing ext in VIDEO_EXTS."""

    def __init__(self, directory: Path) -> None:
        self.directory = _require_dir(directory, "video")
        with os.scandir(self.directory) as entries:
            self._names = {e.name for e in entries if e.is_file()}

    def find(self, media_id: str) -> str | None:
        for ext in VIDEO_EXTS:
            name = media_id + ext
            if name in self._names:
                return str(self.directory / name)
        return None


def image_id_of(path: Path) -> int | None:
    """The integer at the end of an image file's stem: COCO_train2014_000000000009.jpg -> 9."""
    match = _TRAILING_INT.search(path.stem)
    return int(match.group(1)) if match else None


class ImageIndex:
    """Every *.jpg/*.jpeg/*.png under a directory (recursively), keyed by the id in its name."""

    def __init__(self, directory: Path) -> None:
        self.directory = _require_dir(directory, "image")
        self._by_id: dict[int, list[Path]] = defaultdict(list)
        for parent, dirs, files in os.walk(self.directory):
            dirs.sort()
            for name in sorted(files):
                path = Path(parent) / name
                if os.path.splitext(name)[1].lower() not in IMAGE_EXTS:
                    continue
                image_id = image_id_of(path)
                if image_id is not None:
                    self._by_id[image_id].append(path)

    def find(self, image_id: int, hints: tuple[str, ...]) -> str | None:
        """The image for `image_id`; several candidates are narrowed by split-name `hints`.

        VisDial mixes COCO_train2014_*, COCO_val2014_*, VisualDialog_val2018_* and
        VisualDialog_test2018_* files whose numeric ids can coincide, so an id alone may not
        decide. Hints are tried in order (e.g. the file's declared split "val2018", then the
        manifest split "val"); the first one mentioned by exactly one candidate's relative path
        wins. A tie that remains is an error rather than a silent guess.
        """
        candidates = self._by_id.get(image_id, [])
        if len(candidates) <= 1:
            return str(candidates[0]) if candidates else None
        relative = [str(p.relative_to(self.directory)).lower() for p in candidates]
        for hint in hints:
            token = re.compile(rf"(^|[^a-z]){re.escape(hint.lower())}([^a-z]|$)")
            named = [p for p, rel in zip(candidates, relative, strict=True) if token.search(rel)]
            if len(named) == 1:
                return str(named[0])
        raise ManifestError(
            f"{self.directory}: image id {image_id} (split {' / '.join(hints)}) matches several "
            f"files: {', '.join(map(str, candidates))}; point the image directory at one "
            "split's images"
        )
