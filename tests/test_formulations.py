"""Each faster formulation against the plain op it replaces: values and gradients."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from snnseg_jax import formulations

rng = np.random.default_rng(1)


@pytest.mark.parametrize(
    "size,dilation,channels", [((16, 16), 12, (3, 5)), ((16, 16), 12, (6, 2)), ((9, 7), 4, (3, 4)), ((5, 5), 6, (2, 3))]
)
def test_in_bounds_conv_matches_xla_conv_and_its_gradients(size, dilation, channels):
    assert formulations.in_bounds_fraction(size, (3, 3), dilation) < 0.5
    x = jnp.asarray(rng.normal(size=(2, *size, channels[0])), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, *channels)), jnp.float32)
    g = jnp.asarray(rng.normal(size=(2, *size, channels[1])), jnp.float32)
    got, got_vjp = jax.vjp(lambda x, w: formulations.conv2d_in_bounds(x, w, dilation), x, w)
    want, want_vjp = jax.vjp(lambda x, w: formulations.conv2d_xla(x, w, dilation), x, w)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    for a, b in zip(got_vjp(g), want_vjp(g)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("dilation", [1, 2])
def test_forward_input_grad_conv_matches_xla_gradients(dilation):
    x = jnp.asarray(rng.normal(size=(2, 7, 6, 3)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, 3, 4)), jnp.float32)
    g = jnp.asarray(rng.normal(size=(2, 7, 6, 4)), jnp.float32)
    got = jax.vjp(lambda x, w: formulations.conv2d_forward_input_grad(x, w, dilation), x, w)[1](g)
    want = jax.vjp(lambda x, w: formulations.conv2d_xla(x, w, dilation), x, w)[1](g)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [(8, 8), (7, 6), (1, 3)])
def test_avg_pool_gradient_matches_reduce_window_autodiff(size):
    x = jnp.asarray(rng.normal(size=(2, *size, 3)), jnp.float32)
    g = jnp.asarray(rng.normal(size=formulations.avg_pool_interleaved(x).shape), jnp.float32)

    def plain(x):
        return (
            jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 3, 3, 1), (1, 2, 2, 1), ((0, 0), (1, 1), (1, 1), (0, 0)))
            / 9.0
        )

    np.testing.assert_allclose(
        jax.vjp(formulations.avg_pool_interleaved, x)[1](g)[0], jax.vjp(plain, x)[1](g)[0], rtol=1e-6, atol=1e-6
    )


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("length", [1, 2, 5, 20])
def test_sum_by_halves_and_its_gradient(length, axis):
    shape = [3, 2]
    shape.insert(axis, length)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    np.testing.assert_allclose(formulations.sum_by_halves(x, axis), x.sum(axis=axis), rtol=1e-5, atol=1e-6)
    g = jnp.asarray(rng.normal(size=(3, 2)), jnp.float32)
    np.testing.assert_array_equal(
        jax.vjp(lambda x: formulations.sum_by_halves(x, axis), x)[1](g)[0],
        jnp.broadcast_to(jnp.expand_dims(g, axis), x.shape),
    )


def test_each_backends_formulations_compute_the_plain_values():
    """`tuned_ops=False` (config `model.tuned_ops`) gives XLA's plain ops; the formulations of CPU and
    of GPU / TPU (forced here, on CPU) give the same loss and gradients.

    An ANN DeepLab on 64x64: its dilation-12 layer on the 16x16 map takes the in-bounds formulation
    with the CPU's, XLA's dilated convolution with the GPU's; its 1x1 layers the matrix product, its
    pools the interleaved backward.
    """
    import dataclasses

    from snnseg_jax import models

    x = jax.random.uniform(jax.random.PRNGKey(0), (2, 64, 64, 3), minval=-1, maxval=1)
    labels = jax.random.randint(jax.random.PRNGKey(1), (2, 64, 64), 0, 3)

    def loss_and_grads(tuning):
        model = models.build("deeplab", num_classes=3, width=0.0625, tuned_ops=tuning is not None)
        if tuning is not None:
            model = model.clone(settings=dataclasses.replace(model.settings, tuning=tuning))
        variables = jax.jit(lambda x: model.init({"params": jax.random.PRNGKey(2)}, x, train=False))(x[:1])
        fc6_as_dilated_conv = "rhs_dilation=(12, 12)" in str(
            jax.make_jaxpr(lambda x: model.apply(variables, x, train=False))(x)
        )

        def loss(params):
            logits, _ = model.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"])
            return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[..., None], axis=-1))

        return model.settings.tuning, fc6_as_dilated_conv, jax.jit(jax.value_and_grad(loss))(variables["params"])

    assert models.build("deeplab", 3).settings.tuning == formulations.for_backend(jax.default_backend())
    plain, dilated, (ref_loss, ref_grads) = loss_and_grads(None)
    assert plain == formulations.PLAIN and plain.compiler_options() == {} and dilated
    for backend, fc6_dilated in (("cpu", False), ("gpu", True)):
        tuning, dilated, (loss, grads) = loss_and_grads(formulations.for_backend(backend))
        assert dilated == fc6_dilated, backend
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-6, err_msg=backend)
        for got, want in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(ref_grads)):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * float(jnp.max(jnp.abs(want))), err_msg=backend)


def test_every_formulation_has_its_measurement():
    """The committed ablation (docs/results/performance.json) times each CPU formulation switched off."""
    import dataclasses
    import json

    from conftest import REPO

    performance = json.loads((REPO / "docs" / "results" / "performance.json").read_text())
    rows = {row["variant"]: row for row in performance["runs"]["ablation"]}
    cpu = formulations.for_backend("cpu")
    in_use = [field.name for field in dataclasses.fields(cpu) if getattr(cpu, field.name)]
    assert set(rows) == {"all", "none", *(f"without {name}" for name in in_use)}
    assert all(row["jax"] and row["ratio_best"] > 0 and row["memory_ratio"] > 0 for row in rows.values())


def test_the_tests_compute_matrix_products_at_full_float32_precision():
    """conftest.py pins it, so that tolerances of 1e-6 hold on GPUs (TF32) and TPUs (bfloat16 passes) too."""
    assert jax.config.jax_default_matmul_precision == "highest"
    a = jnp.asarray(rng.normal(size=(8, 8)), jnp.float32)
    assert "precision=(Precision.HIGHEST, Precision.HIGHEST)" in str(jax.make_jaxpr(jnp.dot)(a, a))


def test_entry_points_ask_xla_for_deterministic_gpu_kernels_unless_told_otherwise(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=0")
    assert formulations.deterministic_gpu_ops()
    assert formulations.deterministic_gpu_ops() is False  # once
    assert os.environ["XLA_FLAGS"] == "--xla_backend_optimization_level=0 --xla_gpu_deterministic_ops=true"
    monkeypatch.setenv("XLA_FLAGS", "--xla_gpu_deterministic_ops=false")  # the user's choice stands
    assert not formulations.deterministic_gpu_ops() and os.environ["XLA_FLAGS"] == "--xla_gpu_deterministic_ops=false"
