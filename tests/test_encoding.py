"""Rate coding of static images."""

import jax
import jax.numpy as jnp
import numpy as np

from snnseg_jax import encoding


def test_poisson_rate_matches_pixel_value_with_sign():
    p = jnp.linspace(-1.0, 1.0, 41).reshape(1, 41, 1, 1)
    timesteps = 4000
    spikes = np.asarray(encoding.poisson_encode(jax.random.PRNGKey(0), p, timesteps))
    assert spikes.shape == (timesteps, 1, 41, 1, 1)
    assert set(np.unique(spikes)) <= {-1.0, 0.0, 1.0}
    p = np.asarray(p)
    assert np.all(spikes * np.sign(p)[None] >= 0)  # spikes carry the pixel's sign
    rate = spikes.mean(axis=0)
    tolerance = 5 * np.sqrt(np.abs(p) * (1 - np.abs(p)) / timesteps) + 1e-9
    assert np.all(np.abs(rate - p) <= tolerance)


def test_poisson_draws_fresh_numbers_every_step_and_per_key():
    p = jnp.full((2, 8, 8, 3), 0.5)
    spikes = np.asarray(encoding.poisson_encode(jax.random.PRNGKey(1), p, 200)).reshape(200, -1)
    # Successive steps are independent: agreement between step t and t+1 is ~0.5, not 1.
    agreement = (spikes[1:] == spikes[:-1]).mean()
    assert 0.45 < agreement < 0.55
    other = np.asarray(encoding.poisson_encode(jax.random.PRNGKey(2), p, 200)).reshape(200, -1)
    same_key = np.asarray(encoding.poisson_encode(jax.random.PRNGKey(1), p, 200)).reshape(200, -1)
    assert not np.array_equal(spikes, other)
    np.testing.assert_array_equal(spikes, same_key)


def test_poisson_keeps_bfloat16():
    spikes = encoding.poisson_encode(jax.random.PRNGKey(0), jnp.full((1, 2, 2, 1), -0.3, jnp.bfloat16), 5)
    assert spikes.dtype == jnp.bfloat16
