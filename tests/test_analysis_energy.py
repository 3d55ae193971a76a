"""Energy analysis: FLOPs by hand (Eq. 9), spike rates against a hand-run LIF layer, the counting rules."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from snnseg_jax import encoding, formulations, models, neurons, ops, steps
from snnseg_jax.analysis import energy

KEY = jax.random.PRNGKey(0)


def init_shapes(model, x):
    return jax.eval_shape(lambda x: model.init({"params": KEY, "spikes": KEY}, x, train=False), x)


def test_flops_of_spiking_deeplab_match_eq9_by_hand():
    # width 1/16: 4, 8, 16 and 64 channels; 16x16 input, pooled to 8 and 4; 5 classes.
    model = models.build("spiking_deeplab", num_classes=5, timesteps=2, width=0.0625)
    variables = init_shapes(model, jnp.zeros((1, 16, 16, 3)))
    expected = {
        "conv1_1": 9 * 16**2 * 3 * 4,
        "conv1_2": 9 * 16**2 * 4 * 4,
        "conv2_1": 9 * 8**2 * 4 * 8,
        "conv2_2": 9 * 8**2 * 8 * 8,
        "conv3_1": 9 * 4**2 * 8 * 16,
        "conv3_2": 9 * 4**2 * 16 * 16,
        "conv3_3": 9 * 4**2 * 16 * 16,
        "fc6": 9 * 4**2 * 16 * 64,
        "fc7": 1 * 4**2 * 64 * 64,
        "output": 1 * 4**2 * 64 * 5,
    }
    assert energy.layer_flops(model, variables, (16, 16, 3)) == expected


def test_flops_of_spiking_fcn_count_transposed_convs_on_their_input_positions():
    model = models.build("spiking_fcn", num_classes=5, timesteps=2, width=0.0625)
    flops = energy.layer_flops(model, init_shapes(model, jnp.zeros((1, 16, 16, 3))), (16, 16, 3))
    assert [layer.name for layer in energy.conv_layers(model)] == list(flops)
    assert flops["fc6"] == 9 * 2**2 * 16 * 64 and flops["fc7"] == 9 * 2**2 * 64 * 64
    assert flops["skip_d"] == 1 * 2**2 * 64 * 5 and flops["skip_a"] == 1 * 16**2 * 4 * 5
    # up0: 2x2 -> 4x4, up1: 4x4 -> 8x8, up2: 8x8 -> 16x16; k^2 taps per input position.
    assert (flops["up0"], flops["up1"], flops["up2"]) == (9 * 2**2 * 5 * 5, 9 * 4**2 * 5 * 5, 9 * 8**2 * 5 * 5)


def hand_run_unit(spikes_in_TB, unit_params, unit_stats, dilation=1):
    """Conv, BNTT with running statistics, LIF: the spikes of a spiking Unit, computed directly."""
    timesteps = spikes_in_TB.shape[0]
    tuning = formulations.for_backend(jax.default_backend())  # as the network computes it
    conv = ops.conv2d(ops._fold_time(spikes_in_TB), unit_params["conv"]["kernel"], dilation, tuning)
    currents = ops._unfold_time(conv, timesteps)
    scale = unit_params["bntt"]["scale"] * jax.lax.rsqrt(unit_stats["bntt"]["var"] + 1e-4)
    shift = -unit_stats["bntt"]["mean"] * scale
    normalized = currents * scale[:, None, None, None] + shift[:, None, None, None]
    spikes, _ = neurons.lif_scan(normalized, leak=0.99, threshold=1.0)
    return spikes


def test_spike_rates_equal_an_independent_count_of_the_layers_spikes(random_variables):
    timesteps, batch = 3, 2
    model = models.build("spiking_deeplab", num_classes=5, timesteps=timesteps, width=0.0625, in_channels=2)
    events = jax.random.uniform(KEY, (batch, timesteps, 16, 16, 2), minval=-0.5, maxval=0.5)
    variables = random_variables(model, events.shape[1:])
    keys = iter(jax.random.split(jax.random.PRNGKey(1), 64))
    draws = {"mean": (-0.5, 0.0), "var": (0.1, 0.5)}  # non-trivial running statistics, lively layers
    stats = jax.tree_util.tree_map_with_path(
        lambda path, v: jax.random.uniform(
            next(keys), v.shape, minval=draws[path[-1].key][0], maxval=draws[path[-1].key][1]
        ),
        variables["batch_stats"],
    )
    state = steps.TrainState(step=0, params=variables["params"], batch_stats=stats, opt_state=None)
    rates = jax.jit(lambda s, b: energy.spike_rate_step(s, b, KEY, model=model))(state, {"inputs": events})

    frames = jnp.swapaxes(events, 0, 1)  # frame t at step t
    spikes1 = hand_run_unit(frames, state.params["conv1_1"], stats["conv1_1"])
    spikes2 = hand_run_unit(spikes1, state.params["conv1_2"], stats["conv1_2"])
    for name, spikes in (("conv1_1", spikes1), ("conv1_2", spikes2)):
        assert 20 < np.sum(spikes) < spikes.size - 20, "the test needs layers that spike, but not always"
        per_image = np.asarray(spikes).sum(axis=0).reshape(batch, -1).mean(axis=1)
        np.testing.assert_allclose(np.asarray(rates[name]), per_image, rtol=1e-6, err_msg=name)
    assert energy.INPUT not in rates  # event frames are analog: no input spike rate
    assert set(rates) == {layer.name for layer in energy.conv_layers(model) if layer.neurons}


def test_poisson_input_rate_is_the_expected_count_of_drawn_input_spikes():
    timesteps = 4
    images = jax.random.uniform(KEY, (2, 16, 16, 3), minval=-1.2, maxval=1.2)
    rate = energy.expected_input_spikes(images, timesteps)
    drawn = encoding.poisson_encode(jax.random.PRNGKey(7), jnp.tile(images, (200, 1, 1, 1)), timesteps)
    counted = np.abs(np.asarray(drawn)).sum(axis=0).reshape(200, 2, -1).mean(axis=(0, 2))
    np.testing.assert_allclose(np.asarray(rate), counted, rtol=0.01)


def test_energy_report_applies_the_mac_and_ac_rules():
    fcn = energy.conv_layers(models.build("spiking_fcn", num_classes=5, timesteps=4))
    flops = {layer.name: 100 * (i + 1) for i, layer in enumerate(fcn)}
    rates = {layer.neurons: 0.1 * (i + 1) for i, layer in enumerate(fcn) if layer.neurons}
    report = energy.energy_report(fcn, flops, {**rates, energy.INPUT: 0.5}, timesteps=4)
    by_name = {e["name"]: e for e in report["layers"]}
    assert not by_name["conv1_1"]["mac"] and by_name["conv1_1"]["input_spike_rate"] == 0.5  # Poisson +-1
    assert by_name["conv2_1"]["input_spike_rate"] == rates["conv1_2"]  # through the pool
    assert by_name["up0"]["mac"] and by_name["up0"]["input_spike_rate"] == 4  # analog skip_d output, dense
    assert by_name["up0"]["output_spike_rate"] == rates["lif_up0"]
    assert by_name["up1"]["input_spike_rate"] == rates["lif_up0"] and not by_name["up1"]["mac"]
    assert by_name["skip_a"]["input_spike_rate"] == rates["conv1_2"] and by_name["skip_a"]["output_spike_rate"] is None
    assert [e["name"] for e in report["layers"] if e["mac"]] == ["up0"]
    events = energy.energy_report(fcn, flops, rates, timesteps=4)  # no INPUT rate: analog frames
    assert events["layers"][0]["mac"] and events["layers"][0]["input_spike_rate"] == 4
    e_ann = sum(flops.values()) * 4.6
    e_snn = sum(e["flops"] * e["input_spike_rate"] * (4.6 if e["mac"] else 0.9) for e in report["layers"])
    assert report["e_ann_pj"] == pytest.approx(e_ann) and report["ratio"] == pytest.approx(e_ann / e_snn)
