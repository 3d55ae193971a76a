"""Faster formulations of a few ops, and the process and compiler settings, chosen per backend.

Every formulation here computes the values of the plain op it replaces (XLA's own op, autodiff for
its gradient); what changes is speed or memory. A network carries a `Tuning` that says which of
them it uses (`models.build(..., tuned_ops=True)` takes `for_backend(jax.default_backend())`;
`tuned_ops=False`, or config `model.tuned_ops=False`, takes `PLAIN`: XLA's ops and autodiff
throughout, to check a result or a new XLA version against). The tests check that both give the
same values (`tests/test_formulations.py`).

Whether each still pays is measured by switching it off alone, on the paper's network:

    python -m snnseg_jax.benchmark --config configs/voc_deeplab.py --config.batch_size=2 --ablate_tuning

which prints the train step's time and temporary memory with all of them, with none, and without
each one, as ratios to all of them in the same run. What it printed last, with the JAX version and
the machine, is in `docs/results/performance.json` (written by `reproduce/performance_results.sh`,
shown in docs/performance.md); rerun it after upgrading JAX and drop what no longer pays.

Off CPU only the backend-independent ones are used, and none has been measured there yet. The two
convolution formulations measured on CPU only are off there, XLA's (vendor) convolutions on:
`ops.conv2d` chooses by what a convolution computes (the in-bounds taps only where fewer than half
of its multiply-adds read the input, as for DeepLab's dilation-12 layer on a 16x16 map, where three
quarters multiply padding), but only where the backend's `Tuning` allows. Whether that pays on a
GPU or TPU is measured there by switching it on, alone:

    python -m snnseg_jax.benchmark --config configs/voc_deeplab.py --ablate_tuning --ablate=conv_in_bounds_taps

(`benchmarks/gpu_check.sh` runs it; `--tuning_backend=gpu` rehearses it on CPU).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Tuning:
    """Which formulations a network uses (all off: `PLAIN`). The fields, in the order measured:"""

    conv_1x1_as_matmul: bool = False  # a 1x1 convolution as one matrix product
    conv_in_bounds_taps: bool = False  # a dilated conv whose taps mostly fall on the padding sums only the others
    conv_input_grad_as_forward: bool = False  # a conv's input gradient as a forward conv of the flipped kernel
    avg_pool_interleaved_backward: bool = False  # avg-pool backward in two interleaving passes
    time_sum_by_halves: bool = False  # sums over a short time axis by adding halves
    recompute_conv_below_channels: int = 0  # fused layer: recompute (not store) convs over fewer input channels
    order_by_data_dependence: bool = False  # fused layer: delay work by making it depend on data (`after`)
    xla_cpu_library_fusions: bool = False  # XLA CPU: YNNPACK for dots and reductions only

    def compiler_options(self) -> dict[str, str]:
        """XLA compiler options for a step of a network with this tuning (see `_CPU_OPTIONS`)."""
        return _cpu_options() if self.xla_cpu_library_fusions else {}


PLAIN = Tuning()
_EVERY_BACKEND = Tuning(
    conv_1x1_as_matmul=True,
    avg_pool_interleaved_backward=True,
    time_sum_by_halves=True,
    recompute_conv_below_channels=5,
    order_by_data_dependence=True,
)
# The CPU-only ones were measured on CPU only; on GPU and TPU XLA's (vendor) convolutions are used.
_CPU = dataclasses.replace(
    _EVERY_BACKEND, conv_in_bounds_taps=True, conv_input_grad_as_forward=True, xla_cpu_library_fusions=True
)


def for_backend(backend: str) -> Tuning:
    """The formulations that pay on `backend` ("cpu", "gpu", "tpu")."""
    return _CPU if backend == "cpu" else _EVERY_BACKEND


# ---------------------------------------------------------------- process and compiler settings

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8

# YNNPACK (XLA's CPU library for dots, convolutions and reductions) for matrix products and
# reductions only: its convolution weight gradients ran 1.5-2x slower than XLA's own convolutions.
_CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"}


@functools.cache
def _cpu_options() -> dict[str, str]:
    """`_CPU_OPTIONS` on CPU where this XLA knows them, else none."""
    if jax.default_backend() != "cpu":
        return {}
    try:
        jax.jit(jnp.negative).lower(jnp.zeros(2)).compile(compiler_options=_CPU_OPTIONS)
    except Exception:  # an XLA without these options: its defaults
        return {}
    return dict(_CPU_OPTIONS)


def deterministic_gpu_ops() -> bool:
    """Adds `--xla_gpu_deterministic_ops=true` to `XLA_FLAGS`, unless they name that flag already.

    XLA's GPU kernels then give the same bits run after run (no atomics in scatter-adds and
    reductions, convolution algorithms chosen deterministically), which the exact resume of a run
    needs; it may cost some speed (`XLA_FLAGS=--xla_gpu_deterministic_ops=false` trades it back).
    CPUs and TPUs are deterministic anyway and ignore it. Entry points call it (`cli.run`) before
    the first computation: XLA reads its flags once. Returns whether it added the flag.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_gpu_deterministic_ops" in flags:
        return False
    os.environ["XLA_FLAGS"] = f"{flags} --xla_gpu_deterministic_ops=true".strip()
    return True


def keep_freed_memory() -> bool:
    """Makes glibc malloc keep freed memory for reuse instead of returning it to the system.

    XLA on CPU allocates its buffers afresh at every step; glibc serves large ones with new
    memory mappings that the kernel zero-fills page by page on first touch, which cost about a
    tenth of a train step here. Kept memory is reused without that cost; the process keeps its
    peak memory. Call before the first computation, so that XLA's threads, created then, share
    one arena (it only concerns host memory: harmless with an accelerator). Entry points call it
    (`cli.run`); values never change. Returns whether the settings took effect (False without glibc).
    """
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return all([mallopt(_M_MMAP_MAX, 0), mallopt(_M_TRIM_THRESHOLD, 2**31 - 1), mallopt(_M_ARENA_MAX, 1)])


# ---------------------------------------------------------------- ordering


def after(x: Array, anchor: Array, tuning: Tuning) -> Array:
    """`x`, made data-dependent on `anchor` (adds `0 * anchor[0]`, exact for finite anchors).

    XLA on CPU neither keeps `optimization_barrier`s nor delays work it can start early: in the
    fused layer's backward pass it would decode the stored input during the forward pass (holding
    it in float until the backward pass) and merge a recomputed conv with the forward one.
    """
    if not tuning.order_by_data_dependence:
        return x
    return x + (anchor.reshape(-1)[0] * 0).astype(x.dtype)


# ---------------------------------------------------------------- sums over time


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def sum_by_halves(x: Array, axis: int) -> Array:
    """Sum over a short `axis` by adding halves (log2 of its length elementwise passes).

    XLA on CPU (its YNNPACK reduction) ran `x.sum(axis)` over the T of `[B, T, H, W, C]` about 50x
    slower than this.
    """
    take = lambda start, stop: jax.lax.slice_in_dim(x, start, stop, axis=axis)
    while x.shape[axis] > 1:
        length, half = x.shape[axis], x.shape[axis] // 2
        pairs = take(0, half) + take(half, 2 * half)
        if length % 2:
            pairs = jnp.concatenate(
                [
                    jax.lax.slice_in_dim(pairs, 0, 1, axis=axis) + take(length - 1, length),
                    jax.lax.slice_in_dim(pairs, 1, half, axis=axis),
                ],
                axis=axis,
            )
        x = pairs
    return jnp.squeeze(x, axis)


def _sum_by_halves_bwd(axis, length, g):
    return (jnp.broadcast_to(jnp.expand_dims(g, axis), (*g.shape[:axis], length, *g.shape[axis:])),)


sum_by_halves.defvjp(lambda x, axis: (sum_by_halves(x, axis), x.shape[axis]), _sum_by_halves_bwd)


# ---------------------------------------------------------------- average pool


def avg_pool_sum(x_NHWC: Array) -> Array:
    """Sums over windows of 3x3 at stride 2 with padding 1 (XLA's reduce_window)."""
    return jax.lax.reduce_window(
        x_NHWC, np.zeros((), x_NHWC.dtype), jax.lax.add, (1, 3, 3, 1), (1, 2, 2, 1), ((0, 0), (1, 1), (1, 1), (0, 0))
    )


@jax.custom_vjp
def avg_pool_interleaved(x_NHWC: Array) -> Array:
    """`avg_pool_sum(x) / 9` whose backward pass is two interleaving passes.

    XLA's transpose of reduce_window pads and re-reduces, several times slower on CPU.
    """
    return avg_pool_sum(x_NHWC) / jnp.array(9, x_NHWC.dtype)


def _spread_over_windows(g: Array, axis: int, n: int) -> Array:
    """Transpose of summing windows of 3 at stride 2 (padding 1) along `axis`, for an input side n.

    Input 2k lies in window k only, input 2k + 1 in windows k and k + 1.
    """
    following = jnp.concatenate(
        [jax.lax.slice_in_dim(g, 1, None, axis=axis), jnp.zeros_like(jax.lax.slice_in_dim(g, 0, 1, axis=axis))],
        axis=axis,
    )
    interleaved = jnp.stack([g, g + following], axis=axis + 1)
    shape = list(g.shape)
    shape[axis] *= 2
    return jax.lax.slice_in_dim(interleaved.reshape(shape), 0, n, axis=axis)


def _avg_pool_bwd(spatial, g_NHWC):
    g = _spread_over_windows(_spread_over_windows(g_NHWC, 1, spatial[0]), 2, spatial[1])
    return (g / jnp.array(9, g.dtype),)


avg_pool_interleaved.defvjp(lambda x: (avg_pool_interleaved(x), x.shape[1:3]), _avg_pool_bwd)


# ---------------------------------------------------------------- convolutions

_NHWC = ("NHWC", "HWIO", "NHWC")


def conv2d_xla(x_NHWC: Array, kernel_HWIO: Array, dilation: int = 1) -> Array:
    """'Same'-size convolution, stride 1, odd kernel, as one XLA convolution: the plain formulation."""
    kh, kw = kernel_HWIO.shape[:2]
    pad = ((dilation * (kh // 2),) * 2, (dilation * (kw // 2),) * 2)
    return jax.lax.conv_general_dilated(
        x_NHWC,
        kernel_HWIO.astype(x_NHWC.dtype),
        (1, 1),
        pad,
        rhs_dilation=(dilation, dilation),
        dimension_numbers=_NHWC,
    )


def flip(kernel_HWIO: Array) -> Array:
    """The kernel whose 'same' convolution is the transpose (input gradient) of `kernel_HWIO`'s.

    Flipped in space, inputs and outputs swapped: the 'same' padding and tap offsets are symmetric.
    """
    return jnp.swapaxes(kernel_HWIO[::-1, ::-1], 2, 3)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv2d_forward_input_grad(x_NHWC: Array, kernel_HWIO: Array, dilation: int) -> Array:
    """`conv2d_xla` whose input gradient is a forward convolution of the output gradient.

    On CPU XLA ran that forward convolution 10-30% faster than the transposed one autodiff emits.
    """
    return conv2d_xla(x_NHWC, kernel_HWIO, dilation)


def _forward_input_grad_bwd(dilation, residuals, g_NHWC):
    x_NHWC, kernel_HWIO = residuals
    g_kernel = jax.vjp(lambda k: conv2d_xla(x_NHWC, k, dilation), kernel_HWIO)[1](g_NHWC)[0]
    return conv2d_xla(g_NHWC, flip(kernel_HWIO), dilation), g_kernel


conv2d_forward_input_grad.defvjp(
    lambda x, kernel, dilation: (conv2d_xla(x, kernel, dilation), (x, kernel)), _forward_input_grad_bwd
)


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
    return [
        (lo, hi, [o for o, (a, b) in zip(offsets, ranges) if a <= lo and hi <= b]) for lo, hi in zip(cuts, cuts[1:])
    ]


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
            patches = [x_NHWC[:, r0 + dy : r1 + dy, c0 + dx : c1 + dx] for dy in dys for dx in dxs]
            kernels = [kernel_HWIO[row_offsets.index(dy), col_offsets.index(dx)] for dy in dys for dx in dxs]
            if c_in < c_out:
                blocks.append(
                    jnp.einsum("nhwi,io->nhwo", jnp.concatenate(patches, axis=-1), jnp.concatenate(kernels, axis=0))
                )
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
            patches = jnp.concatenate([x_NHWC[:, r0 + dy : r1 + dy, c0 + dx : c1 + dx] for dy, dx in taps], axis=-1)
            product = jnp.einsum("nhwk,nhwo->ko", patches, g_NHWC[:, r0:r1, c0:c1])
            for i, tap in enumerate(taps):
                part = product[i * c_in : (i + 1) * c_in]
                grads[tap] = grads[tap] + part if tap in grads else part
    zeros = jnp.zeros(kernel_shape[2:], g_NHWC.dtype)
    return jnp.stack([grads.get((dy, dx), zeros) for dy in row_offsets for dx in col_offsets]).reshape(kernel_shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv2d_in_bounds(x_NHWC: Array, kernel_HWIO: Array, dilation: int) -> Array:
    """`conv2d_xla` summing only the taps that fall inside the input, as matrix products.

    For a dilation comparable to the map (the 16x16 map and dilation 12 of DeepLab-LargeFOV) three
    quarters of a plain convolution's work multiplies padding; this skips it, forward and backward.
    Written with its own backward pass: autodiff of the blocks would materialize a padded
    full-size partial result per tap.
    """
    return _in_bounds_forward(x_NHWC, kernel_HWIO, dilation)


def _in_bounds_bwd(dilation, residuals, g_NHWC):
    x_NHWC, kernel_HWIO = residuals
    g_x = _in_bounds_forward(g_NHWC, flip(kernel_HWIO), dilation)
    return g_x, _in_bounds_kernel_grad(x_NHWC, g_NHWC, kernel_HWIO.shape, dilation).astype(kernel_HWIO.dtype)


conv2d_in_bounds.defvjp(
    lambda x, kernel, dilation: (_in_bounds_forward(x, kernel, dilation), (x, kernel)), _in_bounds_bwd
)
