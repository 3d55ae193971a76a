"""The training batches of stream training: each slot of the batch follows recordings window by window.

Window training reads each example, the T frames ending at a labelled frame, from zero state. In
stream training the trainer carries the network's membranes from one batch into the next, so each
row ("slot") of the batch must go on where it left off: slot k reads consecutive windows of T frames
of one run of consecutive frames (`split.runs_of`), with the label of the window's last frame and the
labels of all its frames (what the loss scores, see `steps.STREAM_LOSSES`).

Streaming slots (the first `B - zero` rows). Slot k walks segments j = 0, 1, 2, ...: segment (k, j)
draws from its own generator `default_rng([seed, SEGMENT, k, j])` a run, uniformly among the runs,
an offset o uniformly in [0, min(T - 1, len(run) - T)] and (with augmentation) one geometry; it has
(len(run) - o) // T windows, window w being frames run[o + wT : o + (w+1)T], all warped by the
segment's geometry. The first window of a segment is "fresh": the trainer starts that slot from zero
state there, since it begins a new run (or the same run again, elsewhere). The random offset moves
the window boundaries from pass to pass, so the state is not always reset on the same frames and
every frame is, in time, the last of some window. Slot k's windows are its segments' windows one
after the other, and training batch `index` gives each slot its window number `index`.

Zero-state slots (the last `zero = round(zero_state_fraction * B)` rows) read, at every batch, an
ordinary training example drawn uniformly from all examples of the split (the window of T frames
ending at it, padded near a run's start), augmented as in window training, from zero state: "fresh"
is always True there, and only the last frame is labelled (the others ignored), as in window
training. They keep the network able to start from nothing, as evaluation in windows does.

A batch is a pure function of (sequences, B, fraction, seed, index, rows): every draw has its own
seed, built from the batch's number and its slot, never from a generator that earlier batches
advanced. So a run killed and resumed from its step count reads the batches an uninterrupted run
reads, and any number of loader threads, in any order, yields the same batches. Each process of a
multi-host run fills only its own `rows` of the global batch (the others are zeros, labels 255,
fresh False), and a row's content does not depend on which process fills it.
"""

from __future__ import annotations

import bisect
import dataclasses
import threading

import numpy as np

from snnseg_jax.cli import UserError
from snnseg_jax.data.augment import Geometry, apply_geometry, random_geometry
from snnseg_jax.data.preprocess import IGNORE_LABEL
from snnseg_jax.data.split import EventSequences, runs_of

SEGMENT = 0x5E6  # seeds the draws of a streaming slot's segment
ZERO_STATE = 0x2E0  # seeds the draws of a zero-state slot's example


def check_runs(sequences: EventSequences, timesteps: int) -> list[np.ndarray]:
    """The runs of `sequences`'s split (`runs_of`); a `UserError` if any is shorter than `timesteps`."""
    split = sequences.split
    if len(split) == 0:
        raise UserError("stream training needs a training split with frames; this one is empty")
    runs = runs_of(split)
    short = [run for run in runs if len(run) < timesteps]
    if short:
        others = f" (and {len(short) - 1} more runs that short)" if len(short) > 1 else ""
        raise UserError(
            f"stream training needs runs of at least model.timesteps = {timesteps} consecutive frames, but the "
            f"run starting at frame {split.ids[short[0][0]]} has {len(short[0])}{others}; use window training "
            f"or a smaller model.timesteps"
        )
    return runs


@dataclasses.dataclass(frozen=True)
class _Segment:
    run: int  # index into the runs
    offset: int  # frames of the run skipped before its first window
    windows: int
    geometry: Geometry


class StreamBatches:
    """The training batches of stream training; `batch(index)` is training batch number `index`."""

    def __init__(
        self,
        sequences: EventSequences,
        batch_size: int,
        zero_state_fraction: float,
        seed: int,
        rows: np.ndarray | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not 0.0 <= zero_state_fraction <= 1.0:
            raise ValueError(f"zero_state_fraction must be in [0, 1], got {zero_state_fraction}")
        self.sequences, self.batch_size, self.seed = sequences, batch_size, seed
        self.zero_state_fraction = zero_state_fraction
        self.timesteps = sequences.windows.shape[1]
        self.runs = check_runs(sequences, self.timesteps)
        self.rows = np.arange(batch_size) if rows is None else np.unique(np.asarray(rows, np.int64))
        if len(self.rows) and (self.rows[0] < 0 or self.rows[-1] >= batch_size):
            raise ValueError(f"rows must lie in [0, {batch_size}), got {self.rows.tolist()}")
        self._zero = round(zero_state_fraction * batch_size)
        # Per streaming slot: its segments so far and the number of windows up to the end of each.
        self._segments: dict[int, list[_Segment]] = {}
        self._ends: dict[int, list[int]] = {}
        self._lock = threading.Lock()

    @property
    def streaming_slots(self) -> int:
        """The first rows, which stream recordings window after window."""
        return self.batch_size - self._zero

    @property
    def zero_state_slots(self) -> int:
        """The last rows, which read an ordinary random training window from zero state."""
        return self._zero

    def batch(self, index: int) -> dict[str, np.ndarray]:
        """Training batch `index` (0-based): "inputs" `[B, T, H, W, C]` float32, "labels" `[B, H, W]` uint8
        (the window's last frame's), "frame_labels" `[B, T, H, W]` uint8 (each frame's; a zero-state
        slot's all ignored but the last) and "fresh" `[B]` bool (the slot starts from zero state)."""
        if index < 0:
            raise ValueError(f"batch index must be non-negative, got {index}")
        split, B, T = self.sequences.split, self.batch_size, self.timesteps
        inputs = np.zeros((B, T, *split.inputs.shape[1:]), np.float32)
        frame_labels = np.full((B, T, *split.labels.shape[1:]), IGNORE_LABEL, np.uint8)
        fresh = np.zeros(B, bool)
        for row in self.rows:
            if row < self.streaming_slots:
                inputs[row], frame_labels[row], fresh[row] = self._streaming(int(row), index)
            else:
                inputs[row], frame_labels[row, -1] = self._zero_state(int(row) - self.streaming_slots, index)
                fresh[row] = True
        return {"inputs": inputs, "labels": frame_labels[:, -1], "frame_labels": frame_labels, "fresh": fresh}

    def _streaming(self, slot: int, index: int) -> tuple[np.ndarray, np.ndarray, bool]:
        segment, window = self._locate(slot, index)
        run, T = self.runs[segment.run], self.timesteps
        frames = run[segment.offset + window * T : segment.offset + (window + 1) * T]
        inputs, labels = self.sequences.split.inputs[frames], self.sequences.split.labels[frames]
        if self.sequences.augment:
            inputs, labels = apply_geometry(inputs, labels, segment.geometry)
        return inputs, labels, window == 0

    def _locate(self, slot: int, index: int) -> tuple[_Segment, int]:
        """Slot `slot`'s segment holding its window number `index`, and the window's number in it."""
        with self._lock:
            segments = self._segments.setdefault(slot, [])
            ends = self._ends.setdefault(slot, [])
            while not ends or ends[-1] <= index:
                segments.append(self._draw_segment(slot, len(segments)))
                ends.append((ends[-1] if ends else 0) + segments[-1].windows)
            j = bisect.bisect_right(ends, index)
            return segments[j], index - (ends[j - 1] if j else 0)

    def _draw_segment(self, slot: int, j: int) -> _Segment:
        rng = np.random.default_rng([self.seed, SEGMENT, slot, j])
        run = int(rng.integers(len(self.runs)))
        length, T = len(self.runs[run]), self.timesteps
        offset = int(rng.integers(min(T - 1, length - T) + 1))
        return _Segment(run, offset, (length - offset) // T, random_geometry(rng))

    def _zero_state(self, slot: int, index: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, ZERO_STATE, index, slot])
        example = np.array([rng.integers(len(self.sequences))])
        inputs, labels = self.sequences.read(example, rng)
        return inputs[0], labels[0]
