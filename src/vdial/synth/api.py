"""Generating the synthetic "shapes" dataset: `plan` decides everything, `generate` writes it.

Layout written under `out`:

    videos/<id>.mp4                       H.264 clips, ids "shapes_00000", ...
    images/<split>/VisualDialog_<split>2018_<id:012d>.jpg
    avsd/train.json, val.json, test.json  DSTC7 format (test cut at an undisclosed turn)
    avsd/test_multiref.json               DSTC10 multiref+reason format of the test dialogs
    avsd/question_types.json              {video id: [type of each turn]}, all splits
    visdial/visdial_1.0_{train,val,test}.json, visdial/visdial_1.0_val_dense_annotations.json
    visdial/question_types.json           {image id: [type of each round]}, all splits
    synth.json                            parameters, seed and every item's ground truth

Each item draws from its own RNG seeded by (seed, dataset, index), so an item does not
change when another split's size does, and the same seed gives byte-identical JSON and
identical frames.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vdial.synth import formats
from vdial.synth.dialogs import AvsdDialog, VisdialDialog, avsd_dialog, visdial_dialog
from vdial.synth.render import write_image, write_video
from vdial.synth.scenes import QUESTION_TYPES, RGB, sample_scene

SPLITS = ("train", "val", "test")
FPS = 8


@dataclass(frozen=True, kw_only=True)
class SizeSpec:
    """How much to generate and at what resolution."""

    avsd_train: int  # videos with full train dialogs
    avsd_val: int  # videos with full val dialogs
    avsd_test: int  # videos with a scored test dialog
    visdial_train: int  # images in VisDial train
    visdial_val: int  # images in VisDial val (each with one densely annotated round)
    visdial_test: int  # images in VisDial test
    side: int  # frame width and height in pixels
    frames_min: int  # shortest clip, in frames at FPS
    frames_max: int  # longest clip, in frames at FPS


SIZES: dict[str, SizeSpec] = {
    "tiny": SizeSpec(
        avsd_train=6,
        avsd_val=2,
        avsd_test=4,
        visdial_train=4,
        visdial_val=2,
        visdial_test=2,
        side=64,
        frames_min=16,
        frames_max=16,
    ),
    "demo": SizeSpec(
        avsd_train=800,
        avsd_val=40,
        avsd_test=160,
        visdial_train=200,
        visdial_val=40,
        visdial_test=40,
        side=128,
        frames_min=16,
        frames_max=24,
    ),
    "bench": SizeSpec(
        avsd_train=2000,
        avsd_val=250,
        avsd_test=500,
        visdial_train=1000,
        visdial_val=200,
        visdial_test=200,
        side=128,
        frames_min=16,
        frames_max=24,
    ),
}


@dataclass(frozen=True, kw_only=True)
class Plan:
    """Everything a generation writes, before any pixel is drawn."""

    size: str  # name in SIZES
    seed: int  # the seed every item's RNG derives from
    spec: SizeSpec  # the sizes after --videos/--images overrides
    avsd: dict[str, list[AvsdDialog]]  # split -> dialogs (one per video)
    visdial: dict[str, list[VisdialDialog]]  # split -> dialogs (one per image)


@dataclass(frozen=True, kw_only=True)
class SynthSummary:
    """Where a generation wrote what, and how many."""

    root: Path  # the output directory
    videos_dir: Path  # <root>/videos
    images_dir: Path  # <root>/images
    avsd_dir: Path  # <root>/avsd
    visdial_dir: Path  # <root>/visdial
    synth_json: Path  # <root>/synth.json
    size: str  # size name
    seed: int  # seed used
    videos: dict[str, int]  # split -> number of videos (= AVSD dialogs)
    images: dict[str, int]  # split -> number of images (= VisDial dialogs)
    avsd_turns: int  # AVSD turns over all splits


def _rng(seed: int, *parts: object) -> random.Random:
    # String seeds are hashed with SHA-512 by `random`, independent of PYTHONHASHSEED.
    return random.Random(":".join(["vdial-synth", str(seed), *map(str, parts)]))


def _resolve(size: str, videos: int | None, images: int | None) -> SizeSpec:
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {sorted(SIZES)}")
    spec = SIZES[size]
    for name, value in (("videos", videos), ("images", images)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    return SizeSpec(
        **{
            **asdict(spec),
            "avsd_train": spec.avsd_train if videos is None else videos,
            "visdial_train": spec.visdial_train if images is None else images,
        }
    )


def plan(
    *, size: str = "tiny", seed: int = 0, videos: int | None = None, images: int | None = None
) -> Plan:
    """Sample every scene and dialog (no rendering); cheap enough for demo-size checks."""
    spec = _resolve(size, videos, images)
    counts = {
        "avsd": (spec.avsd_train, spec.avsd_val, spec.avsd_test),
        "visdial": (spec.visdial_train, spec.visdial_val, spec.visdial_test),
    }
    # The scored type of test dialogs cycles from a seeded offset: ~25% each.
    offset = _rng(seed, "avsd", "offset").randrange(len(QUESTION_TYPES))
    avsd: dict[str, list[AvsdDialog]] = {}
    visdial: dict[str, list[VisdialDialog]] = {}
    index = 0
    for split, n in zip(SPLITS, counts["avsd"], strict=True):
        avsd[split] = []
        for k in range(n):
            rng = _rng(seed, "avsd", split, k)
            frames = rng.randint(spec.frames_min, spec.frames_max)
            scene = sample_scene(
                rng, width=spec.side, height=spec.side, frames=frames, fps=FPS, moving=True
            )
            qtype = QUESTION_TYPES[(offset + k) % 4] if split == "test" else None
            avsd[split].append(
                avsd_dialog(
                    rng, id=f"shapes_{index:05d}", split=split, scene=scene, scored_type=qtype
                )
            )
            index += 1
    image_id = 1
    for split, n in zip(SPLITS, counts["visdial"], strict=True):
        visdial[split] = []
        for k in range(n):
            rng = _rng(seed, "visdial", split, k)
            scene = sample_scene(
                rng, width=spec.side, height=spec.side, frames=1, fps=0, moving=False
            )
            visdial[split].append(visdial_dialog(rng, image_id=image_id, split=split, scene=scene))
            image_id += 1
    return Plan(size=size, seed=seed, spec=spec, avsd=avsd, visdial=visdial)


def image_path(root: Path, split: str, image_id: int) -> Path:
    """Where VisDial image `image_id` of `split` is written under `root`."""
    return root / "images" / split / f"VisualDialog_{split}2018_{image_id:012d}.jpg"


def _ground_truth(p: Plan) -> dict[str, Any]:
    avsd: dict[str, Any] = {}
    for dialogs in p.avsd.values():
        for d in dialogs:
            entry: dict[str, Any] = {"split": d.split, "scene": d.scene.to_dict()}
            if d.split == "test":
                last = d.turns[-1]
                entry["scored"] = {
                    "turn": len(d.turns),
                    "type": last.question.qtype,
                    "question": last.text,
                    "answer": last.answer.text,
                    "references": list(d.references),
                }
            avsd[d.id] = entry
    visdial = {
        str(d.image_id): {"split": d.split, "scene": d.scene.to_dict()}
        for dialogs in p.visdial.values()
        for d in dialogs
    }
    return {
        "generator": "vdial.synth",
        "size": p.size,
        "seed": p.seed,
        "params": {**asdict(p.spec), "fps": FPS},
        "palette": {name: list(rgb) for name, rgb in RGB.items()},
        "avsd": avsd,
        "visdial": visdial,
    }


def write_annotations(p: Plan, out: Path) -> None:
    """All JSON files of a plan (no media)."""
    for split in SPLITS:
        formats.write_json(
            out / "avsd" / f"{split}.json", formats.avsd_json(p.avsd[split]), indent=2
        )
    formats.write_json(
        out / "avsd" / "test_multiref.json", formats.avsd_multiref_json(p.avsd["test"]), indent=2
    )
    all_avsd = [d for split in SPLITS for d in p.avsd[split]]
    formats.write_json(
        out / "avsd" / "question_types.json", formats.question_types(all_avsd), indent=2
    )
    for split in SPLITS:
        formats.write_json(
            out / "visdial" / f"visdial_1.0_{split}.json",
            formats.visdial_json(split, p.visdial[split]),
        )
    formats.write_json(
        out / "visdial" / "visdial_1.0_val_dense_annotations.json",
        formats.dense_annotations(p.visdial["val"]),
    )
    all_visdial = [d for split in SPLITS for d in p.visdial[split]]
    formats.write_json(
        out / "visdial" / "question_types.json",
        formats.visdial_question_types(all_visdial),
        indent=2,
    )
    formats.write_json(out / "synth.json", _ground_truth(p), indent=1)


def generate(
    out: Path,
    *,
    size: str = "tiny",
    seed: int = 0,
    videos: int | None = None,
    images: int | None = None,
    progress: bool = True,
) -> SynthSummary:
    """Write the dataset of `size` under `out` (see the module docstring for the layout)."""
    from rich.progress import Progress

    out = Path(out)
    p = plan(size=size, seed=seed, videos=videos, images=images)
    write_annotations(p, out)
    media = [("video", d) for split in SPLITS for d in p.avsd[split]]
    media += [("image", d) for split in SPLITS for d in p.visdial[split]]
    with Progress(disable=not progress, transient=False) as bar:
        task = bar.add_task("writing videos and images", total=len(media))
        for kind, item in media:
            if kind == "video":
                write_video(item.scene, out / "videos" / f"{item.id}.mp4")
            else:
                write_image(item.scene, image_path(out, item.split, item.image_id))
            bar.advance(task)
    return SynthSummary(
        root=out,
        videos_dir=out / "videos",
        images_dir=out / "images",
        avsd_dir=out / "avsd",
        visdial_dir=out / "visdial",
        synth_json=out / "synth.json",
        size=size,
        seed=seed,
        videos={s: len(p.avsd[s]) for s in SPLITS},
        images={s: len(p.visdial[s]) for s in SPLITS},
        avsd_turns=sum(len(d.turns) for s in SPLITS for d in p.avsd[s]),
    )
