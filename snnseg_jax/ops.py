"""Stateless array operations of the networks, on NHWC tensors with time folded into N.

Kept apart from the modules so that a faster formulation of one op changes one function.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

_NHWC = ("NHWC", "HWIO", "NHWC")


def merge_time(x_BT: Array) -> Array:
    """`[B, T, ...]` to the time-folded `[B * T, ...]` (row `b * T + t`; a reshape, no copy)."""
    return x_BT.reshape(-1, *x_BT.shape[2:])


def split_time(x_N: Array, timesteps: int) -> Array:
    """Time-folded `[B * T, ...]` to `[B, T, ...]` (a reshape, no copy)."""
    return x_N.reshape(-1, timesteps, *x_N.shape[1:])


def fold_time(x_TB: Array) -> Array:
    """Time-major `[T, B, ...]` to the time-folded `[B * T, ...]`.

    Time is folded batch-major, so that a split of the batch over devices is a split of the folded
    rows: each device runs only its own examples.
    """
    return merge_time(jnp.swapaxes(x_TB, 0, 1))


def unfold_time(x_N: Array, timesteps: int) -> Array:
    """Time-folded `[B * T, ...]` to time-major `[T, B, ...]`."""
    return jnp.swapaxes(split_time(x_N, timesteps), 0, 1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def sum_by_halves(x: Array, axis: int) -> Array:
    """Sum over a short `axis` by adding halves (log2 of its length elementwise passes).

    XLA on CPU (its YNNPACK reduction) runs `x.sum(axis=0)` over a short leading axis about 50x
    slower than this for the `[T, B, H, W, C]` tensors here, and likewise over the T of `[B, T, ...]`.
    """
    take = lambda start, stop: jax.lax.slice_in_dim(x, start, stop, axis=axis)
    while x.shape[axis] > 1:
        length, half = x.shape[axis], x.shape[axis] // 2
        pairs = take(0, half) + take(half, 2 * half)
        if length % 2:
            pairs = jnp.concatenate([jax.lax.slice_in_dim(pairs, 0, 1, axis=axis) + take(length - 1, length),
                                     jax.lax.slice_in_dim(pairs, 1, half, axis=axis)], axis=axis)
        x = pairs
    return jnp.squeeze(x, axis)


def _sum_by_halves_bwd(axis, length, g):
    return (jnp.broadcast_to(jnp.expand_dims(g, axis), (*g.shape[:axis], length, *g.shape[axis:])),)


sum_by_halves.defvjp(lambda x, axis: (sum_by_halves(x, axis), x.shape[axis]), _sum_by_halves_bwd)



def conv2d(x_NHWC: Array, kernel_HWIO: Array, dilation: int = 1) -> Array:
    """'Same'-size convolution, stride 1, odd kernel, zero padding `dilation * (k // 2)`.

    Same result as `conv2d_xla` on every backend; the formulation is chosen for speed: a 1x1
    kernel is a matrix product; on CPU a dilated kernel whose taps mostly fall on the padding sums
    only its in-bounds taps, and the others compute their input gradient as a forward convolution.
    """
    kernel_HWIO = kernel_HWIO.astype(x_NHWC.dtype)
    if kernel_HWIO.shape[:2] == (1, 1):
        return jnp.einsum("nhwi,io->nhwo", x_NHWC, kernel_HWIO[0, 0])
    if jax.default_backend() != "cpu":
        return conv2d_xla(x_NHWC, kernel_HWIO, dilation)
    if in_bounds_fraction(x_NHWC.shape[1:3], kernel_HWIO.shape[:2], dilation) < 0.5:
        return conv2d_in_bounds(x_NHWC, kernel_HWIO, dilation)
    return conv2d_forward_input_grad(x_NHWC, kernel_HWIO, dilation)


def conv2d_xla(x_NHWC: Array, kernel_HWIO: Array, dilation: int = 1) -> Array:
    """`conv2d` as one XLA convolution (cuDNN on GPU; the reference formulation)."""
    kh, kw = kernel_HWIO.shape[:2]
    pad = ((dilation * (kh // 2),) * 2, (dilation * (kw // 2),) * 2)
    return jax.lax.conv_general_dilated(
        x_NHWC, kernel_HWIO.astype(x_NHWC.dtype), (1, 1), pad,
        rhs_dilation=(dilation, dilation), dimension_numbers=_NHWC,
    )


def _flip(kernel_HWIO: Array) -> Array:
    """The kernel whose 'same' convolution is the transpose (input gradient) of `kernel_HWIO`'s.

    Flipped in space, inputs and outputs swapped: the 'same' padding and tap offsets are symmetric.
    """
    return jnp.swapaxes(kernel_HWIO[::-1, ::-1], 2, 3)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv2d_forward_input_grad(x_NHWC: Array, kernel_HWIO: Array, dilation: int) -> Array:
    """`conv2d_xla` whose input gradient is a forward convolution of the output gradient.

    On CPU XLA runs that forward convolution 10-30% faster than the transposed one autodiff emits.
    """
    return conv2d_xla(x_NHWC, kernel_HWIO, dilation)


def _forward_input_grad_fwd(x_NHWC, kernel_HWIO, dilation):
    return conv2d_xla(x_NHWC, kernel_HWIO, dilation), (x_NHWC, kernel_HWIO)


def _forward_input_grad_bwd(dilation, residuals, g_NHWC):
    x_NHWC, kernel_HWIO = residuals
    g_kernel = jax.vjp(lambda k: conv2d_xla(x_NHWC, k, dilation), kernel_HWIO)[1](g_NHWC)[0]
    return conv2d_xla(g_NHWC, _flip(kernel_HWIO), dilation), g_kernel


conv2d_forward_input_grad.defvjp(_forward_input_grad_fwd, _forward_input_grad_bwd)


def _tap_offsets(kernel_size: int, dilation: int) -> list[int]:
    return [(i - kernel_size // 2) * dilation for i in range(kernel_size)]


def _in_bounds(n: int, offset: int) -> tuple[int, int]:
    """Output positions `[lo, hi)` of a side of n whose input position `o + offset` is inside it."""
    return max(0, -offset), min(n, n - offset)


def in_bounds_fraction(spatial: tuple[int, int], kernel: tuple[int, int], dilation: int) -> float:
    """Fraction of a 'same' convolution's multiply-adds that read the input rather than the padding."""
    fraction = 1.0
    for n, k in zip(spatial, kernel):
        fraction *= sum(max(0, hi - lo) for lo, hi in (_in_bounds(n, o) for o in _tap_offsets(k, dilation))) / (n * k)
    return fraction


def _bands(n: int, offsets: list[int]) -> list[tuple[int, int, list[int]]]:
    """Splits output positions `[0, n)` into intervals `(lo, hi, offsets in bounds on all of it)`."""
    ranges = [_in_bounds(n, o) for o in offsets]
    cuts = sorted({0, n, *(b for lo, hi in ranges if lo < hi for b in (lo, hi))})
    return [(lo, hi, [o for o, (a, b) in zip(offsets, ranges) if a <= lo and hi <= b])
            for lo, hi in zip(cuts, cuts[1:])]


def _in_bounds_forward(x_NHWC: Array, kernel_HWIO: Array, dilation: int) -> Array:
    """Output block by output block, over the taps in bounds on that block.

    With fewer input than output channels, one matrix product over the taps' patches concatenated
    along channels (larger products); otherwise one product per tap, summed (the patches would
    take more memory than the output).
    """
    _, h, w, c_in = x_NHWC.shape
    kh, kw, _, c_out = kernel_HWIO.shape
    row_offsets, col_offsets = _tap_offsets(kh, dilation), _tap_offsets(kw, dilation)
    rows = []
    for r0, r1, dys in _bands(h, row_offsets):
        blocks = []
        for c0, c1, dxs in _bands(w, col_offsets):
            patches = [x_NHWC[:, r0 + dy:r1 + dy, c0 + dx:c1 + dx] for dy in dys for dx in dxs]
            kernels = [kernel_HWIO[row_offsets.index(dy), col_offsets.index(dx)] for dy in dys for dx in dxs]
            if c_in < c_out:
                blocks.append(jnp.einsum("nhwi,io->nhwo", jnp.concatenate(patches, axis=-1),
                                         jnp.concatenate(kernels, axis=0)))
            else:
                blocks.append(sum(jnp.einsum("nhwi,io->nhwo", p, k) for p, k in zip(patches, kernels)))
        rows.append(jnp.concatenate(blocks, axis=2))
    return jnp.concatenate(rows, axis=1)


def _in_bounds_kernel_grad(x_NHWC: Array, g_NHWC: Array, kernel_shape, dilation: int) -> Array:
    """Kernel gradient, output block by output block: the block's in-bounds patches (concatenated
    over taps) against the output gradient on the block, one matrix product per block."""
    _, h, w, c_in = x_NHWC.shape
    kh, kw = kernel_shape[:2]
    row_offsets, col_offsets = _tap_offsets(kh, dilation), _tap_offsets(kw, dilation)
    grads = {}
    for r0, r1, dys in _bands(h, row_offsets):
        for c0, c1, dxs in _bands(w, col_offsets):
            taps = [(dy, dx) for dy in dys for dx in dxs]
            patches = jnp.concatenate([x_NHWC[:, r0 + dy:r1 + dy, c0 + dx:c1 + dx] for dy, dx in taps], axis=-1)
            product = jnp.einsum("nhwk,nhwo->ko", patches, g_NHWC[:, r0:r1, c0:c1])
            for i, tap in enumerate(taps):
                part = product[i * c_in:(i + 1) * c_in]
                grads[tap] = grads[tap] + part if tap in grads else part
    zeros = jnp.zeros(kernel_shape[2:], g_NHWC.dtype)
    return jnp.stack([grads.get((dy, dx), zeros) for dy in row_offsets for dx in col_offsets]).reshape(kernel_shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv2d_in_bounds(x_NHWC: Array, kernel_HWIO: Array, dilation: int) -> Array:
    """`conv2d` summing only the taps that fall inside the input, as matrix products.

    For a dilation comparable to the map (the 16x16 map and dilation 12 of DeepLab-LargeFOV) three
    quarters of a plain convolution's work multiplies padding; this skips it, forward and backward.
    Written with its own backward pass: autodiff of the blocks would materialize a padded
    full-size partial result per tap.
    """
    return _in_bounds_forward(x_NHWC, kernel_HWIO, dilation)


def _in_bounds_fwd(x_NHWC, kernel_HWIO, dilation):
    return _in_bounds_forward(x_NHWC, kernel_HWIO, dilation), (x_NHWC, kernel_HWIO)


def _in_bounds_bwd(dilation, residuals, g_NHWC):
    x_NHWC, kernel_HWIO = residuals
    g_x = _in_bounds_forward(g_NHWC, _flip(kernel_HWIO), dilation)
    return g_x, _in_bounds_kernel_grad(x_NHWC, g_NHWC, kernel_HWIO.shape, dilation).astype(kernel_HWIO.dtype)


conv2d_in_bounds.defvjp(_in_bounds_fwd, _in_bounds_bwd)


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


@jax.custom_vjp
def avg_pool(x_NHWC: Array) -> Array:
    """Average pool, window 3, stride 2, padding 1, padding counted in the divisor (always 9)."""
    summed = jax.lax.reduce_window(
        x_NHWC, np.zeros((), x_NHWC.dtype), jax.lax.add, (1, 3, 3, 1), (1, 2, 2, 1),
        ((0, 0), (1, 1), (1, 1), (0, 0)),
    )
    return summed / jnp.array(9, x_NHWC.dtype)


def _spread_over_windows(g: Array, axis: int, n: int) -> Array:
    """Transpose of summing windows of 3 at stride 2 (padding 1) along `axis`, for an input side n.

    Input 2k lies in window k only, input 2k + 1 in windows k and k + 1.
    """
    following = jnp.concatenate([jax.lax.slice_in_dim(g, 1, None, axis=axis),
                                 jnp.zeros_like(jax.lax.slice_in_dim(g, 0, 1, axis=axis))], axis=axis)
    interleaved = jnp.stack([g, g + following], axis=axis + 1)
    shape = list(g.shape)
    shape[axis] *= 2
    return jax.lax.slice_in_dim(interleaved.reshape(shape), 0, n, axis=axis)


def _avg_pool_fwd(x_NHWC):
    return avg_pool(x_NHWC), x_NHWC.shape[1:3]


def _avg_pool_bwd(spatial, g_NHWC):
    # Two interleaving passes: XLA's transpose of reduce_window pads and re-reduces, several times slower.
    g = _spread_over_windows(_spread_over_windows(g_NHWC, 1, spatial[0]), 2, spatial[1])
    return (g / jnp.array(9, g.dtype),)


avg_pool.defvjp(_avg_pool_fwd, _avg_pool_bwd)


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
