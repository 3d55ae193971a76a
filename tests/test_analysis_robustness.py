"""Robustness noise: on the 0-255 image before normalization, one value per pixel shared by channels."""

import jax
import numpy as np
import pytest

from snnseg_jax.analysis import robustness
from snnseg_jax.data import preprocess

KEY = jax.random.PRNGKey(0)


def test_image_noise_is_gaussian_on_the_0_255_image_and_shared_by_the_channels():
    rng = np.random.default_rng(0)
    pixels = rng.uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    clean = preprocess.standardize_rgb(pixels)
    noisy = np.asarray(robustness.add_noise(clean, 20.0, KEY, events=False))
    # The noise added to each pixel, back on the 0-255 scale before normalization.
    noise = (noisy - clean) * 255.0
    np.testing.assert_allclose(noise[..., 1], noise[..., 0], atol=1e-3)
    np.testing.assert_allclose(noise[..., 2], noise[..., 0], atol=1e-3)
    np.testing.assert_allclose(preprocess.standardize_rgb(pixels + noise[..., :1]), noisy, atol=1e-6)
    assert np.std(noise[..., 0]) == pytest.approx(20.0, rel=0.03) and abs(np.mean(noise[..., 0])) < 0.5
    assert np.all(np.asarray(robustness.add_noise(clean, 0.0, KEY, events=False)) == clean)


def test_event_noise_is_on_the_normalized_frames_per_pixel_and_frame_shared_by_polarities():
    frames = np.random.default_rng(0).uniform(-0.5, 0.5, (4, 3, 32, 32, 2)).astype(np.float32)
    noise = np.asarray(robustness.add_noise(frames, 0.1, KEY, events=True)) - frames
    np.testing.assert_allclose(noise[..., 1], noise[..., 0], atol=1e-6)
    assert np.std(noise[..., 0]) == pytest.approx(0.1, rel=0.03)
    assert abs(np.corrcoef(noise[:, 0, ..., 0].ravel(), noise[:, 1, ..., 0].ravel())[0, 1]) < 0.05  # fresh per frame


def test_grid_in_native_units_starts_clean_and_drops_are_relative_to_it():
    assert robustness.native_sigmas((0.1, 0.2), events=False) == [0.0, 25.5, 51.0]
    assert robustness.native_sigmas((0.0, 0.2, 0.1), events=True) == [0.0, 0.1, 0.2]
    assert robustness.relative_drop([0.5, 0.4, 0.25]) == pytest.approx([0.0, 20.0, 50.0])
