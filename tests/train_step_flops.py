"""Prints, as JSON, the FLOPs each device runs in the compiled train step on 1 device and on 2.

Run by `test_sharding.py` in a process with 2 simulated CPU devices (the tiny Spiking-DeepLab of its
end-to-end runs, global batch 4); compiles only, executes nothing.
"""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from configs import shapes_deeplab
from snnseg_jax import experiment, models, optimization, sharding, steps


def flops_per_device(devices: int) -> float:
    config = shapes_deeplab.get_config()
    model = models.build("spiking_deeplab", num_classes=5, timesteps=2, width=0.125)
    optimizer = optimization.make_optimizer(config, 10)
    init = functools.partial(experiment.init_state, model, optimizer, (16, 16, 3), jax.random.PRNGKey(0))
    state = jax.eval_shape(init)
    batch = {
        "inputs": jax.ShapeDtypeStruct((4, 16, 16, 3), jnp.float32),
        "labels": jax.ShapeDtypeStruct((4, 16, 16), jnp.uint8),
    }
    mesh = Mesh(np.array(jax.devices()[:devices]), ("data",))
    replicated = sharding.replicated(mesh)
    step = jax.jit(
        functools.partial(steps.train_step, model=model, optimizer=optimizer),
        in_shardings=(replicated, sharding.batch_sharding(mesh), replicated),
        out_shardings=(replicated, replicated),
    )
    return step.lower(state, batch, jax.random.PRNGKey(1)).compile().cost_analysis()["flops"]


if __name__ == "__main__":
    print(json.dumps({devices: flops_per_device(devices) for devices in (1, 2)}))
