"""The spike budget in the loss (`sparsity`): the energy cost by hand (Eqs. 8-12), its gradient through
the fused layer, its direction, the rate cost, and lambda = 0 exactly as the plain cross-entropy."""

import dataclasses
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from snnseg_jax import models, sparsity, steps, training_log

KEY = jax.random.PRNGKey(3)
TIMESTEPS, SIDE = 2, 8
LAMBDA = 5.0  # large enough that a few steps on one batch show its effect


def tiny(fused=True):
    return models.build("spiking_deeplab", num_classes=5, timesteps=TIMESTEPS, width=0.0625, fused=fused)


@functools.cache
def batch_and_state():
    rng = np.random.default_rng(0)
    batch = {
        "inputs": rng.uniform(-1, 1, (2, SIDE, SIDE, 3)).astype(np.float32),
        "labels": rng.integers(0, 5, (2, SIDE, SIDE)).astype(np.uint8),
    }
    model, optimizer = tiny(), optax.adam(2e-2)
    variables = jax.jit(lambda x: model.init({"params": KEY, "spikes": KEY}, x, train=False))(batch["inputs"][:1])
    params = variables["params"]
    return batch, steps.TrainState(jnp.array(0), params, variables["batch_stats"], optimizer.init(params)), optimizer


@functools.cache
def compiled_step(budget):
    _, _, optimizer = batch_and_state()
    return jax.jit(functools.partial(steps.train_step, model=tiny(), optimizer=optimizer, budget=budget))


def sown(model, state, batch, params=None):
    """The training forward pass's logits and spikes `{layer: [T, B, ...]}` of the step's key."""
    logits, updates = model.apply(
        {"params": state.params if params is None else params, "batch_stats": state.batch_stats},
        batch["inputs"],
        train=True,
        rngs={"spikes": jax.random.fold_in(KEY, state.step)},
        mutable=["batch_stats", models.ACTIVITY],
    )
    return logits, models.activity(updates)


def energy_by_hand(spikes, images):
    """E_SNN / E_ANN (Eqs. 8-12) of the width-1/16 DeepLab (4, 8, 16, 64 channels) on 8x8 images, FLOPs
    written out."""
    flops = {  # k^2 * positions * C_in * C_out, by (conv, the layer it reads)
        ("conv1_1", "input"): 9 * 64 * 3 * 4,
        ("conv1_2", "conv1_1"): 9 * 64 * 4 * 4,
        ("conv2_1", "conv1_2"): 9 * 16 * 4 * 8,  # through the pool: 8x8 -> 4x4
        ("conv2_2", "conv2_1"): 9 * 16 * 8 * 8,
        ("conv3_1", "conv2_2"): 9 * 4 * 8 * 16,  # 2x2
        ("conv3_2", "conv3_1"): 9 * 4 * 16 * 16,
        ("conv3_3", "conv3_2"): 9 * 4 * 16 * 16,
        ("fc6", "conv3_3"): 9 * 4 * 16 * 64,
        ("fc7", "fc6"): 1 * 4 * 64 * 64,
        ("output", "fc7"): 1 * 4 * 64 * 5,
    }
    # Eq. 8: spikes over the T steps per neuron, averaged over the batch; the input's expected spikes.
    rates = {name: float(np.asarray(s, np.float64).sum() / np.prod(s.shape[1:])) for name, s in spikes.items()}
    rates["input"] = TIMESTEPS * float(np.minimum(np.abs(np.asarray(images, np.float64)), 1).mean())
    e_ann = 4.6 * sum(flops.values())
    e_snn = 0.9 * sum(f * rates[source] for (_, source), f in flops.items())
    return e_snn / e_ann


def test_the_energy_cost_is_e_snn_over_e_ann_of_the_batch_by_hand_and_enters_the_loss_times_lambda():
    batch, state, optimizer = batch_and_state()
    model = tiny()
    logits, spikes = jax.jit(lambda: sown(model, state, batch))()
    expected = energy_by_hand(jax.device_get(spikes), batch["inputs"])
    cross_entropy = float(steps.cross_entropy(logits, batch["labels"].astype(jnp.int32)))

    _, plain = compiled_step(sparsity.NO_BUDGET)(state, batch, KEY)
    _, penalized = compiled_step(sparsity.SpikeBudget(LAMBDA))(state, batch, KEY)
    assert float(plain["loss"]) == pytest.approx(cross_entropy, rel=1e-6)
    assert float(penalized["loss"]) == pytest.approx(cross_entropy + LAMBDA * expected, rel=1e-5)
    assert float(penalized[sparsity.PENALTY]) == pytest.approx(expected, rel=1e-5)
    assert float(plain["energy_ratio"]) == pytest.approx(1 / expected, rel=1e-5)
    counts = {name: float(np.asarray(s).sum() / np.prod(s.shape[1:])) for name, s in jax.device_get(spikes).items()}
    assert float(plain["spikes_per_neuron"]) == pytest.approx(np.mean(list(counts.values())), rel=1e-5)
    assert float(plain["spikes_per_neuron/fc6"]) == pytest.approx(counts["fc6"], rel=1e-5)


def test_a_warm_up_raises_lambda_linearly_from_zero_over_its_steps():
    batch, state, _ = batch_and_state()
    model, budget = tiny(), sparsity.SpikeBudget(LAMBDA, warmup_steps=4)
    forward = jax.jit(lambda at: sown(model, at, batch))
    for step, weight in ((0, 0.0), (1, LAMBDA / 4), (4, LAMBDA), (9, LAMBDA)):
        at = state.replace(step=jnp.array(step))
        logits, spikes = forward(at)
        cross_entropy = float(steps.cross_entropy(logits, batch["labels"].astype(jnp.int32)))
        _, metrics = compiled_step(budget)(at, batch, KEY)
        expected = energy_by_hand(jax.device_get(spikes), batch["inputs"])
        assert float(metrics[sparsity.PENALTY_WEIGHT]) == pytest.approx(weight)
        assert float(metrics["loss"]) == pytest.approx(cross_entropy + weight * expected, rel=1e-5)
    _, without_warm_up = compiled_step(sparsity.SpikeBudget(LAMBDA))(state, batch, KEY)
    assert sparsity.PENALTY_WEIGHT not in without_warm_up


def test_the_rate_cost_is_the_mean_squared_excess_over_the_target_per_step():
    rates = {"a": jnp.float32(0.8), "b": jnp.float32(0.2)}  # spikes per neuron over 4 steps: 0.2, 0.05 per step
    assert float(sparsity.rate_cost(rates, 4, 0.1)) == pytest.approx(((0.2 - 0.1) ** 2 + 0) / 2)
    assert float(sparsity.rate_cost(rates, 4, 0.25)) == 0.0


def test_the_fused_layer_passes_the_penalty_gradient_as_the_plain_composition_does():
    batch, state, _ = batch_and_state()
    budget = sparsity.SpikeBudget(1.0)

    def penalty_grad(model):
        def term(params):
            _, spikes = sown(model, state, batch, params)
            variables = {"params": params, "batch_stats": state.batch_stats}
            return sparsity.spike_term(model, variables, batch["inputs"], spikes, budget, state.step)[0]

        return jax.jit(jax.grad(term))(state.params)

    fused, plain = penalty_grad(tiny(fused=True)), penalty_grad(tiny(fused=False))
    assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(fused))
    for a, b in zip(jax.tree.leaves(fused), jax.tree.leaves(plain)):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6)


def test_a_larger_lambda_trains_to_fewer_spikes_on_a_fixed_batch():
    batch, state, _ = batch_and_state()

    def after_steps(budget, count=6):
        current = state
        for _ in range(count):
            current, metrics = compiled_step(budget)(current, batch, KEY)
        return float(metrics["energy_ratio"]), float(metrics["spikes_per_neuron"])

    (plain_ratio, plain_spikes), (ratio, spikes) = (
        after_steps(sparsity.NO_BUDGET),
        after_steps(sparsity.SpikeBudget(LAMBDA)),
    )
    assert ratio > plain_ratio and spikes < plain_spikes


def test_lambda_zero_trains_exactly_as_the_plain_cross_entropy():
    batch, state, optimizer = batch_and_state()
    model = tiny()

    def reference(state):  # the train step without any spike term
        def loss_fn(params):
            logits, updates = model.apply(
                {"params": params, "batch_stats": state.batch_stats},
                batch["inputs"],
                train=True,
                rngs={"spikes": jax.random.fold_in(KEY, state.step)},
                mutable=["batch_stats"],
            )
            return steps.cross_entropy(logits, batch["labels"].astype(jnp.int32)), updates["batch_stats"]

        (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        return steps.TrainState(state.step + 1, optax.apply_updates(state.params, updates), stats, opt_state), loss

    new, metrics = compiled_step(sparsity.NO_BUDGET)(state, batch, KEY)
    expected, loss = jax.jit(reference)(state)
    assert float(metrics["loss"]) == float(loss)
    for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(expected)):
        np.testing.assert_array_equal(a, b)


def test_an_ann_step_reports_no_spikes_and_refuses_a_budget():
    ann = models.build("deeplab", num_classes=5, timesteps=TIMESTEPS, width=0.0625)
    batch, _, optimizer = batch_and_state()
    variables = jax.jit(lambda x: ann.init({"params": KEY}, x, train=False))(batch["inputs"][:1])
    params = variables["params"]
    state = steps.TrainState(jnp.array(0), params, variables["batch_stats"], optimizer.init(params))
    step = functools.partial(steps.train_step, model=ann, optimizer=optimizer)
    assert set(jax.eval_shape(lambda s: step(s, batch, KEY), state)[1]) == {"loss", "finite"}
    with pytest.raises(ValueError, match="spiking network"):
        jax.eval_shape(lambda s: step(s, batch, KEY, budget=sparsity.SpikeBudget(1.0)), state)


def test_the_log_window_averages_the_spike_statistics_and_survives_a_checkpoint_as_json():
    window = training_log.LogWindow()
    window.add([(1, 2.0, True, {"energy_ratio": 1.0, "spikes_per_neuron": 3.0})], skip_nonfinite=True)
    window.add([(2, float("nan"), False, {"energy_ratio": 9.0, "spikes_per_neuron": 9.0})], skip_nonfinite=True)
    resumed = training_log.LogWindow(**json.loads(json.dumps(dataclasses.asdict(window))))
    resumed.add([(3, 1.0, True, {"energy_ratio": 2.0, "spikes_per_neuron": 0.1})], skip_nonfinite=True)
    record = resumed.record(3, 0.1, 1.0)
    assert record["energy_ratio"] == 1.5 and record["spikes_per_neuron"] == pytest.approx(1.55)
    assert record["skipped_steps"] == 1 and record["loss"] == 1.5
    assert "energy_ratio" not in training_log.LogWindow(losses=[1.0]).record(1, 0.1, 1.0)  # an ANN's line
