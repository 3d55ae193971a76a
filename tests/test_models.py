"""The four networks: shapes, gradients to every parameter, the layer tables (paper Table 1)."""

import functools
import re
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from snnseg_jax import architecture, models

KEY = jax.random.PRNGKey(0)
NAMES = models.MODEL_NAMES


def init_and_loss(model, x, labels):
    variables = jax.jit(lambda x: model.init({"params": KEY, "spikes": KEY}, x, train=False))(x)

    def loss_fn(params):
        logits, _ = model.apply(
            {**variables, "params": params},
            x,
            train=True,
            rngs={"spikes": jax.random.PRNGKey(1)},
            mutable=["batch_stats"],
        )
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), logits

    return variables, loss_fn


@pytest.mark.parametrize("name", NAMES)
# Event inputs' gradients: also through the numeric pins' training paths and the stream tests; slow here.
@pytest.mark.parametrize("kind", ["images", pytest.param("events", marks=pytest.mark.slow)])
def test_every_model_runs_and_every_parameter_gets_gradient(name, kind):
    classes, steps, size = 4, 3, 16
    if kind == "images":
        x = jax.random.uniform(KEY, (2, size, size, 3), minval=-0.5, maxval=0.5)
        model = models.build(name, num_classes=classes, timesteps=steps, width=0.25)
    else:
        x = jax.random.uniform(KEY, (2, steps, size, size, 2), minval=-0.5, maxval=0.5)
        model = models.build(name, num_classes=classes, timesteps=steps, width=0.25, in_channels=2)
    labels = jax.random.randint(KEY, (2, size, size), 0, classes)
    variables, loss_fn = init_and_loss(model, x, labels)
    (loss, logits), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(variables["params"])
    assert logits.shape == (2, size, size, classes)
    assert bool(jnp.all(jnp.isfinite(logits))) and np.isfinite(float(loss))
    zero = [
        jax.tree_util.keystr(path)
        for path, g in jax.tree_util.tree_leaves_with_path(grads)
        if not bool(jnp.any(g != 0))
    ]
    assert not zero, f"parameters without gradient: {zero}"


def kernel_shapes(name, **kwargs):
    model = models.build(name, num_classes=21, timesteps=2, width=1.0, **kwargs)
    x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init({"params": KEY, "spikes": KEY}, x, train=False), x)
    return {
        path[0].key: leaf.shape
        for path, leaf in jax.tree_util.tree_leaves_with_path(variables["params"])
        if path[-1].key == "kernel"
    }


BACKBONE = {
    "conv1_1": (3, 3, 3, 64),
    "conv1_2": (3, 3, 64, 64),
    "conv2_1": (3, 3, 64, 128),
    "conv2_2": (3, 3, 128, 128),
    "conv3_1": (3, 3, 128, 256),
    "conv3_2": (3, 3, 256, 256),
    "conv3_3": (3, 3, 256, 256),
}


@pytest.mark.parametrize("name", ["spiking_deeplab", "deeplab"])
def test_deeplab_kernel_shapes_match_paper_table_1(name):
    assert kernel_shapes(name) == {
        **BACKBONE,
        "fc6": (3, 3, 256, 1024),
        "fc7": (1, 1, 1024, 1024),
        "output": (1, 1, 1024, 21),
    }
    assert kernel_shapes(name, head="released") == {**BACKBONE, "fc6": (3, 3, 256, 1024), "output": (1, 1, 1024, 21)}


@pytest.mark.parametrize("name", ["spiking_fcn", "fcn"])
def test_fcn_kernel_shapes_match_paper_table_1(name):
    assert kernel_shapes(name) == {
        **BACKBONE,
        "fc6": (3, 3, 256, 1024),
        "fc7": (3, 3, 1024, 1024),
        "skip_a": (1, 1, 64, 21),
        "skip_b": (1, 1, 128, 21),
        "skip_c": (1, 1, 256, 21),
        "skip_d": (1, 1, 1024, 21),
        "up0": (3, 3, 21, 21),
        "up1": (3, 3, 21, 21),
        "up2": (3, 3, 21, 21),
    }


def test_dilations_and_xavier_gain2_init():
    model = models.build("spiking_deeplab", num_classes=21, timesteps=1)
    units = [layer for layer in model.architecture.layers if layer.op == architecture.UNIT]
    assert [layer.dilation for layer in units] == [1, 1, 1, 1, 1, 2, 2, 12, 1]
    # Compiled: op by op, drawing the full-width kernels takes several times as long.
    init = jax.jit(lambda x: model.init({"params": KEY, "spikes": KEY}, x, train=False))
    kernel = np.asarray(init(jnp.zeros((1, 16, 16, 3)))["params"]["conv2_2"]["conv"]["kernel"])
    bound = 2.0 * np.sqrt(6.0 / (9 * 128 + 9 * 128))  # gain * sqrt(6 / (fan_in + fan_out))
    assert np.abs(kernel).max() <= bound and np.abs(kernel).max() > 0.95 * bound
    np.testing.assert_allclose(kernel.std(), bound / np.sqrt(3), rtol=0.02)


@pytest.mark.parametrize("shape", [(3, 3, 8, 16), (1, 1, 5, 3), (3, 3, 21, 21)])
def test_xavier_gain2_draws_the_values_of_flax_variance_scaling(shape):
    from snnseg_jax.layers import xavier_gain2

    reference = nn.initializers.variance_scaling(4.0, "fan_avg", "uniform")(KEY, shape)
    np.testing.assert_allclose(xavier_gain2(KEY, shape), reference, rtol=1e-6, atol=0)


def test_spiking_output_is_time_average_of_output_currents():
    """The logits equal the output conv applied per step, averaged over T, then upsampled."""
    from snnseg_jax import ops

    model = models.build("spiking_deeplab", num_classes=3, timesteps=4, width=0.125, head="released")
    x = jax.random.uniform(KEY, (1, 16, 16, 3), minval=-1, maxval=1)
    variables = jax.jit(lambda x: model.init({"params": KEY, "spikes": KEY}, x, train=False))(x)
    logits, sown = jax.jit(
        lambda v, x: model.apply(v, x, train=False, rngs={"spikes": KEY}, mutable=[models.ACTIVITY])
    )(variables, x)
    spikes = models.activity(sown)["fc6"]  # time-major [T, B, 4, 4, 128]
    assert spikes.shape == (4, 1, 4, 4, 128)
    kernel = variables["params"]["output"]["kernel"][0, 0]
    per_step = jnp.einsum("tbhwc,ck->tbhwk", spikes, kernel)
    expected = ops.resize_bilinear(per_step.mean(axis=0), 16, 16)
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("relu_after_ups", [False, True])
def test_ann_fcn_decoder_is_linear(relu_after_ups, random_variables):
    """The ANN FCN's decoder, composed by hand from its own convs on the backbone's ReLU outputs:
    with no ReLU after the transposed convs it is the network; with one it is not."""
    from snnseg_jax import ops

    model = models.build("fcn", num_classes=3, timesteps=1, width=0.125)
    variables = random_variables(model, (16, 16, 3))
    x = jax.random.uniform(KEY, (2, 16, 16, 3), minval=-0.5, maxval=0.5)
    logits, sown = jax.jit(lambda v, x: model.apply(v, x, train=False, mutable=[models.ACTIVITY]))(variables, x)
    features = {name: a[0] for name, a in models.activity(sown).items()}  # one step: [1, B, ...]
    assert set(features) == {layer.name for layer in model.architecture.layers if layer.op == architecture.UNIT}
    conv = lambda name, y: models.class_conv(model.architecture[name], 3, model.settings).apply(
        {"params": variables["params"][name]}, y
    )
    activate = jax.nn.relu if relu_after_ups else (lambda y: y)
    y = activate(conv("up0", conv("skip_d", features["fc7"])) + conv("skip_c", features["conv3_3"]))
    y = activate(conv("up1", y) + conv("skip_b", features["conv2_2"]))
    expected = ops.resize_bilinear(conv("up2", y) + conv("skip_a", features["conv1_2"]), 16, 16)
    matches = np.allclose(logits, expected, rtol=1e-5, atol=1e-5)
    assert matches != relu_after_ups


def test_ann_batchnorm_epsilon_is_bntts(random_variables):
    """With running variance 0 an ANN unit divides by sqrt(epsilon): 1e-4 (BNTT's), not Flax's 1e-5."""
    model = models.build("deeplab", num_classes=3, timesteps=1, width=0.125)
    variables = random_variables(model, (16, 16, 3))
    variables["batch_stats"] = jax.tree.map(jnp.zeros_like, variables["batch_stats"])
    x = jax.random.uniform(KEY, (2, 16, 16, 3), minval=-0.5, maxval=0.5)
    _, sown = jax.jit(lambda v, x: model.apply(v, x, train=False, mutable=[models.ACTIVITY]))(variables, x)
    kernel = variables["params"]["conv1_1"]["conv"]["kernel"]
    conv = jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(
        models.activity(sown)["conv1_1"][0], jax.nn.relu(conv / np.sqrt(1e-4)), rtol=1e-4, atol=1e-4
    )


def test_bad_inputs_give_clear_errors():
    with pytest.raises(ValueError, match="unknown model name 'spiking_unet'"):
        models.build("spiking_unet", num_classes=2)
    fcn = models.build("spiking_fcn", num_classes=2, timesteps=2, width=0.125)
    with pytest.raises(ValueError, match="divisible by 8, got 20x20"):
        fcn.init({"params": KEY, "spikes": KEY}, jnp.zeros((1, 20, 20, 3)), train=False)
    deeplab = models.build("spiking_deeplab", num_classes=2, timesteps=2, width=0.125)
    with pytest.raises(ValueError, match="3 frames but the model has timesteps=2"):
        deeplab.init({"params": KEY, "spikes": KEY}, jnp.zeros((1, 3, 16, 16, 3)), train=False)
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
        deeplab.init({"params": KEY, "spikes": KEY}, jnp.zeros((1, 16, 16, 2)), train=False)


def test_the_library_snippet_of_the_docs_runs_as_written():
    """The first Python block of docs/library.md, executed as it stands (it is sized to run in seconds)."""
    page = (Path(__file__).parents[1] / "docs" / "library.md").read_text()
    snippet = re.search(r"^## Library\n.*?```python\n(.*?)```", page, flags=re.S | re.M).group(1)
    scope = {}
    exec(compile(snippet, "docs/library.md", "exec"), scope)
    images, spikes, currents = scope["images"], scope["spikes"], scope["currents"]
    assert spikes.shape == currents.shape and scope["spikes_0"].shape == currents.shape[1:]
    assert scope["logits"].shape == (*images.shape[:3], 21) and bool(jnp.all(jnp.isfinite(scope["logits"])))


@pytest.mark.parametrize(
    "name,kind,size,remat",
    [
        # 16x16 at fc6: its dilation-12 taps partly in bounds. Slow: tests/test_formulations.py checks each
        # formulation against the plain one in the default run.
        pytest.param("spiking_deeplab", "images", 64, False, marks=pytest.mark.slow),
        pytest.param("spiking_deeplab", "events", 32, True, marks=pytest.mark.slow),
        pytest.param("spiking_fcn", "images", 32, True, marks=pytest.mark.slow),
    ],
)
def test_optimized_network_matches_plain_formulation(name, kind, size, remat):
    """Loss, gradients and BNTT statistics of the fused, tuned network equal the plain port's:
    XLA's ops and autodiff throughout (`fused=False, tuned_ops=False`)."""
    steps, classes = 2, 5
    shape = (2, size, size, 3) if kind == "images" else (2, steps, size, size, 2)
    x = jax.random.uniform(KEY, shape, minval=-0.9, maxval=0.9)
    labels = jax.random.randint(KEY, (2, size, size), 0, classes)
    build = functools.partial(
        models.build, name, num_classes=classes, timesteps=steps, width=0.125, in_channels=shape[-1]
    )

    def loss_grads_stats(model):
        variables, loss_fn = init_and_loss(model, x, labels)

        def with_stats(params):
            logits, updates = model.apply(
                {**variables, "params": params},
                x,
                train=True,
                rngs={"spikes": jax.random.PRNGKey(1)},
                mutable=["batch_stats"],
            )
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), updates

        (loss, updates), grads = jax.jit(jax.value_and_grad(with_stats, has_aux=True))(variables["params"])
        return loss, grads, updates["batch_stats"]

    loss, grads, stats = loss_grads_stats(build(remat=remat))
    ref_loss, ref_grads, ref_stats = loss_grads_stats(build(fused=False, tuned_ops=False))
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
    for (path, got), want in zip(jax.tree_util.tree_leaves_with_path(grads), jax.tree_util.tree_leaves(ref_grads)):
        np.testing.assert_allclose(
            got, want, rtol=1e-4, atol=1e-5 * float(jnp.max(jnp.abs(want))), err_msg=jax.tree_util.keystr(path)
        )
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), stats, ref_stats)
