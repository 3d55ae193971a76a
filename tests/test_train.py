"""Loss, learning-rate schedule, config checks, the pure train step, non-finite steps, metrics.jsonl."""

import functools
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import shapes_deeplab
from snnseg_jax import data, experiment, models, optimization, steps, training_log
from snnseg_jax import train as train_lib
from snnseg_jax.cli import UserError


def test_cross_entropy_averages_over_valid_pixels_only():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 3, 4)).astype(np.float32)
    labels = rng.integers(0, 4, (2, 3, 3))
    labels[0, 0, 0], labels[1, 2, 1], labels[1, 0, 2] = 255, 4, 255
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    valid = labels < 4
    expected = -np.mean([log_probs[i, y, x, labels[i, y, x]] for i, y, x in zip(*np.nonzero(valid))])
    assert float(steps.cross_entropy(jnp.array(logits), jnp.array(labels))) == pytest.approx(expected, rel=1e-5)


def test_learning_rate_drops_by_the_factor_after_the_decay_point():
    config = shapes_deeplab.get_config()
    config.learning_rate, config.lr_decay_at, config.lr_decay_factor = 0.01, 0.5, 0.1
    schedule = optimization.learning_rate_schedule(config, 100)
    assert [float(schedule(s)) for s in (0, 49, 50, 99)] == pytest.approx([0.01, 0.01, 0.001, 0.001])


@pytest.mark.parametrize("scope", ["kernels", "all"])
def test_weight_decay_is_l2_added_to_the_gradient_before_adam(scope):
    """Two steps of the optimizer against Adam computed by hand on gradient + weight_decay * params
    (PyTorch's `Adam(weight_decay=...)`): on the kernels only, or on every leaf (BNTT scales, biases)."""
    config = shapes_deeplab.get_config()
    config.learning_rate, config.weight_decay, config.weight_decay_scope = 0.01, 0.05, scope
    rng = np.random.default_rng(0)
    params = {
        "conv": {"kernel": rng.normal(size=(3, 3, 2, 4))},
        "bntt": {"scale": 1 + 0.1 * rng.normal(size=(2, 4))},
        "output": {"bias": rng.normal(size=(4,))},
    }
    params = jax.tree.map(lambda x: x.astype(np.float32), params)
    grads = [jax.tree.map(lambda x: rng.normal(size=x.shape).astype(np.float32), params) for _ in range(2)]
    optimizer = optimization.make_optimizer(config, steps=100)
    opt_state, got = optimizer.init(params), params
    for g in grads:
        updates, opt_state = optimizer.update(g, opt_state, got)
        got = jax.tree.map(lambda p, u: p + u, got, updates)

    b1, b2, eps = 0.9, 0.999, 1e-8
    for path in (("conv", "kernel"), ("bntt", "scale"), ("output", "bias")):
        decay = config.weight_decay if scope == "all" or path[1] == "kernel" else 0.0
        p, m, v = params[path[0]][path[1]].astype(np.float64), 0.0, 0.0
        for t, g in enumerate(grads, start=1):
            g = g[path[0]][path[1]] + decay * p
            m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g**2
            p = p - config.learning_rate * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
        np.testing.assert_allclose(got[path[0]][path[1]], p, rtol=1e-5, atol=1e-6, err_msg=str(path))


def test_optimizer_state_is_plain_adams_whatever_the_decay_settings():
    """A checkpoint saved under one weight-decay setting, or before there was one, restores under another."""
    params = {"conv": {"kernel": np.ones((3, 3, 2, 4), np.float32)}, "bntt": {"scale": np.ones((2, 4), np.float32)}}
    for decay, scope in ((0.0, "kernels"), (5e-4, "kernels"), (5e-4, "all")):
        config = shapes_deeplab.get_config()
        config.weight_decay, config.weight_decay_scope = decay, scope
        adam = jax.tree.structure(optax.adam(optimization.learning_rate_schedule(config, 10)).init(params))
        assert jax.tree.structure(optimization.make_optimizer(config, 10).init(params)) == adam


def test_check_config_lists_every_bad_value():
    config = shapes_deeplab.get_config()
    config.batch_size, config.lr_decay_at = 0, 1.5
    config.model.name, config.dataset.image_size = "spiking_fcn", 36
    with pytest.raises(UserError) as error:
        experiment.check_config(config)
    message = str(error.value)
    for part in (
        "batch_size must be a positive integer, got 0",
        "lr_decay_at must be a number in [0, 1], got 1.5",
        "divisible by 8, got 36",
    ):
        assert part in message


def test_train_step_is_deterministic_and_draws_new_spikes_each_step():
    model = models.build("spiking_deeplab", num_classes=3, timesteps=2, width=0.0625)
    config = shapes_deeplab.get_config()
    optimizer = optimization.make_optimizer(config, 10)
    state = jax.jit(functools.partial(experiment.init_state, model, optimizer, (8, 8, 3), jax.random.PRNGKey(0)))()
    rng = np.random.default_rng(0)
    batch = {
        "inputs": jnp.array(rng.uniform(-0.5, 0.5, (2, 8, 8, 3)), jnp.float32),
        "labels": jnp.array(rng.integers(0, 3, (2, 8, 8)), jnp.uint8),
    }
    step = jax.jit(functools.partial(steps.train_step, model=model, optimizer=optimizer))
    key = jax.random.PRNGKey(1)
    a, metrics_a = step(state, batch, key)
    b, metrics_b = step(state, batch, key)
    assert int(a.step) == 1
    assert jax.tree.all(jax.tree.map(lambda x, y: bool(jnp.array_equal(x, y)), a, b))
    assert float(metrics_a["loss"]) == float(metrics_b["loss"])
    # The same state at another step number draws other Poisson spikes, so another loss.
    _, metrics_c = step(state.replace(step=jnp.array(5, jnp.int32)), batch, key)
    assert float(metrics_c["loss"]) != float(metrics_a["loss"])
    changed = jax.tree.map(lambda x, y: bool(jnp.any(x != y)), state.params, a.params)
    assert all(jax.tree.leaves(changed))


class TinyNet(nn.Module):
    """A 1x1 convolution and BatchNorm: a network that compiles in a moment."""

    @nn.compact
    def __call__(self, x, train):
        return nn.BatchNorm(use_running_average=not train)(nn.Conv(3, (1, 1))(x))


def test_a_nonfinite_step_is_flagged_and_with_skipping_leaves_the_state_unchanged():
    model, optimizer = TinyNet(), optimization.make_optimizer(shapes_deeplab.get_config(), 10)
    state = jax.jit(functools.partial(experiment.init_state, model, optimizer, (4, 4, 2), jax.random.PRNGKey(0)))()
    rng = np.random.default_rng(0)
    good = {
        "inputs": jnp.array(rng.normal(size=(2, 4, 4, 2)), jnp.float32),
        "labels": jnp.array(rng.integers(0, 3, (2, 4, 4)), jnp.uint8),
    }
    bad = {**good, "inputs": good["inputs"].at[0, 0, 0, 0].set(jnp.nan)}
    runs = {}
    for skip_nonfinite in (False, True):
        step = jax.jit(
            functools.partial(steps.train_step, model=model, optimizer=optimizer, skip_nonfinite=skip_nonfinite)
        )
        after_good, metrics_good = step(state, good, jax.random.PRNGKey(1))
        after_bad, metrics_bad = step(after_good, bad, jax.random.PRNGKey(1))
        assert bool(metrics_good["finite"]) and not bool(metrics_bad["finite"])
        assert int(after_bad.step) == 2
        runs[skip_nonfinite] = after_good, after_bad
    same = lambda a, b: all(jax.tree.leaves(jax.tree.map(lambda x, y: bool(jnp.array_equal(x, y)), a, b)))
    assert same(runs[False][0], runs[True][0])  # skipping changes nothing about a finite step
    assert same(runs[True][0].replace(step=0), runs[True][1].replace(step=0))  # and skips the other
    assert not all(jax.tree.leaves(jax.tree.map(lambda x: bool(jnp.all(jnp.isfinite(x))), runs[False][1])))


def test_log_window_averages_the_applied_steps_and_counts_the_skipped():
    window = training_log.LogWindow(losses=[1.0])
    assert window.add([(2, 2.0, True), (3, float("nan"), False), (4, 3.0, True)], skip_nonfinite=True) is None
    assert window.record(4, 0.1, 5.0) == {
        "step": 4,
        "loss": 2.0,
        "learning_rate": 0.1,
        "images_per_sec": 5.0,
        "skipped_steps": 1,
    }
    assert training_log.LogWindow().add([(5, 1.0, True), (6, 7.5, False), (7, 1.0, False)], False) == (6, 7.5)
    assert training_log.LogWindow(skipped=3).record(9, 0.1, 1.0)["loss"] is None


def write_lines(path, text):
    path.write_text(text)
    return str(path.parent)


def test_drop_metrics_after_keeps_earlier_lines_and_drops_a_torn_last_line(tmp_path):
    lines = [json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in (2, 4, 4, 6)]
    workdir = write_lines(tmp_path / "metrics.jsonl", "".join(lines) + '{"step": 8, "lo')
    training_log.drop_metrics_after(workdir, 4)
    assert (tmp_path / "metrics.jsonl").read_text() == "".join(lines[:3])
    training_log.drop_metrics_after(workdir, 0)
    assert (tmp_path / "metrics.jsonl").read_text() == ""


def test_drop_metrics_after_refuses_a_damaged_line_before_the_end(tmp_path):
    text = '{"step": 2, "loss": 1.0}\n{"step": 4, "lo\n{"step": 6, "loss": 1.0}\n'
    workdir = write_lines(tmp_path / "metrics.jsonl", text)
    with pytest.raises(UserError, match="line 2 of .*metrics.jsonl is not a metrics record"):
        training_log.drop_metrics_after(workdir, 2)
    assert (tmp_path / "metrics.jsonl").read_text() == text


def test_every_field_of_the_shipped_configs_has_a_rule_and_keeps_it():
    import importlib
    import pathlib

    from snnseg_jax import config_rules

    names = [p.stem for p in pathlib.Path(shapes_deeplab.__file__).parent.glob("*.py") if p.stem != "__init__"]
    assert len(names) >= 9
    for name in names:
        config = importlib.import_module(f"configs.{name}").get_config()
        assert [f for f in config_rules.flatten(config) if config_rules.rule_for(f) is None] == [], name
        assert config_rules.problems(config) == {}, name


def test_a_nonfinite_step_on_nonfinite_inputs_blames_the_inputs_not_the_learning_rate(monkeypatch, tmp_path):
    """Datasets reject non-finite files when they read them; should one reach a step anyway, the error
    says the input is at fault (and how many values), not the learning rate. (The ANN: a spiking
    network's rate coding turns a NaN pixel into no spike, a silent error the datasets' check stops.)"""
    config = shapes_deeplab.get_config()
    config.update_from_flattened_dict(
        {"model.name": "deeplab", "dataset.image_size": 16, "model.width": 0.0625, "model.timesteps": 2,
         "dataset.synthetic_sizes.train": 8,
         "dataset.synthetic_sizes.val": 8, "batch_size": 8, "eval_batch_size": 8, "num_train_steps": 3,
         "log_every_steps": 1, "eval_every_steps": 0, "checkpoint_every_steps": 100}
    )  # fmt: skip
    load_split = experiment.load_split

    def damaged(config, split):
        dataset = load_split(config, split)
        if split != config.dataset.train_split:
            return dataset
        inputs, labels = dataset.read(np.arange(len(dataset)))
        inputs[:, 0, 0, 0] = np.nan  # one bad value per image: every batch holds 8
        return data.ArrayDataset(inputs, labels, dataset.class_names)

    monkeypatch.setattr(experiment, "load_split", damaged)
    with pytest.raises(UserError) as error:
        train_lib.train_and_evaluate(config, str(tmp_path))
    message = str(error.value)
    assert "step 1 gave a non-finite" in message and "held 8 non-finite input values" in message
    assert "not the learning rate" in message and "Lower learning_rate" not in message
