"""The optimizer: Adam with the paper's step decay of the learning rate and the released code's L2
weight decay."""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
import optax


def make_optimizer(config: ml_collections.ConfigDict, steps: int) -> optax.GradientTransformation:
    """Adam with L2 weight decay, its learning rate multiplied by `lr_decay_factor` after `lr_decay_at`
    of `steps`.

    The decay is the authors' released code's: `weight_decay * params` added to the gradient before
    Adam's moments, as PyTorch's `Adam(weight_decay=...)` does; not AdamW's decoupled decay. It
    applies to the parameters `weight_decay_scope` names (`decays`). The state is plain Adam's
    whatever the two settings, so checkpoints restore under any of them, and with `weight_decay` 0
    the optimizer is plain Adam.
    """
    adam = optax.adam(learning_rate_schedule(config, steps))
    weight_decay, scope = config.weight_decay, config.weight_decay_scope

    def update(grads: Any, state: Any, params: Any = None) -> tuple[Any, Any]:
        if weight_decay:
            if params is None:
                raise ValueError("weight decay needs the parameters: call update(grads, state, params)")
            grads = jax.tree.map(
                lambda g, p, decayed: g + weight_decay * p if decayed else g, grads, params, decays(params, scope)
            )
        return adam.update(grads, state, params)

    return optax.GradientTransformation(adam.init, update)


WEIGHT_DECAY_SCOPES = ("kernels", "all")


def decays(params: Any, scope: str) -> Any:
    """Per parameter, whether weight decay applies: `scope` "kernels", the convolution kernels only;
    "all", every parameter, BNTT and BatchNorm scales and biases too (the released code's).

    "kernels" is the default because under Adam coupled L2 silences a spiking network. Adam divides
    each update by the root mean square of its gradient, so where the loss gradient is small next to
    `weight_decay * param` a parameter moves by about the learning rate per step whatever its size.
    BNTT scales start at 1 and reach 0 within a few hundred steps at 3e-3. A neuron's threshold is
    fixed, so small scales silence the layer, and a silent layer gets no surrogate gradient to recover
    with (on the shapes demo, Spiking-DeepLab's loss sticks at ln 5 from step 325). Under the released
    code's SGD at 1e-3 the same decay shrinks a scale by a factor 1 - 5e-7 per step, harmlessly.
    """
    return jax.tree_util.tree_map_with_path(lambda path, _: scope == "all" or path[-1].key == "kernel", params)


def learning_rate_schedule(config: ml_collections.ConfigDict, steps: int) -> optax.Schedule:
    """`learning_rate`, multiplied by `lr_decay_factor` from step `lr_decay_at * steps` on."""
    return optax.piecewise_constant_schedule(
        config.learning_rate, {int(round(config.lr_decay_at * steps)): config.lr_decay_factor}
    )
