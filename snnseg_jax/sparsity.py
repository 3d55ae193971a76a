"""A spike budget in the loss, and the spike statistics of a training batch.

The training loss of a spiking network is `cross-entropy + penalty * cost` (`SpikeBudget`), the cost
counted from the spikes the layers sow in the training forward pass itself (no second pass), so
that its gradient reaches the parameters through the surrogate gradient like the cross-entropy's:

- `"energy"`: E_SNN / E_ANN of Eqs. 11-12 for the batch, by the rules of `spike_energy`: each
  spiking layer's rate (Eq. 8) weighted by the FLOPs its spikes cause in the convolutions that read
  them (Eqs. 9, 10). The share of the Poisson input and of the layers that read analog values is
  the same whatever the parameters: it enters the cost, not its gradient.
- `"rate"`: the mean over the spiking layers of `relu(r - target_rate)^2`, where r is the layer's
  spikes per neuron per step over the batch: no cost up to the target, then a cost growing
  smoothly (a hinge on the mean rate of each layer, squared, as Spyx's sparsity regularizer).

With `warmup_steps`, the penalty rises linearly from 0 at the first step to lambda after that many
steps: the network learns its features before the budget presses on its spikes. A budget from the
first step pushes rates down while the cross-entropy has not yet found what the spikes should carry,
and neurons silenced then get little surrogate gradient to come back with. (At the paper's settings
it helped the `"rate"` weighting and not the `"energy"` one, whose cost falls on the first layers
whenever it presses: docs/results.md, "Trading accuracy for energy".)

Whatever the budget, a spiking network's step reports the batch's `energy_ratio` (E_ANN / E_SNN)
and its spikes per neuron over the T steps (Eq. 8), their mean over the layers and each layer's.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from snnseg_jax import spike_energy

WEIGHTINGS = ("energy", "rate")
# Spikes per neuron per step: about what the paper's E_ANN / E_SNN of 2.75 for Spiking-DeepLab
# implies (1.9 spikes per neuron over T = 20, FLOP-weighted).
DEFAULT_TARGET_RATE = 0.1
ENERGY_RATIO = "energy_ratio"
SPIKES_PER_NEURON = "spikes_per_neuron"  # mean over the layers; "spikes_per_neuron/<layer>" each layer's
PENALTY = "spike_penalty"  # the cost, reported where it is in the loss
PENALTY_WEIGHT = "spike_penalty_weight"  # lambda at the step, reported for a budget with a warm-up


@dataclasses.dataclass(frozen=True)
class SpikeBudget:
    """The spike term of the loss: `penalty` (lambda) times the cost of `weighting` (one of `WEIGHTINGS`)."""

    penalty: float = 0.0
    weighting: str = "energy"
    target_rate: float = DEFAULT_TARGET_RATE  # "rate": spikes per neuron per step above which it costs
    warmup_steps: int = 0  # steps over which lambda rises linearly from 0 (0: lambda from the first step)

    def __post_init__(self):
        fine = self.penalty >= 0 and 0 <= self.target_rate <= 1 and self.warmup_steps >= 0
        if self.weighting not in WEIGHTINGS or not fine:
            raise ValueError(
                f"bad spike budget {self}: need penalty >= 0, weighting in {WEIGHTINGS}, rate in [0, 1], warmup >= 0"
            )

    def coefficient(self, step: jax.Array | int) -> jax.Array | float:
        """Lambda at training `step` (counted from 0): `penalty`, ramped over the first `warmup_steps`."""
        if not self.warmup_steps:
            return self.penalty
        return self.penalty * jnp.minimum(step / self.warmup_steps, 1.0)


NO_BUDGET = SpikeBudget()  # the default: no spike term in the loss


def budget_of(config: ml_collections.ConfigDict) -> SpikeBudget:
    """The spike budget of `config.spikes`."""
    s = config.spikes
    return SpikeBudget(float(s.penalty), s.weighting, float(s.target_rate), int(s.warmup_steps))


def batch_rates(activity: dict[str, jax.Array], inputs: jax.Array, timesteps: int) -> dict[str, jax.Array]:
    """`spike_energy.rates_per_image` averaged over the batch (scalars)."""
    return {name: rates.mean() for name, rates in spike_energy.rates_per_image(activity, inputs, timesteps).items()}


def energy_cost(model: nn.Module, variables: dict, inputs: jax.Array, rates: dict[str, jax.Array]) -> jax.Array:
    """E_SNN / E_ANN (Eqs. 11-12) of `model` (with `variables`, or only their shapes) at the batch `rates`."""
    layers = spike_energy.conv_layers(model)
    flops = spike_energy.layer_flops(model, variables, inputs.shape[1:])
    e_ann, e_snn = spike_energy.energies(spike_energy.layer_energies(layers, flops, rates, model.settings.timesteps))
    return e_snn / e_ann


def rate_cost(rates: dict[str, jax.Array], timesteps: int, target_rate: float) -> jax.Array:
    """Mean over the layers of `rates` (spikes per neuron over `timesteps` steps) of
    relu(spikes per neuron per step - `target_rate`)^2."""
    excess = [jax.nn.relu(rate / timesteps - target_rate) ** 2 for rate in rates.values()]
    return jnp.mean(jnp.stack(excess))


def spike_term(
    model: nn.Module,
    variables: dict,
    inputs: jax.Array,
    activity: dict[str, jax.Array],
    budget: SpikeBudget,
    step: jax.Array | int,
) -> tuple[jax.Array | None, dict[str, jax.Array]]:
    """The term `lambda * cost` that the loss adds at training `step` (None for a zero penalty) and the
    batch's spike statistics, from the `activity` that a training forward pass of `model` sowed on
    `inputs`. With a warm-up, the statistics hold the step's lambda (`PENALTY_WEIGHT`)."""
    timesteps = model.settings.timesteps
    rates = batch_rates(activity, inputs, timesteps)
    energy = energy_cost(model, variables, inputs, rates)
    layer_rates = {name: rate for name, rate in rates.items() if name != spike_energy.INPUT}
    statistics = {
        ENERGY_RATIO: 1 / energy,
        SPIKES_PER_NEURON: jnp.mean(jnp.stack(list(layer_rates.values()))),
        **{f"{SPIKES_PER_NEURON}/{name}": rate for name, rate in layer_rates.items()},
    }
    if not budget.penalty:
        return None, statistics
    cost = energy if budget.weighting == "energy" else rate_cost(layer_rates, timesteps, budget.target_rate)
    coefficient = budget.coefficient(step)
    ramp = {PENALTY_WEIGHT: coefficient} if budget.warmup_steps else {}
    return coefficient * cost, {**statistics, PENALTY: cost, **ramp}
