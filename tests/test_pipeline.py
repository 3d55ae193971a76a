"""Input pipeline: order per (seed, epoch), resumable positions, padded eval batches, prefetch."""

import functools
import itertools
import time

import numpy as np
import pytest

from snnseg_jax.cli import UserError
from snnseg_jax.data import ArrayDataset, pipeline


def eval_batches(dataset, batch_size):
    """Every evaluation batch of `dataset`, in order, as evaluation reads them."""
    return [pipeline.read_eval_batch(dataset, batch_size, start) for start in range(0, len(dataset), batch_size)]


def numbered(n):
    """A dataset whose input and label of example i are both i."""
    return ArrayDataset(np.arange(n, dtype=np.float32)[:, None], np.arange(n, dtype=np.uint8)[:, None], ("a",))


def test_epoch_order_depends_only_on_seed_and_epoch():
    a = pipeline.epoch_order(3, 5, 100)
    np.testing.assert_array_equal(a, pipeline.epoch_order(3, 5, 100))
    assert sorted(a) == list(range(100))
    assert not np.array_equal(a, pipeline.epoch_order(3, 6, 100))
    assert not np.array_equal(a, pipeline.epoch_order(4, 5, 100))


def test_training_batches_cover_each_epoch_once_and_drop_the_partial_batch():
    batches = pipeline.train_batches(numbered(23), 5, seed=0, start=pipeline.Position())
    for epoch in range(2):
        seen = np.concatenate([next(batches)["labels"][:, 0] for _ in range(4)])
        assert len(set(seen)) == 20
        full_batches = pipeline.epoch_order(0, epoch, 23)[:20]
        assert set(seen) == set(full_batches)


def test_resuming_at_a_position_reads_what_an_uninterrupted_run_reads():
    dataset = numbered(23)
    uninterrupted = [
        b["labels"] for b in itertools.islice(pipeline.train_batches(dataset, 5, seed=1, start=pipeline.Position()), 11)
    ]
    position = pipeline.advance(pipeline.Position(), 6, per_epoch=4)
    assert position == pipeline.Position(epoch=1, batch=2)
    resumed = [b["labels"] for b in itertools.islice(pipeline.train_batches(dataset, 5, seed=1, start=position), 5)]
    for a, b in zip(uninterrupted[6:], resumed):
        np.testing.assert_array_equal(a, b)


def test_eval_batches_count_every_example_once_with_ignored_padding():
    batches = list(eval_batches(numbered(11), 4))
    assert [b["inputs"].shape[0] for b in batches] == [4, 4, 4]
    labels = np.concatenate([b["labels"][:, 0] for b in batches])
    np.testing.assert_array_equal(labels, list(range(11)) + [255])
    assert batches[-1]["inputs"][-1, 0] == 0


def test_batch_larger_than_the_split_is_a_user_error():
    with pytest.raises(UserError, match="batch_size 8 is larger"):
        pipeline.batches_per_epoch(5, 8)


def test_prefetch_keeps_order_applies_place_and_raises_producer_errors():
    assert list(pipeline.prefetch(iter(range(10)), lambda x: x * 2)) == list(range(0, 20, 2))

    def failing():
        yield 1
        raise RuntimeError("broken reader")

    stream = pipeline.prefetch(failing(), lambda x: x)
    assert next(stream) == 1
    with pytest.raises(RuntimeError, match="broken reader"):
        next(stream)


def test_closing_prefetch_of_an_endless_stream_stops_its_thread():
    stream = pipeline.prefetch(itertools.count(), lambda x: x)
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    stream.close()  # joins the producer thread; hangs if the thread ignores the stop


class Augmenting:
    """Example i is i plus noise from the batch's rng; reads take uneven times, so threads finish out of order."""

    class_names, in_channels = ("a",), 1

    def __len__(self):
        return 23

    def read(self, indices, rng=None):
        time.sleep(0.003 * (int(indices.sum()) % 4))
        noise = rng.normal(size=len(indices)) if rng is not None else np.zeros(len(indices))
        return (indices + noise).astype(np.float32)[:, None], indices.astype(np.uint8)[:, None]


@pytest.mark.parametrize("threads, size", [(2, 2), (4, 7)])
def test_loader_threads_yield_the_batches_of_the_sequential_reader(threads, size):
    dataset, start = Augmenting(), pipeline.Position(epoch=1, batch=3)
    sequential = list(itertools.islice(pipeline.train_batches(dataset, 5, seed=2, start=start), 13))
    read = functools.partial(pipeline.read_train_batch, dataset, 5, 2)
    stream = pipeline.prefetch(pipeline.train_positions(start, per_epoch=4), read, size=size, threads=threads)
    threaded = list(itertools.islice(stream, 13))
    stream.close()
    for a, b in zip(sequential, threaded, strict=True):
        np.testing.assert_array_equal(a["inputs"], b["inputs"])
        np.testing.assert_array_equal(a["labels"], b["labels"])
