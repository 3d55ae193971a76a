"""Shared test helpers: running the data-preparation command line as a user would; random model variables."""

import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _run_prepare(config: str, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snnseg_jax.data.prepare", f"--config={REPO / config}",
                           *overrides], cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.fixture
def run_prepare():
    """`run_prepare(config, *overrides)`: `python -m snnseg_jax.data.prepare`, output captured."""
    return _run_prepare


def random_variables(model, input_shape, seed=0):
    """Variables of `model` for inputs `[1, *input_shape]`, drawn in numpy (no compilation, unlike
    `model.init`): kernels with the variance of the Xavier gain-2 initialization, scales 1, biases
    and running means 0, running variances 1."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda x: model.init({"params": jax.random.PRNGKey(0), "spikes": jax.random.PRNGKey(0)},
                                                 x, train=False), jax.ShapeDtypeStruct((1, *input_shape), jnp.float32))

    def draw(path, leaf):
        name = path[-1].key
        if name == "kernel":
            fan_in, fan_out = np.prod(leaf.shape[:-1]), np.prod(leaf.shape[:-2]) * leaf.shape[-1]
            return jnp.asarray(rng.normal(0, np.sqrt(8 / (fan_in + fan_out)), leaf.shape), leaf.dtype)
        return jnp.full(leaf.shape, 1.0 if name in ("scale", "var") else 0.0, leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, shapes)


@pytest.fixture(name="random_variables")
def random_variables_fixture():
    return random_variables
