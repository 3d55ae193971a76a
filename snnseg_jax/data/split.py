"""A preprocessed split, and the event sequences cut from its frames."""

from __future__ import annotations

import dataclasses

import numpy as np

from snnseg_jax.data.augment import augment_sequence


@dataclasses.dataclass(frozen=True)
class Split:
    """One split, preprocessed to the network's input size.

    Static images: item i is `inputs[i]` with label `labels[i]`. Event frames: item i is the sequence
    `inputs[sequence_windows(...)[i]]` of T frames ending at frame i, with label `labels[i]`; frames are
    stored once, in time order within each recording.
    """

    inputs: np.ndarray  # [N, S, S, C] float32: normalized images (C=3) or event frames (C=2)
    labels: np.ndarray  # [N, S, S] uint8 class indices, 255 = ignore
    ids: tuple[str, ...]  # one per item: image id or frame file stem
    class_names: tuple[str, ...]
    recordings: np.ndarray | None = None  # [N] int64 recording of each event frame; None for images
    frame_numbers: np.ndarray | None = None  # [N] int64 frame number within its recording

    @property
    def is_sequence(self) -> bool:
        return self.recordings is not None

    def __len__(self) -> int:
        return len(self.ids)


def run_starts(recordings: np.ndarray, frame_numbers: np.ndarray) -> np.ndarray:
    """`[N]` index of the first frame of each frame's run of consecutive frames.

    Frames must be sorted by (recording, frame number). A run ends at a new recording or where the
    frame number jumps by more than the recording's smallest step (frames missing from the file list,
    e.g. between the sub-ranges Ev-SegNet extracted from one recording).
    """
    if len(recordings) == 0:
        return np.zeros(0, np.int64)
    new_recording = np.r_[True, recordings[1:] != recordings[:-1]]
    step = np.r_[0, np.diff(frame_numbers)]
    recording_index = np.cumsum(new_recording) - 1
    smallest_step = np.full(recording_index[-1] + 1, np.iinfo(np.int64).max)
    np.minimum.at(smallest_step, recording_index[~new_recording], step[~new_recording])
    breaks = new_recording | (step > smallest_step[recording_index])
    return np.maximum.accumulate(np.where(breaks, np.arange(len(breaks)), 0))


def runs_of(split: Split) -> list[np.ndarray]:
    """The frame indices of each run of consecutive frames of `split` (`run_starts`), in order."""
    starts = np.flatnonzero(np.r_[True, np.diff(run_starts(split.recordings, split.frame_numbers)) != 0])
    return np.split(np.arange(len(split)), starts[1:])


def sequence_windows(recordings: np.ndarray, frame_numbers: np.ndarray, timesteps: int) -> np.ndarray:
    """`[N, T]` frame indices of the sequence that ends at each frame.

    Window i is frames i-T+1 .. i of frame i's run; where the run has fewer than T frames before i,
    the window is padded at the start by repeating the run's first frame. So every frame is the last
    frame (the labelled one) of exactly one window, and no window crosses a recording or a gap.
    """
    starts = run_starts(np.asarray(recordings), np.asarray(frame_numbers))
    index = np.arange(len(starts))[:, None] + np.arange(1 - timesteps, 1)[None, :]
    return np.maximum(index, starts[:, None])


class EventSequences:
    """The examples of an event split: sequences `[T, S, S, C]` ending at each frame, with its label.

    With `augment`, `read(indices, rng)` applies the authors' augmentation, one draw per sequence
    from `rng`; without an `rng` (evaluation) the sequences are returned as they are.
    """

    def __init__(self, split: Split, timesteps: int, augment: bool = False):
        self.split, self.augment = split, augment
        self.class_names = split.class_names
        self.in_channels = split.inputs.shape[-1]
        self.windows = sequence_windows(split.recordings, split.frame_numbers, timesteps)

    def __len__(self) -> int:
        return len(self.split)

    def read(self, indices: np.ndarray, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Sequences `[N, T, S, S, C]` float32 and labels `[N, S, S]` uint8."""
        inputs, labels = self.split.inputs[self.windows[indices]], self.split.labels[indices]
        if self.augment and rng is not None:
            pairs = [augment_sequence(x, y, rng) for x, y in zip(inputs, labels)]
            inputs, labels = np.stack([x for x, _ in pairs]), np.stack([y for _, y in pairs])
        return inputs, labels
