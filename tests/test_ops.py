"""Array ops against direct numpy definitions."""

import jax.numpy as jnp
import numpy as np
import pytest

from snnseg_jax import formulations, ops

rng = np.random.default_rng(0)


def numpy_conv(x, w, dilation):
    """Direct 'same' convolution (cross-correlation, as in PyTorch) by explicit taps."""
    n, h, wd, _ = x.shape
    k = w.shape[0]
    pad = dilation * (k // 2)
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    out = np.zeros((n, h, wd, w.shape[-1]))
    for i in range(k):
        for j in range(k):
            patch = xp[:, i * dilation : i * dilation + h, j * dilation : j * dilation + wd]
            out += patch @ w[i, j]
    return out


TUNINGS = {"plain": formulations.PLAIN, "cpu": formulations.for_backend("cpu"), "gpu": formulations.for_backend("gpu")}


@pytest.mark.parametrize("tuning", TUNINGS)
@pytest.mark.parametrize("dilation,kernel", [(1, 3), (2, 3), (12, 3), (1, 1)])
def test_conv2d_matches_direct_taps(dilation, kernel, tuning):
    x = rng.normal(size=(2, 9, 7, 3))
    w = rng.normal(size=(kernel, kernel, 3, 4))
    got = ops.conv2d(jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32), dilation, TUNINGS[tuning])
    np.testing.assert_allclose(np.asarray(got), numpy_conv(x, w, dilation), rtol=1e-4, atol=1e-4)


def test_conv_transpose_stride2_is_pytorch_scatter_definition():
    x = rng.normal(size=(1, 4, 5, 2))
    w = rng.normal(size=(3, 3, 2, 3))
    ref = np.zeros((1, 9, 11, 3))  # out[2i + a, 2j + b] += x[i, j] @ w[a, b]
    for i in range(4):
        for j in range(5):
            for a in range(3):
                for b in range(3):
                    ref[0, 2 * i + a, 2 * j + b] += x[0, i, j] @ w[a, b]
    got = ops.conv_transpose_stride2(jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32))
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("tuning", TUNINGS)
@pytest.mark.parametrize("size", [8, 7, 1])
def test_avg_pool_counts_padding(size, tuning):
    x = rng.normal(size=(2, size, size, 3))
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = (size + 1) // 2  # windows of 3 at stride 2 over the side padded by 1
    ref = np.zeros((2, out, out, 3))
    for i in range(out):
        for j in range(out):
            ref[:, i, j] = xp[:, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3].sum(axis=(1, 2)) / 9.0
    got = ops.avg_pool(jnp.asarray(x, jnp.float32), TUNINGS[tuning])
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("src,dst", [((4, 4), (16, 16)), ((17, 9), (16, 8)), ((5, 3), (7, 11)), ((1, 2), (3, 3))])
def test_resize_bilinear_align_corners(src, dst):
    x = rng.normal(size=(2, *src, 3))

    def coord(i, n_in, n_out):
        s = 0.0 if n_out == 1 else i * (n_in - 1) / (n_out - 1)
        lo = min(int(np.floor(s)), max(n_in - 2, 0))
        hi = min(lo + 1, n_in - 1)
        return lo, hi, s - lo

    ref = np.zeros((2, *dst, 3))
    for i in range(dst[0]):
        y0, y1, fy = coord(i, src[0], dst[0])
        for j in range(dst[1]):
            x0, x1, fx = coord(j, src[1], dst[1])
            top = (1 - fx) * x[:, y0, x0] + fx * x[:, y0, x1]
            bottom = (1 - fx) * x[:, y1, x0] + fx * x[:, y1, x1]
            ref[:, i, j] = (1 - fy) * top + fy * bottom
    got = ops.resize_bilinear(jnp.asarray(x, jnp.float32), *dst)
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-5, atol=1e-5)
    # Corners are copied exactly.
    np.testing.assert_allclose(np.asarray(got)[:, -1, -1], x[:, -1, -1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("tuning", TUNINGS)
def test_time_mean_of_folded_steps(tuning):
    T, B = 5, 3
    x_TB = jnp.asarray(rng.normal(size=(T, B, 2, 4)), jnp.float32)
    np.testing.assert_allclose(
        ops.time_mean(ops._fold_time(x_TB), T, TUNINGS[tuning]), x_TB.mean(axis=0), rtol=1e-6, atol=1e-6
    )


def test_time_is_folded_batch_major_and_unfolds_back():
    T, B = 3, 4
    x_TB = jnp.asarray(rng.normal(size=(T, B, 2, 5)), jnp.float32)
    folded = ops._fold_time(x_TB)
    for t in range(T):
        for b in range(B):  # example b's steps are rows b * T ... b * T + T - 1
            np.testing.assert_array_equal(folded[b * T + t], x_TB[t, b])
    np.testing.assert_array_equal(ops._unfold_time(folded, T), x_TB)
    np.testing.assert_array_equal(ops._split_time(folded, T), jnp.swapaxes(x_TB, 0, 1))
    np.testing.assert_array_equal(ops._merge_time(ops._split_time(folded, T)), folded)
