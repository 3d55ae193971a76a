"""Input coding: static images to spike trains, event sequences to time-major frames (SPEC §3)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def poisson_encode(key: Array, images_BHWC: Array, timesteps: int) -> Array:
    """Signed rate coding: `o_t = sign(p) * [r_t <= |p|]` with fresh `r_t ~ U[0, 1)` per step.

    Returns spikes `[T, B, H, W, C]` in {-1, 0, 1}, in the dtype of the images. A pixel with
    |p| >= 1 fires at every step; one at 0 never does.
    """
    draws = jax.random.uniform(key, (timesteps, *images_BHWC.shape), dtype=jnp.float32)
    fired = draws <= jnp.abs(images_BHWC).astype(jnp.float32)
    return (jnp.sign(images_BHWC) * fired).astype(images_BHWC.dtype)


def events_time_major(events_BTHWC: Array) -> Array:
    """Event frames `[B, T, H, W, C]` to `[T, B, H, W, C]`: frame t is fed at step t."""
    return jnp.swapaxes(events_BTHWC, 0, 1)
