"""DDD17 augmentation: one geometry for all frames and the label, deterministic from the generator."""

import numpy as np
import pytest

from snnseg_jax.data import augment
from snnseg_jax.data.augment import Geometry

T, H, W, C = 4, 24, 24, 2
IDENTITY = Geometry(flip=False, scale=1.0, angle_degrees=0.0, shift_y=0.0, shift_x=0.0)


def coded_sequence():
    """Frames whose values encode (source pixel, t, c), and a label that encodes the source pixel."""
    source = np.arange(H * W, dtype=np.float32).reshape(H, W)
    frames = (
        source[None, :, :, None]
        + 10_000 * np.arange(T)[:, None, None, None]
        + 100_000 * np.arange(C)[None, None, None, :]
    ).astype(np.float32)
    return frames, (source % 250).astype(np.uint8), source


def warp(geometry, **kwargs):
    frames, label, _ = coded_sequence()
    return augment.apply_geometry(frames, label, geometry, **kwargs)


def test_identity_leaves_everything_unchanged():
    frames, label, _ = coded_sequence()
    out_frames, out_label = augment.apply_geometry(frames, label, IDENTITY)
    np.testing.assert_array_equal(out_frames, frames)
    np.testing.assert_array_equal(out_label, label)


def test_flip_rotation_and_shift_against_numpy():
    frames, label, _ = coded_sequence()
    flipped, flipped_label = warp(Geometry(True, 1.0, 0.0, 0.0, 0.0))
    np.testing.assert_array_equal(flipped, frames[:, :, ::-1])
    np.testing.assert_array_equal(flipped_label, label[:, ::-1])
    turned, turned_label = warp(Geometry(False, 1.0, 90.0, 0.0, 0.0))  # counter-clockwise on screen
    np.testing.assert_array_equal(turned, np.rot90(frames, 1, axes=(1, 2)))
    np.testing.assert_array_equal(turned_label, np.rot90(label))
    shifted, shifted_label = warp(Geometry(False, 1.0, 0.0, 0.25, 0.0), input_fill=-0.5)  # 6 rows down
    np.testing.assert_array_equal(shifted[:, 6:], frames[:, :-6])
    np.testing.assert_array_equal(shifted[:, :6], -0.5)
    np.testing.assert_array_equal(shifted_label[:6], 255)
    np.testing.assert_array_equal(shifted_label[6:], label[:-6])


def test_scale_two_magnifies_about_the_centre():
    frames, _, source = coded_sequence()
    out, _ = warp(Geometry(False, 2.0, 0.0, 0.0, 0.0))
    # Output pixel (y, x) samples input ((y - 11.5) / 2 + 11.5) rounded half to even.
    rows = np.rint((np.arange(H) - 11.5) / 2 + 11.5).astype(int)
    np.testing.assert_array_equal(out[0, ..., 0], source[rows][:, rows])


@pytest.mark.parametrize("seed", range(8))
def test_random_augmentation_is_identical_for_all_frames_and_the_label(seed):
    frames, label, _ = coded_sequence()
    out, out_label = augment.augment_sequence(frames, label, np.random.default_rng(seed))
    inside = out_label != 255
    assert inside.any()
    taken = out[0, ..., 0]  # the source pixel each output pixel took, in frame 0
    for t in range(T):
        for c in range(C):
            np.testing.assert_array_equal(out[t, ..., c][inside], taken[inside] + 10_000 * t + 100_000 * c)
            np.testing.assert_array_equal(out[t, ..., c][~inside], -0.5)
    np.testing.assert_array_equal(out_label[inside], (taken[inside] % 250).astype(np.uint8))


def test_same_generator_seed_same_result_and_parameters_in_range():
    frames, label, _ = coded_sequence()
    a = augment.augment_sequence(frames, label, np.random.default_rng([3, 7]))
    b = augment.augment_sequence(frames, label, np.random.default_rng([3, 7]))
    c = augment.augment_sequence(frames, label, np.random.default_rng([3, 8]))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    rng = np.random.default_rng(0)
    draws = [augment.random_geometry(rng) for _ in range(2000)]
    assert 0.45 < np.mean([g.flip for g in draws]) < 0.55
    for field, low, high in (
        ("scale", 0.5, 2.0),
        ("angle_degrees", -15, 15),
        ("shift_x", -0.25, 0.25),
        ("shift_y", -0.25, 0.25),
    ):
        values = np.array([getattr(g, field) for g in draws])
        margin = 0.05 * (high - low)
        assert low <= values.min() < low + margin and high - margin < values.max() <= high
