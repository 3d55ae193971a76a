"""Loss, learning-rate schedule, config checks and the pure train step."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import shapes_deeplab
from snnseg_jax import models, train
from snnseg_jax.cli import UserError


def test_cross_entropy_averages_over_valid_pixels_only():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 3, 4)).astype(np.float32)
    labels = rng.integers(0, 4, (2, 3, 3))
    labels[0, 0, 0], labels[1, 2, 1], labels[1, 0, 2] = 255, 4, 255
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    valid = labels < 4
    expected = -np.mean([log_probs[i, y, x, labels[i, y, x]] for i, y, x in zip(*np.nonzero(valid))])
    assert float(train.cross_entropy(jnp.array(logits), jnp.array(labels))) == pytest.approx(expected, rel=1e-5)


def test_learning_rate_drops_by_the_factor_after_the_decay_point():
    config = shapes_deeplab.get_config()
    config.learning_rate, config.lr_decay_at, config.lr_decay_factor = 0.01, 0.5, 0.1
    schedule = train.learning_rate_schedule(config, 100)
    assert [float(schedule(s)) for s in (0, 49, 50, 99)] == pytest.approx([0.01, 0.01, 0.001, 0.001])


def test_check_config_lists_every_bad_value():
    config = shapes_deeplab.get_config()
    config.batch_size, config.lr_decay_at = 0, 1.5
    config.model.name, config.dataset.image_size = "spiking_fcn", 36
    with pytest.raises(UserError) as error:
        train.check_config(config)
    message = str(error.value)
    for part in ("batch_size must be positive", "lr_decay_at", "divisible by 8, got 36"):
        assert part in message


def test_train_step_is_deterministic_and_draws_new_spikes_each_step():
    model = models.build("spiking_deeplab", num_classes=3, timesteps=2, width=0.0625)
    config = shapes_deeplab.get_config()
    optimizer = train.make_optimizer(config, 10)
    state = train.init_state(model, optimizer, (8, 8, 3), jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    batch = {"inputs": jnp.array(rng.uniform(-0.5, 0.5, (2, 8, 8, 3)), jnp.float32),
             "labels": jnp.array(rng.integers(0, 3, (2, 8, 8)), jnp.uint8)}
    step = jax.jit(functools.partial(train.train_step, model=model, optimizer=optimizer))
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
