"""DDD17 with the Ev-SegNet labels, in either layout in use.

- List form: `<root>/datalists/<split>.txt`, one pair per line,
  `events/<split>/rec<recording>_export_<frame>.npy labels/<split>/rec<recording>_export_<frame>.png`
  relative to `root` (a leading slash is allowed).
- Ev-SegNet folders: `<root>/<split>/events/<name>.npy` with `<root>/<split>/labels/<name>.png`
  (`<root>/<split>/images/` holds the grayscale frames, which are not used).

The list form is used when its list exists. Either way every file name is
`rec<recording>_export_<frame>`, the names Ev-SegNet's extraction script gives; frames are ordered
by recording, then by the number <frame> (numerically).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np

from snnseg_jax.data import decode, preprocess
from snnseg_jax.data.errors import DatasetError
from snnseg_jax.data.items import Item, preprocess_items
from snnseg_jax.data.split import Split

CLASS_NAMES = ("flat", "construction+sky", "object", "nature", "human", "vehicle")
FRAME_NAME = re.compile(r"rec(\d+)_export_(\d+)")


@dataclasses.dataclass(frozen=True)
class Frame(Item):
    """One event frame and its label, with its place in time."""

    recording: int = 0
    frame_number: int = 0


def frame_from_paths(events: Path, label: Path) -> Frame:
    """A frame whose recording and number are parsed from the event file's name."""
    match = FRAME_NAME.fullmatch(events.stem)
    if match is None:
        raise DatasetError(
            f"Cannot tell the recording and frame of {events}: expected a file named "
            "rec<recording>_export_<frame>.npy, as in the Ev-SegNet release."
        )
    return Frame(events.stem, events, label, int(match[1]), int(match[2]))


def list_form_frames(root: Path, list_path: Path) -> list[Frame]:
    frames = []
    for number, line in enumerate(list_path.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise DatasetError(
                f"{list_path} line {number} is {line!r}; expected a pair "
                "'events/<split>/<name>.npy labels/<split>/<name>.png'."
            )
        frames.append(frame_from_paths(*(root / field.lstrip("/") for field in fields)))
    return frames


def evsegnet_frames(split_folder: Path) -> list[Frame]:
    events = sorted((split_folder / "events").glob("*.npy"))
    return [frame_from_paths(path, split_folder / "labels" / f"{path.stem}.png") for path in events]


def list_split(root: Path, split: str) -> list[Frame]:
    """The frames of `split` sorted by (recording, frame number), without reading any file."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(
            f"dataset.root={root} does not exist; expected the DDD17 folder with "
            f"datalists/{split}.txt or {split}/events/."
        )
    list_path = root / "datalists" / f"{split}.txt"
    split_folder = root / split
    if list_path.is_file():
        frames = list_form_frames(root, list_path)
    elif (split_folder / "events").is_dir():
        frames = evsegnet_frames(split_folder)
    else:
        raise DatasetError(
            f"No DDD17 split {split!r} at dataset.root={root}: expected the list {list_path} or the "
            f"Ev-SegNet folders {split_folder}/events/ and {split_folder}/labels/."
        )
    if not frames:
        raise DatasetError(f"DDD17 split {split!r} at {root} has no event frames.")
    frames.sort(key=lambda frame: (frame.recording, frame.frame_number))
    for previous, frame in zip(frames, frames[1:]):
        if (previous.recording, previous.frame_number) == (frame.recording, frame.frame_number):
            raise DatasetError(
                f"DDD17 split {split!r} lists frame {frame.frame_number} of recording "
                f"{frame.recording} twice: {previous.input_path} and {frame.input_path}."
            )
    return frames


def read_split(frames: list[Frame], split: str, image_size: int) -> Split:
    """Read and normalize listed frames: `[N, S, S, 2]` in time order, labels `[N, S, S]`."""
    inputs, labels = preprocess_items(
        frames,
        decode.read_events,
        preprocess.normalize_events,
        channels=2,
        image_size=image_size,
        num_classes=len(CLASS_NAMES),
        description=f"ddd17 {split}",
    )
    return Split(
        inputs,
        labels,
        tuple(frame.id for frame in frames),
        CLASS_NAMES,
        recordings=np.array([frame.recording for frame in frames], np.int64),
        frame_numbers=np.array([frame.frame_number for frame in frames], np.int64),
    )
