"""The embedded datasets: deterministic per seed, different across seeds, DVS events, difficulty."""

import numpy as np
import pytest

from snnseg_jax import metrics
from snnseg_jax.data import preprocess, synthetic


@pytest.mark.parametrize(
    "make",
    [
        lambda seed, split: synthetic.shapes(seed, split, 8, 16),
        lambda seed, split: synthetic.event_recordings(seed, split, 8, 16, recording_frames=3)[:2],
    ],
    ids=["shapes", "events"],
)
def test_same_seed_same_data_other_seed_or_split_other_data(make):
    a_inputs, a_labels = make(0, "train")
    b_inputs, b_labels = make(0, "train")
    np.testing.assert_array_equal(a_inputs, b_inputs)
    np.testing.assert_array_equal(a_labels, b_labels)
    for other in (make(1, "train"), make(0, "val")):
        assert not np.array_equal(a_inputs, other[0])
        assert not np.array_equal(a_labels, other[1])


def test_shapes_are_normalized_rgb_with_every_class():
    images, labels = synthetic.shapes(0, "train", 64, 32)
    assert images.shape == (64, 32, 32, 3) and images.dtype == np.float32
    assert labels.shape == (64, 32, 32) and labels.dtype == np.uint8
    lo = -preprocess.RGB_MEAN / 255
    assert np.all(images >= lo - 1e-6) and np.all(images <= lo + 1 + 1e-6)
    assert set(np.unique(labels)) == set(range(len(synthetic.CLASS_NAMES)))


def test_events_are_min_max_normalized_per_frame_and_channel():
    frames, labels, _, _ = synthetic.event_recordings(0, "train", 6, 16, recording_frames=4)
    assert frames.shape == (6, 16, 16, 2) and labels.shape == (6, 16, 16)
    np.testing.assert_allclose(frames.min(axis=(1, 2)), -0.5)
    np.testing.assert_allclose(frames.max(axis=(1, 2)), 0.5)


def test_events_are_recordings_of_consecutive_frames_of_one_moving_scene():
    frames, labels, recordings, numbers = synthetic.event_recordings(0, "val", 50, 32, recording_frames=20)
    np.testing.assert_array_equal(recordings, np.repeat([0, 1, 2], 20)[:50])
    np.testing.assert_array_equal(numbers, np.tile(np.arange(20), 3)[:50])
    same = lambda a, b: (labels[a] == labels[b]).mean()
    # Within a recording the scene moves a little from frame to frame; recordings are other scenes.
    assert same(5, 6) > 0.9 and same(5, 6) < 1.0 and same(19, 20) < same(5, 6)
    assert len(np.unique(labels[:20])) > 1 and (labels[:20] > 0).mean(axis=(1, 2)).min() > 0.05


def test_bounce_keeps_positions_inside_and_leaves_inside_ones_alone():
    inside = np.float32([3.0, 7.25, 10.0])
    np.testing.assert_array_equal(synthetic.bounce(inside, 3.0, 10.0), inside)
    np.testing.assert_allclose(synthetic.bounce(np.float32([11.0, 19.0, 2.0, -5.0]), 3.0, 10.0), [9, 5, 4, 9])


def test_dvs_pixel_emits_one_event_per_threshold_crossed():
    threshold = np.full((1, 1, 2), 0.15)
    reference = np.zeros((1, 1, 2))
    positive, negative, reference = synthetic.dvs_events(np.array([[[0.35, -0.1]]]), threshold, reference)
    np.testing.assert_array_equal(positive, [[[2, 0]]])
    np.testing.assert_array_equal(negative, [[[0, 0]]])
    np.testing.assert_allclose(reference, [[[0.30, 0.0]]])
    positive, negative, reference = synthetic.dvs_events(np.array([[[0.0, -0.2]]]), threshold, reference)
    np.testing.assert_array_equal(positive, [[[0, 0]]])
    np.testing.assert_array_equal(negative, [[[2, 1]]])
    np.testing.assert_allclose(reference, [[[0.0, -0.15]]])


def test_colour_and_majority_predictors_score_low_on_shapes():
    """A colour lookup fitted on the training split is no shortcut: colours are random per object."""
    train_images, train_labels = synthetic.shapes(0, "train", 400, 32)
    val_images, val_labels = synthetic.shapes(0, "val", 200, 32)
    bins = 8

    def colour_bin(images):
        q = np.clip(((images + preprocess.RGB_MEAN / 255) * bins).astype(int), 0, bins - 1)
        return (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]

    classes = len(synthetic.CLASS_NAMES)
    counts = np.zeros((bins**3, classes))
    np.add.at(counts, (colour_bin(train_images).ravel(), train_labels.ravel()), 1)
    lookup = counts.argmax(axis=1)

    def miou(preds):
        confusion = np.zeros((classes, classes), np.int64)
        np.add.at(confusion, (val_labels.ravel(), preds.ravel()), 1)
        return metrics.mean_iou(confusion)

    assert miou(lookup[colour_bin(val_images)]) < 0.3
    assert miou(np.zeros_like(val_labels)) < 0.2
