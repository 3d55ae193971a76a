"""The ops of the networks (NHWC), and the one time layout of the package.

Time layout. Everything a user calls takes and returns time-major tensors: step t of a tensor over
T steps is `x[t]`, `[T, ...]` (`neurons.lif_scan`, `encoding.poisson_encode`, `layers.BNTT` and
`layers.LIF`, the frames of `stream`, the activity `models.activity` gives). The one exception is a
batch of examples as the data pipeline and the networks take it: examples lead, because a batch is
sharded over devices on its first axis, so an event sequence comes in a batch as `[B, T, H, W, C]`
(each example time-major) and `stream.input_frames` turns it into frames `[T, B, H, W, C]`.

Inside the networks time is folded into the batch, batch-major: B examples over T steps are
`[B * T, ...]`, row `b * T + t`, so that every stateless op (convolution, pooling) runs once over
all steps, a batch's `[B, T, ...]` folds without a copy, and a split of the batch over devices is a
split of every activation. The converters between these layouts are private to the modules.

Each op takes the network's `formulations.Tuning`, which picks a faster formulation of the same
values where one pays on the backend.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from snnseg_jax import formulations
from snnseg_jax.formulations import Tuning

Array = jax.Array

_NHWC = ("NHWC", "HWIO", "NHWC")


def _merge_time(x_BT: Array) -> Array:
    """`[B, T, ...]` to the time-folded `[B * T, ...]` (row `b * T + t`; a reshape, no copy)."""
    return x_BT.reshape(-1, *x_BT.shape[2:])


def _split_time(x_N: Array, timesteps: int) -> Array:
    """Time-folded `[B * T, ...]` to `[B, T, ...]` (a reshape, no copy)."""
    return x_N.reshape(-1, timesteps, *x_N.shape[1:])


def _fold_time(x_TB: Array) -> Array:
    """Time-major `[T, B, ...]` to the time-folded `[B * T, ...]`."""
    return _merge_time(jnp.swapaxes(x_TB, 0, 1))


def _unfold_time(x_N: Array, timesteps: int) -> Array:
    """Time-folded `[B * T, ...]` to time-major `[T, B, ...]`."""
    return jnp.swapaxes(_split_time(x_N, timesteps), 0, 1)


def time_mean(x_N: Array, timesteps: int, tuning: Tuning) -> Array:
    """Mean over time of time-folded `[B * T, ...]`, giving `[B, ...]`."""
    if timesteps == 1:
        return x_N
    x_BT = _split_time(x_N, timesteps)
    total = formulations.sum_by_halves(x_BT, 1) if tuning.time_sum_by_halves else x_BT.sum(axis=1)
    return total / timesteps


def conv2d(x_NHWC: Array, kernel_HWIO: Array, dilation: int, tuning: Tuning) -> Array:
    """'Same'-size convolution, stride 1, odd kernel, zero padding `dilation * (k // 2)`."""
    kernel_HWIO = kernel_HWIO.astype(x_NHWC.dtype)
    if kernel_HWIO.shape[:2] == (1, 1) and tuning.conv_1x1_as_matmul:
        return jnp.einsum("nhwi,io->nhwo", x_NHWC, kernel_HWIO[0, 0])
    if (
        tuning.conv_in_bounds_taps
        and formulations.in_bounds_fraction(x_NHWC.shape[1:3], kernel_HWIO.shape[:2], dilation) < 0.5
    ):
        return formulations.conv2d_in_bounds(x_NHWC, kernel_HWIO, dilation)
    if tuning.conv_input_grad_as_forward:
        return formulations.conv2d_forward_input_grad(x_NHWC, kernel_HWIO, dilation)
    return formulations.conv2d_xla(x_NHWC, kernel_HWIO, dilation)


def avg_pool(x_NHWC: Array, tuning: Tuning) -> Array:
    """Average pool, window 3, stride 2, padding 1, padding counted in the divisor (always 9)."""
    if tuning.avg_pool_interleaved_backward:
        return formulations.avg_pool_interleaved(x_NHWC)
    return formulations.avg_pool_sum(x_NHWC) / jnp.array(9, x_NHWC.dtype)


def conv_transpose_stride2(x_NHWC: Array, kernel_HWIO: Array) -> Array:
    """Transposed convolution, stride 2, no padding: n inputs give (n - 1) * 2 + k outputs.

    As PyTorch's `ConvTranspose2d(k, stride=2)`: the kernel is applied spatially flipped relative
    to a plain convolution of the stride-dilated input.
    """
    kh, kw = kernel_HWIO.shape[:2]
    return jax.lax.conv_general_dilated(
        x_NHWC,
        kernel_HWIO[::-1, ::-1].astype(x_NHWC.dtype),
        (1, 1),
        ((kh - 1, kh - 1), (kw - 1, kw - 1)),
        lhs_dilation=(2, 2),
        dimension_numbers=_NHWC,
    )


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
