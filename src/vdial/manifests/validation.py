"""Consistency checks over a manifest's two tables, reported per split.

A manifest can be structurally valid and still unusable: media files not downloaded yet,
the same id listed twice (feature stores key by id), or dialog turns pointing at media that no
row describes. These are collected here instead of raised so that a user sees all of them at
once, and so that a dataset whose test videos are not yet on disk can still be built.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    from rich.table import Table


@dataclass(frozen=True, kw_only=True)
class SplitCounts:
    media: int  # media rows in the split
    missing: int  # of those, rows whose file is not on disk
    dialogs: int  # distinct dialog ids in the split
    turns: int  # dialog rows (one per turn) in the split


@dataclass(frozen=True, kw_only=True)
class ValidationReport:
    name: str  # manifest name
    splits: dict[str, SplitCounts]  # in first-appearance order
    missing_files: tuple[str, ...]  # media ids whose path is null or not an existing file
    duplicate_media: tuple[str, ...]  # media ids that occur in more than one row
    orphan_dialogs: tuple[str, ...]  # dialog ids whose media_id has no media row

    @property
    def ok(self) -> bool:
        """True when every media file exists, ids are unique and every dialog has its media."""
        return not (self.missing_files or self.duplicate_media or self.orphan_dialogs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "splits": {
                split: {
                    "media": c.media,
                    "missing": c.missing,
                    "dialogs": c.dialogs,
                    "turns": c.turns,
                }
                for split, c in self.splits.items()
            },
            "totals": {
                "media": sum(c.media for c in self.splits.values()),
                "missing": len(self.missing_files),
                "dialogs": sum(c.dialogs for c in self.splits.values()),
                "turns": sum(c.turns for c in self.splits.values()),
            },
            "missing_files": list(self.missing_files),
            "duplicate_media": list(self.duplicate_media),
            "orphan_dialogs": list(self.orphan_dialogs),
        }

    def problems(self, limit: int = 5) -> list[str]:
        """One line per failed check, listing at most `limit` offending ids."""

        def line(label: str, ids: tuple[str, ...]) -> str:
            shown = ", ".join(ids[:limit]) + (", ..." if len(ids) > limit else "")
            return f"{len(ids)} {label}: {shown}"

        checks = [
            ("media file(s) missing on disk", self.missing_files),
            ("duplicate media id(s)", self.duplicate_media),
            ("dialog(s) without a media row", self.orphan_dialogs),
        ]
        return [line(label, ids) for label, ids in checks if ids]

    def table(self) -> Table:
        from rich.markup import escape
        from rich.table import Table

        title = f"manifest {self.name}: " + ("ok" if self.ok else "problems found")
        table = Table(title=escape(title), caption=escape("\n".join(self.problems())) or None)
        for column in ("split", "media", "missing", "dialogs", "turns"):
            table.add_column(column, justify="left" if column == "split" else "right")
        for split, c in self.splits.items():
            missing = f"[yellow]{c.missing}[/]" if c.missing else "0"
            table.add_row(escape(split), str(c.media), missing, str(c.dialogs), str(c.turns))
        totals = self.to_dict()["totals"]
        table.add_row(
            "[bold]total[/]", *(str(totals[k]) for k in ("media", "missing", "dialogs", "turns"))
        )
        return table


def _first_appearance(*columns: pa.ChunkedArray) -> list[str]:
    seen: dict[str, None] = {}
    for column in columns:
        for value in pc.unique(column).to_pylist():
            seen.setdefault(value, None)
    return list(seen)


def split_names(media: pa.Table, dialogs: pa.Table) -> list[str]:
    """Splits in order of first appearance, media rows first."""
    return _first_appearance(media["split"], dialogs["split"])


def validate(name: str, media: pa.Table, dialogs: pa.Table) -> ValidationReport:
    """Check files on disk, id uniqueness and dialog -> media references."""
    ids = media["id"].to_pylist()
    paths = media["path"].to_pylist()
    media_splits = media["split"].to_pylist()
    missing_rows = [i for i, p in enumerate(paths) if p is None or not os.path.isfile(p)]
    missing_ids = tuple(ids[i] for i in missing_rows)

    counts = media.group_by("id").aggregate([("id", "count")])
    duplicates = set(pc.filter(counts["id"], pc.greater(counts["id_count"], 1)).to_pylist())
    duplicate_ids = tuple(i for i in dict.fromkeys(ids) if i in duplicates)

    known = pc.is_in(dialogs["media_id"], value_set=media["id"].combine_chunks())
    orphans = tuple(_first_appearance(pc.filter(dialogs["dialog_id"], pc.invert(known))))

    per_split_dialogs = dialogs.group_by("split").aggregate(
        [("dialog_id", "count_distinct"), ("turn", "count")]
    )
    dialog_counts = {
        row["split"]: (row["dialog_id_count_distinct"], row["turn_count"])
        for row in per_split_dialogs.to_pylist()
    }
    missing_by_split: dict[str, int] = {}
    for i in missing_rows:
        missing_by_split[media_splits[i]] = missing_by_split.get(media_splits[i], 0) + 1
    splits = {
        split: SplitCounts(
            media=media_splits.count(split),
            missing=missing_by_split.get(split, 0),
            dialogs=dialog_counts.get(split, (0, 0))[0],
            turns=dialog_counts.get(split, (0, 0))[1],
        )
        for split in split_names(media, dialogs)
    }
    return ValidationReport(
        name=name,
        splits=splits,
        missing_files=missing_ids,
        duplicate_media=duplicate_ids,
        orphan_dialogs=orphans,
    )
