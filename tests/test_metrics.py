"""Confusion matrix, IoU, MIoU and pixel accuracy against hand-computed values."""

import jax.numpy as jnp
import numpy as np
import pytest

from snnseg_jax import metrics


def test_confusion_matrix_counts_pairs_and_ignores_labels_outside_the_classes():
    labels = jnp.array([[0, 0, 1, 2], [2, 255, 3, 1]])
    preds = jnp.array([[0, 1, 1, 2], [0, 2, 0, 1]])
    expected = np.array(
        [
            [1, 1, 0],  # true 0: predicted 0 once, 1 once
            [0, 2, 0],  # true 1: predicted 1 twice
            [1, 0, 1],
        ]
    )  # true 2: predicted 0 once, 2 once; 255 and 3 ignored
    np.testing.assert_array_equal(metrics.confusion_matrix(labels, preds, 3), expected)


def test_iou_miou_and_pixel_accuracy_by_hand():
    confusion = np.array(
        [
            [5, 1, 0, 0],
            [2, 3, 0, 0],
            [0, 0, 0, 0],  # class 2: absent from truth and prediction
            [0, 1, 0, 0],
        ]
    )  # class 3: present, never predicted
    iou = metrics.iou_per_class(confusion)
    np.testing.assert_allclose(iou[[0, 1, 3]], [5 / (6 + 7 - 5), 3 / (5 + 5 - 3), 0.0])
    assert np.isnan(iou[2])
    assert metrics.mean_iou(confusion) == pytest.approx((5 / 8 + 3 / 7 + 0.0) / 3)
    assert metrics.pixel_accuracy(confusion) == pytest.approx(8 / 12)


def test_summary_reports_absent_classes_as_null():
    confusion = np.array([[2, 0, 0], [0, 0, 0], [1, 0, 1]])
    summary = metrics.summary(confusion, ("a", "b", "c"))
    assert summary["iou_per_class"] == [pytest.approx(2 / 3), None, pytest.approx(0.5)]
    assert summary["miou"] == pytest.approx((2 / 3 + 0.5) / 2)
    assert summary["pixel_accuracy"] == pytest.approx(0.75)
    assert summary["class_names"] == ["a", "b", "c"]


def test_summing_batch_confusions_equals_the_global_matrix():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, (6, 8, 8))
    labels[rng.random(labels.shape) < 0.1] = 255
    preds = rng.integers(0, 4, (6, 8, 8))
    whole = np.asarray(metrics.confusion_matrix(jnp.array(labels), jnp.array(preds), 4))
    parts = sum(
        np.asarray(metrics.confusion_matrix(jnp.array(labels[i : i + 2]), jnp.array(preds[i : i + 2]), 4))
        for i in range(0, 6, 2)
    )
    np.testing.assert_array_equal(whole, parts)
    valid = labels < 4
    assert whole.sum() == valid.sum()
    assert np.trace(whole) == np.sum((labels == preds) & valid)
