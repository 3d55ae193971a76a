"""Array ops against direct numpy definitions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from snnseg_jax import ops

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
            patch = xp[:, i * dilation:i * dilation + h, j * dilation:j * dilation + wd]
            out += patch @ w[i, j]
    return out


@pytest.mark.parametrize("dilation,kernel", [(1, 3), (2, 3), (12, 3), (1, 1)])
def test_conv2d_matches_direct_taps(dilation, kernel):
    x = rng.normal(size=(2, 9, 7, 3))
    w = rng.normal(size=(kernel, kernel, 3, 4))
    got = ops.conv2d(jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32), dilation)
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


@pytest.mark.parametrize("size", [8, 7, 1])
def test_avg_pool_counts_padding(size):
    x = rng.normal(size=(2, size, size, 3))
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = ops.pooled_size(size)
    ref = np.zeros((2, out, out, 3))
    for i in range(out):
        for j in range(out):
            ref[:, i, j] = xp[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3].sum(axis=(1, 2)) / 9.0
    np.testing.assert_allclose(np.asarray(ops.avg_pool(jnp.asarray(x, jnp.float32))), ref, rtol=1e-5, atol=1e-6)


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


@pytest.mark.parametrize("size,dilation,channels", [((16, 16), 12, (3, 5)), ((16, 16), 12, (6, 2)),
                                                    ((9, 7), 4, (3, 4)), ((5, 5), 6, (2, 3))])
def test_in_bounds_conv_matches_xla_conv_and_its_gradients(size, dilation, channels):
    assert ops.in_bounds_fraction(size, (3, 3), dilation) < 0.5
    x = jnp.asarray(rng.normal(size=(2, *size, channels[0])), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, *channels)), jnp.float32)
    g = jnp.asarray(rng.normal(size=(2, *size, channels[1])), jnp.float32)
    got, got_vjp = jax.vjp(lambda x, w: ops.conv2d_in_bounds(x, w, dilation), x, w)
    want, want_vjp = jax.vjp(lambda x, w: ops.conv2d_xla(x, w, dilation), x, w)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    for a, b in zip(got_vjp(g), want_vjp(g)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("dilation", [1, 2])
def test_forward_input_grad_conv_matches_xla_gradients(dilation):
    x = jnp.asarray(rng.normal(size=(2, 7, 6, 3)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, 3, 4)), jnp.float32)
    g = jnp.asarray(rng.normal(size=(2, 7, 6, 4)), jnp.float32)
    got = jax.vjp(lambda x, w: ops.conv2d_forward_input_grad(x, w, dilation), x, w)[1](g)
    want = jax.vjp(lambda x, w: ops.conv2d_xla(x, w, dilation), x, w)[1](g)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [(8, 8), (7, 6), (1, 3)])
def test_avg_pool_gradient_matches_reduce_window_autodiff(size):
    x = jnp.asarray(rng.normal(size=(2, *size, 3)), jnp.float32)
    g = jnp.asarray(rng.normal(size=ops.avg_pool(x).shape), jnp.float32)

    def plain(x):
        return jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 3, 3, 1), (1, 2, 2, 1), ((0, 0), (1, 1), (1, 1), (0, 0))) / 9.0

    np.testing.assert_allclose(jax.vjp(ops.avg_pool, x)[1](g)[0], jax.vjp(plain, x)[1](g)[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("length", [1, 2, 5, 20])
def test_sum_by_halves_and_its_gradient(length, axis):
    shape = [3, 2]
    shape.insert(axis, length)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    np.testing.assert_allclose(ops.sum_by_halves(x, axis), x.sum(axis=axis), rtol=1e-5, atol=1e-6)
    g = jnp.asarray(rng.normal(size=(3, 2)), jnp.float32)
    np.testing.assert_array_equal(jax.vjp(lambda x: ops.sum_by_halves(x, axis), x)[1](g)[0],
                                  jnp.broadcast_to(jnp.expand_dims(g, axis), x.shape))


def test_time_is_folded_batch_major_and_unfolds_back():
    T, B = 3, 4
    x_TB = jnp.asarray(rng.normal(size=(T, B, 2, 5)), jnp.float32)
    folded = ops.fold_time(x_TB)
    for t in range(T):
        for b in range(B):  # example b's steps are rows b * T ... b * T + T - 1
            np.testing.assert_array_equal(folded[b * T + t], x_TB[t, b])
    np.testing.assert_array_equal(ops.unfold_time(folded, T), x_TB)
    np.testing.assert_array_equal(ops.split_time(folded, T), jnp.swapaxes(x_TB, 0, 1))
    np.testing.assert_array_equal(ops.merge_time(ops.split_time(folded, T)), folded)
