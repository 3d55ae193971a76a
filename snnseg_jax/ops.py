"""Stateless array operations of the networks, on NHWC tensors with time folded into N.

Kept apart from the modules so that a faster formulation of one op changes one function.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

_NHWC = ("NHWC", "HWIO", "NHWC")


def conv2d(x_NHWC: Array, kernel_HWIO: Array, dilation: int = 1) -> Array:
    """'Same'-size convolution, stride 1, odd kernel, zero padding `dilation * (k // 2)`."""
    kh, kw = kernel_HWIO.shape[:2]
    pad = ((dilation * (kh // 2),) * 2, (dilation * (kw // 2),) * 2)
    return jax.lax.conv_general_dilated(
        x_NHWC, kernel_HWIO.astype(x_NHWC.dtype), (1, 1), pad,
        rhs_dilation=(dilation, dilation), dimension_numbers=_NHWC,
    )


def conv_transpose_stride2(x_NHWC: Array, kernel_HWIO: Array) -> Array:
    """Transposed convolution, stride 2, no padding: n inputs give (n - 1) * 2 + k outputs.

    As PyTorch's `ConvTranspose2d(k, stride=2)`: the kernel is applied spatially flipped relative
    to a plain convolution of the stride-dilated input.
    """
    kh, kw = kernel_HWIO.shape[:2]
    return jax.lax.conv_general_dilated(
        x_NHWC, kernel_HWIO[::-1, ::-1].astype(x_NHWC.dtype), (1, 1),
        ((kh - 1, kh - 1), (kw - 1, kw - 1)), lhs_dilation=(2, 2), dimension_numbers=_NHWC,
    )


def avg_pool(x_NHWC: Array) -> Array:
    """Average pool, window 3, stride 2, padding 1, padding counted in the divisor (always 9)."""
    summed = jax.lax.reduce_window(
        x_NHWC, np.zeros((), x_NHWC.dtype), jax.lax.add, (1, 3, 3, 1), (1, 2, 2, 1),
        ((0, 0), (1, 1), (1, 1), (0, 0)),
    )
    return summed / jnp.array(9, x_NHWC.dtype)


def pooled_size(n: int) -> int:
    """Output side of `avg_pool` for an input side n."""
    return (n - 1) // 2 + 1


def _align_corners_matrix(n_out: int, n_in: int) -> np.ndarray:
    """`[n_out, n_in]` linear-interpolation weights with corners aligned (align_corners=True)."""
    weights = np.zeros((n_out, n_in), np.float32)
    if n_in == 1 or n_out == 1:
        weights[:, 0] = 1.0
        return weights
    src = np.arange(n_out) * (n_in - 1) / (n_out - 1)
    lo = np.minimum(np.floor(src).astype(int), n_in - 2)
    frac = (src - lo).astype(np.float32)
    weights[np.arange(n_out), lo] = 1.0 - frac
    weights[np.arange(n_out), lo + 1] += frac
    return weights


def resize_bilinear(x_NHWC: Array, height: int, width: int) -> Array:
    """Bilinear resize to exactly `height` x `width` with align_corners=True, as two small matmuls."""
    _, h, w, _ = x_NHWC.shape
    if (h, w) == (height, width):
        return x_NHWC
    rows = jnp.asarray(_align_corners_matrix(height, h), x_NHWC.dtype)
    cols = jnp.asarray(_align_corners_matrix(width, w), x_NHWC.dtype)
    return jnp.einsum("oh,nhwc,pw->nopc", rows, x_NHWC, cols)
