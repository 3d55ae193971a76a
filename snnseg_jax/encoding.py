"""Input coding: static images to spike trains (rate coding, time-major `[T, B, H, W, C]`).

The rule is the authors' code's, signed: a normalized pixel p fires a spike of sign(p) at a step
with probability min(|p|, 1), drawn afresh at every step (also at evaluation, from a seeded key).
The paper prints "spike if random > pixel"; the code's rule is the one that produced the results.
Event sequences need no coding: frame t is fed as analog values at step t.
"""

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
