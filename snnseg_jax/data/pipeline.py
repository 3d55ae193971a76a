"""Input pipeline: deterministic training order, padded evaluation batches, background prefetch.

The training order is a pure function of (seed, epoch), and a position in it is (epoch, batch), so
a run resumed from a saved position reads exactly the batches an uninterrupted run reads. A batch
is a function of its position alone, so any number of loader threads yields the same batches.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import itertools
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from snnseg_jax.cli import UserError
from snnseg_jax.data import Dataset
from snnseg_jax.metrics import IGNORE_LABEL

Batch = dict[str, np.ndarray]  # "inputs", "labels"


@dataclasses.dataclass(frozen=True)
class Position:
    """Where the next training batch comes from: batch `batch` of epoch `epoch`."""

    epoch: int = 0
    batch: int = 0


def epoch_order(seed: int, epoch: int, num_examples: int) -> np.ndarray:
    """The permutation of the examples read in epoch `epoch`."""
    return np.random.default_rng([seed, epoch]).permutation(num_examples)


def batches_per_epoch(num_examples: int, batch_size: int) -> int:
    """Full training batches in one epoch (the last partial batch is dropped)."""
    if num_examples < batch_size:
        raise UserError(f"batch_size {batch_size} is larger than the training split ({num_examples} examples)")
    return num_examples // batch_size


def advance(position: Position, steps: int, per_epoch: int) -> Position:
    """The position `steps` batches after `position`."""
    flat = position.epoch * per_epoch + position.batch + steps
    return Position(flat // per_epoch, flat % per_epoch)


def train_positions(start: Position, per_epoch: int) -> Iterator[Position]:
    """The positions of the training batches from `start` on, epoch after epoch, without end."""
    for flat in itertools.count(start.epoch * per_epoch + start.batch):
        yield Position(flat // per_epoch, flat % per_epoch)


def read_train_batch(dataset: Dataset, batch_size: int, seed: int, position: Position) -> Batch:
    """The training batch at `position`: a function of (seed, epoch, batch) alone."""
    order = epoch_order(seed, position.epoch, len(dataset))
    augmentation = np.random.default_rng([seed, position.epoch, position.batch])
    chosen = order[position.batch * batch_size : (position.batch + 1) * batch_size]
    inputs, labels = dataset.read(np.sort(chosen), augmentation)
    return {"inputs": inputs, "labels": labels}


def train_batches(dataset: Dataset, batch_size: int, seed: int, start: Position) -> Iterator[Batch]:
    """Training batches from `start` on, epoch after epoch, without end."""
    per_epoch = batches_per_epoch(len(dataset), batch_size)
    return (read_train_batch(dataset, batch_size, seed, p) for p in train_positions(start, per_epoch))


def read_eval_batch(dataset: Dataset, batch_size: int, start: int) -> Batch:
    """Examples `start` to `start + batch_size` of `dataset`.

    A batch past the end is padded with zero inputs whose labels are all ignored, so every batch
    has one shape (one compilation) and the padding adds nothing to the confusion matrix.
    """
    inputs, labels = dataset.read(np.arange(start, min(start + batch_size, len(dataset))))
    pad = batch_size - len(labels)
    if pad:
        inputs = np.concatenate([inputs, np.zeros((pad, *inputs.shape[1:]), inputs.dtype)])
        labels = np.concatenate([labels, np.full((pad, *labels.shape[1:]), IGNORE_LABEL, labels.dtype)])
    return {"inputs": inputs, "labels": labels}


def prefetch(items: Iterator[Any], place: Callable[[Any], Any], size: int = 2, threads: int = 1) -> Iterator[Any]:
    """Yields `place(item)` for each item, in order, preparing up to `size` ahead.

    A background thread draws the items and `threads` worker threads apply `place` (typically
    reading a batch and putting it on the devices), so host work and transfer overlap the step
    that is running. The output does not depend on `threads` or `size` as long as `place` depends
    on its item alone. Exceptions in the background are raised in the consumer; closing the
    generator stops the threads.
    """
    ready: queue.Queue = queue.Queue(maxsize=size)
    stop = threading.Event()
    done = object()
    workers = concurrent.futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="prefetch")

    def produce() -> None:
        try:
            for item in items:
                if not _put(ready, (workers.submit(place, item), None), stop):
                    return
            _put(ready, (done, None), stop)
        except BaseException as error:  # handed to the consumer, which re-raises it
            _put(ready, (None, error), stop)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while True:
            future, error = ready.get()
            if error is not None:
                raise error
            if future is done:
                return
            yield future.result()
    finally:
        stop.set()
        thread.join()
        workers.shutdown(wait=True, cancel_futures=True)


def _put(ready: queue.Queue, entry: tuple, stop: threading.Event) -> bool:
    """Puts `entry` unless `stop` is set first; returns whether it was put."""
    while not stop.is_set():
        try:
            ready.put(entry, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False
