"""``capture import cityscapes``: Cityscapes images and fine labels into shards, one town per city.

Reads the official layout under ``ROOT`` (``<split>`` is train, val, test or train_extra)::

    leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png           annotated frames
    leftImg8bit_sequence/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png  30-frame snippets
    gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png            fine labels
    camera/<split>/<city>/<city>_<seq>_<frame>_camera.json                    intrinsics (optional)

Snippet frames become clips of ``frames`` consecutive frames (never across a gap); a frame with
a gtFine file carries semantic labels, the others have none (per-frame validity, format 2 on).
An annotated frame that no clip covers (no sequence folder, or a snippet's leftover) becomes a
one-frame clip, so no label is left out. Labels are stored as CARLA tags (the shard format's
semantic schema): each Cityscapes label id maps to the tag that the ``cityscapes19`` label map
turns into that label's official train id (the table of ``cityscapesScripts``,
``cityscapesscripts.helpers.labels``), so training with ``label_map=cityscapes19`` sees exactly the
official 19 classes and ignores the rest. Clip ids are the Cityscapes name of their first frame;
clips already in the output are skipped, so an import can be repeated or resumed.
``<out>/cityscapes_splits.toml`` lists each imported city under its official split, for
``capture split OUT --splits OUT/cityscapes_splits.toml``.

``leftImg8bit/`` and ``gtFine/`` are required (without them an import would be unlabelled or
empty); without ``camera/`` the clips lack intrinsics, which the report counts and the command
says. Options are checked first
(:class:`~carla_capture.importers.config.CityscapesImport`); a city folder name that is not a
town name (e.g. ``.hidden``) is refused, so nothing is written outside ``--out``.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from carla_capture.config import town_name
from carla_capture.importers.config import CityscapesImport
from carla_capture.importers.report import ImportReport
from carla_capture.record import existing_clip_ids
from carla_capture.shard_names import open_next_shard
from clipcore.errors import CaptureError
from clipcore.fsutil import atomic_write_text
from clipcore.records import Clip, Frame
from clipcore.settings import build
from clipcore.shards import ShardWriter
from clipcore.tags import TAG_ID

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

log = logging.getLogger(__name__)

#: The report's entries (:class:`~carla_capture.importers.report.ImportReport`).
LABELLED = "labelled frames"
EXISTING = "clips already imported"
NO_INTRINSICS = "clips without intrinsics"

#: Frame rate of the Cityscapes cameras (the sequences are recorded at 17 Hz).
FPS = 17.0
SPLITS = ("train", "val", "test", "train_extra")
SPLITS_FILE = "cityscapes_splits.toml"
_NAME = re.compile(r"^(?P<city>.+)_(?P<seq>\d{6})_(?P<frame>\d{6})_leftImg8bit\.png$")
#: Cityscapes label name -> CARLA tag. Each of the 19 evaluated labels maps to the tag that the
#: ``cityscapes19`` label map turns into its class; every ignored one (train id 255) to the nearest
#: tag that cityscapes19 also ignores, Unlabeled where none is near (tested against both tables).
_TAG_OF = {
    "road": "Roads",
    "sidewalk": "Sidewalks",
    "building": "Buildings",
    "wall": "Walls",
    "fence": "Fences",
    "pole": "Poles",
    "traffic light": "TrafficLight",
    "traffic sign": "TrafficSigns",
    "vegetation": "Vegetation",
    "terrain": "Terrain",
    "sky": "Sky",
    "person": "Pedestrians",
    "rider": "Rider",
    "car": "Car",
    "truck": "Truck",
    "bus": "Bus",
    "train": "Train",
    "motorcycle": "Motorcycle",
    "bicycle": "Bicycle",
    "static": "Static",
    "dynamic": "Dynamic",
    "ground": "Ground",
    "parking": "Ground",
    "rail track": "RailTrack",
    "guard rail": "GuardRail",
    "bridge": "Bridge",
    "tunnel": "Other",
    "polegroup": "Other",
    "caravan": "Other",
    "trailer": "Other",
}


def official_labels() -> list:
    """CityscapesScripts' label table (``Label`` named tuples: name, id, trainId, ...)."""
    try:
        from cityscapesscripts.helpers.labels import labels
    except ImportError as exc:
        raise CaptureError(
            "importing Cityscapes needs cityscapesScripts' label table: pip install "
            "'carla-temporal[import]'"
        ) from exc
    return list(labels)


def label_lut() -> np.ndarray:
    """(256,) uint8: Cityscapes label id -> CARLA tag; ids the official table lacks map to 255."""
    lut = np.full(256, 255, np.uint8)
    for label in official_labels():
        if label.id >= 0:  # license plate (-1) is never in labelIds images
            lut[label.id] = TAG_ID[_TAG_OF.get(label.name, "Unlabeled")]
    return lut


@dataclass(frozen=True)
class _Item:
    split: str
    city: str
    seq: str
    frame: int
    image: Path

    @property
    def stem(self) -> str:
        return f"{self.city}_{self.seq}_{self.frame:06d}"


def intrinsics_note(root: Path, clips: int) -> str:
    """Why ``clips`` clips were imported without intrinsics, and the fix."""
    where = (
        f"{root} has no camera/ folder"
        if not (Path(root) / "camera").is_dir()
        else f"camera/ of {root} lacks their *_camera.json files"
    )
    return (
        f"{clips} clips imported without intrinsics: {where}; add "
        "camera/ from the Cityscapes download (the temporal stages need intrinsics)"
    )


def _scan(folder: Path) -> list[_Item]:
    items = []
    for split in SPLITS:
        for path in sorted((folder / split).glob("*/*_leftImg8bit.png")):
            m = _NAME.match(path.name)
            if m and m["city"] == path.parent.name:
                items.append(_Item(split, m["city"], m["seq"], int(m["frame"]), path))
    return items


def _label_path(root: Path, item: _Item) -> Path:
    return root / "gtFine" / item.split / item.city / f"{item.stem}_gtFine_labelIds.png"


def _runs(items: list[_Item], frames: int) -> tuple[list[list[_Item]], int]:
    """Snippet frames -> clips of ``frames`` consecutive frames, and how many frames were left."""
    by_seq: dict[tuple[str, str], list[_Item]] = defaultdict(list)
    for item in items:
        by_seq[(item.city, item.seq)].append(item)
    clips, left = [], 0
    for seq_items in by_seq.values():
        seq_items.sort(key=lambda i: i.frame)
        run: list[_Item] = []
        for item in seq_items + [None]:  # type: ignore[list-item]
            if item is not None and run and item.frame == run[-1].frame + 1:
                run.append(item)
                continue
            usable = len(run) - len(run) % frames
            clips.extend(run[s : s + frames] for s in range(0, usable, frames))
            left += len(run) - usable
            run = [item] if item is not None else []
    return clips, left


def _open(path: Path, rgb: bool = False) -> np.ndarray:
    """The pixels of an image file; an unreadable one is a one-line error naming it."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB") if rgb else img)
    except (OSError, ValueError) as exc:
        raise CaptureError(
            f"cannot read {path} as an image ({exc}); restore or remove it"
        ) from None


def _read_rgb(path: Path, size: tuple[int, int] | None) -> np.ndarray:
    rgb = _open(path, rgb=True)
    if size is not None and rgb.shape[:2] != size:
        rgb = cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return rgb


def _read_labels(path: Path, lut: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    ids = _open(path)
    if ids.ndim != 2 or ids.dtype != np.uint8:
        raise CaptureError(
            f"{path} is not a Cityscapes labelIds image (one uint8 channel); "
            "use the *_gtFine_labelIds.png files"
        )
    tags = lut[ids]
    if (tags == 255).any():
        bad = int(ids[tags == 255][0])
        raise CaptureError(
            f"{path} holds label id {bad}, which Cityscapes does not define; "
            "use the *_gtFine_labelIds.png files"
        )
    if tags.shape != shape:
        tags = cv2.resize(tags, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
    return tags


def _intrinsics(
    root: Path, item: _Item, size: tuple[int, int] | None, full: tuple[int, int]
) -> np.ndarray | None:
    """The snippet's camera matrix from any of its ``camera.json`` files, scaled to ``size``."""
    folder = root / "camera" / item.split / item.city
    path = next(iter(sorted(folder.glob(f"{item.city}_{item.seq}_*_camera.json"))), None)
    if path is None:
        return None
    try:
        k = json.loads(path.read_text())["intrinsic"]
        K = np.array([[k["fx"], 0, k["u0"]], [0, k["fy"], k["v0"]], [0, 0, 1]], np.float64)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CaptureError(
            f"{path} is not a Cityscapes camera file ({exc}); restore or remove it"
        ) from None
    if size is not None:
        K[0] *= size[1] / full[1]
        K[1] *= size[0] / full[0]
        K[2] = (0, 0, 1)
    return K


def _clip(
    root: Path,
    items: list[_Item],
    lut: np.ndarray,
    size: tuple[int, int] | None,
    report: ImportReport,
) -> Clip:
    built = []
    full = None
    for item in items:
        rgb = _read_rgb(item.image, size)
        if full is None:
            with Image.open(item.image) as img:
                full = (img.height, img.width)
        label_path = _label_path(root, item)
        sem = _read_labels(label_path, lut, rgb.shape[:2]) if label_path.exists() else None
        report.keep(LABELLED, int(sem is not None))
        built.append(
            Frame(
                rgb=rgb,
                semantic=sem,
                depth=None,
                cam_to_world=None,
                carla_transform=None,
                frame=item.frame,
                timestamp=item.frame / FPS,
            )
        )
    first = items[0]
    intrinsics = _intrinsics(root, first, size, full)
    if intrinsics is None:
        report.keep(NO_INTRINSICS)
    return Clip(
        clip_id=items[0].stem,
        town=first.city,
        backend="cityscapes",
        seed=0,
        fps=FPS,
        frame_stride=1,
        intrinsics=intrinsics,
        weather={},
        camera={},
        frames=tuple(built),
        attrs={"source": str(first.image.parent), "cityscapes_split": first.split},
    )


def _plan(
    root: Path, frames: int, report: ImportReport, sequence: bool = True
) -> Iterator[list[_Item]]:
    """Clips to write: snippet runs, then annotated frames that no run covers."""
    stills = _scan(root / "leftImg8bit")
    sequence = _scan(root / "leftImg8bit_sequence") if sequence else []
    if not sequence and not stills:
        raise CaptureError(
            f"{root} holds no Cityscapes images (leftImg8bit/<split>/<city>/*."
            "png or leftImg8bit_sequence/...); pass the folder that holds "
            "leftImg8bit/ and gtFine/"
        )
    for city in sorted({item.city for item in (*stills, *sequence)}):
        try:
            town_name(city)  # a city folder names a town folder under --out
        except ValueError as exc:
            raise CaptureError(f"{root}: city folder {city!r}: {exc}") from None
    clips, short = _runs(sequence, frames)
    report.drop("snippet frames left over (fewer than --frames)", short)
    covered = {(i.city, i.seq, i.frame) for clip in clips for i in clip}
    clips += [[s] for s in stills if (s.city, s.seq, s.frame) not in covered]
    if not clips:
        raise CaptureError(
            f"no clip to import from {root}: its snippets have no run of --frames {frames} "
            f"consecutive frames and leftImg8bit/ no annotated frame; pass a smaller --frames"
        )
    return iter(sorted(clips, key=lambda c: (c[0].city, c[0].seq, c[0].frame)))


def write_splits_file(out: Path, cities: dict[str, str]) -> Path:
    """Add ``cities`` (city -> official split) to ``<out>/cityscapes_splits.toml``."""
    path = Path(out) / SPLITS_FILE
    splits: dict[str, set[str]] = {"train": set(), "val": set(), "test": set()}
    if path.exists():
        try:
            for name, towns in tomllib.loads(path.read_text())["splits"].items():
                splits.setdefault(name, set()).update(towns)
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            raise CaptureError(
                f"{path} is unreadable ({exc}); delete it and import again"
            ) from None
    for city, split in cities.items():
        splits.setdefault(split, set()).add(city)
    lines = [
        "# Written by capture import cityscapes: each city in its official Cityscapes split.",
        f"# Use it with: capture split {out} --splits {path}",
        "[splits]",
    ]
    lines += [f"{name} = {json.dumps(sorted(towns))}" for name, towns in splits.items()]
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def _close(writers: dict[str, ShardWriter], report: ImportReport) -> None:
    for writer in writers.values():
        report.shards.append(writer.close())


def _check_root(root: Path) -> None:
    """The parts every Cityscapes import needs: the annotated frames and their labels."""
    if not root.is_dir():
        raise CaptureError(
            f"{root} is not a folder; pass the Cityscapes folder that holds "
            "leftImg8bit/ and gtFine/"
        )
    for part, what in (("leftImg8bit", "the annotated frames"), ("gtFine", "their fine labels")):
        if not (root / part).is_dir():
            raise CaptureError(
                f"{root} has no {part}/ ({what}); pass the Cityscapes folder that holds "
                "leftImg8bit/ and gtFine/ (download leftImg8bit_trainvaltest and "
                "gtFine_trainvaltest)"
            )


def import_cityscapes(root: Path, **options: Any) -> ImportReport:
    """Import the Cityscapes folder ``root`` into ``<out>/<city>/<city>-NNNNN.h5``.

    One new shard per city with new clips. ``options`` are the fields of
    :class:`~carla_capture.importers.config.CityscapesImport`, checked first: ``out``, ``frames``,
    ``size`` (H, W: images resized by area, labels nearest) and ``sequence`` (False leaves out
    ``leftImg8bit_sequence``: annotated frames only). ``root`` must hold ``leftImg8bit/`` and
    ``gtFine/``; an import that finds no clip, new or already imported, is an error.
    """
    cfg = build(CityscapesImport, options, "capture import cityscapes", options=True)
    root, out = Path(root), Path(cfg.out)
    _check_root(root)
    lut = label_lut()
    report = ImportReport()
    report.keep(LABELLED, 0)
    report.keep(EXISTING, 0)
    cities: dict[str, str] = {}  # city -> official split
    writers: dict[str, ShardWriter] = {}
    done: dict[str, set[str]] = {}
    size = tuple(cfg.size) if cfg.size is not None else None
    try:
        for items in _plan(root, cfg.frames, report, cfg.sequence):
            city = items[0].city
            cities[city] = items[0].split
            town_dir = out / city
            if city not in done:
                done[city] = existing_clip_ids(town_dir) if town_dir.is_dir() else set()
            if items[0].stem in done[city]:
                report.keep(EXISTING)
                continue
            clip = _clip(root, items, lut, size, report)  # a bad file raises here, before add
            if city not in writers:
                town_dir.mkdir(parents=True, exist_ok=True)
                writers[city] = open_next_shard(town_dir, city)
            writers[city].add(clip)
            report.clips += 1
            report.frames += len(items)
    except CaptureError:  # keep the complete clips: importing again resumes after them
        _close(writers, report)
        raise
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    _close(writers, report)
    report.keep("cities", len(cities))
    if NO_INTRINSICS in report.kept:
        report.warnings.append(intrinsics_note(root, report.kept.pop(NO_INTRINSICS)))
    if cities:
        splits = write_splits_file(out, cities)
        report.next_steps.append(f"capture split {out} --splits {splits}")
    log.info("%s", report.summary())
    return report
