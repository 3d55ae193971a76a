"""Shared test helpers: running the data-preparation command line as a user would; random model variables.

The tests' networks are tiny, so compiling them takes most of the run's time. Two settings, for
this process and the `train.py` / `evaluate.py` processes the tests start (they inherit the
environment), make that cheaper without changing what is computed:
- XLA's LLVM backend optimizes at level 0 (`--xla_backend_optimization_level=0`): about half the
  compile time of a train step, slower machine code; the HLO passes, fusion and results' semantics
  are XLA's usual ones (the benchmarks and real runs keep the default level);
- one persistent XLA compilation cache for the whole run (a temporary directory, unless
  JAX_COMPILATION_CACHE_DIR is set): many of the processes compile the same networks. An entry is
  looked up by the program, the compile options and the XLA flags, so a hit runs the same executable.
One more keeps the tests' tolerances (down to rtol 1e-6) meaningful on a GPU or TPU: float32 matrix
products and convolutions at full float32 precision (`jax_default_matmul_precision=highest`),
where JAX's default would take TF32 on recent GPUs and bfloat16 passes on TPUs. CPUs compute in
float32 either way.
"""

import atexit
import functools
import os
import runpy
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

# Before jax is imported, which reads both.
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()
os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="snnseg-tests-xla-cache-")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)

import jax  # noqa: E402  (after XLA_FLAGS, the precision and the cache directory are set)
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from absl import flags
from ml_collections import config_flags

REPO = Path(__file__).resolve().parents[1]


def _run_prepare(config: str, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "snnseg_jax.data.prepare", f"--config={REPO / config}", *overrides],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def run_prepare():
    """`run_prepare(config, *overrides)`: `python -m snnseg_jax.data.prepare`, output captured."""
    return _run_prepare


def random_variables(model, input_shape, seed=0):
    """Variables of `model` for inputs `[1, *input_shape]`, drawn in numpy (no compilation, unlike
    `model.init`): kernels with the variance of the Xavier gain-2 initialization, scales 1, biases
    and running means 0, running variances 1."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(
        lambda x: model.init({"params": jax.random.PRNGKey(0), "spikes": jax.random.PRNGKey(0)}, x, train=False),
        jax.ShapeDtypeStruct((1, *input_shape), jnp.float32),
    )

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


def lively_variables(model, input_shape, seed=0):
    """`random_variables` with BNTT running statistics drawn so that the layers spike, but not always."""
    variables = random_variables(model, input_shape, seed)
    draws = {"mean": (-0.5, 0.0), "var": (0.1, 0.5)}

    def draw(batch_stats):  # compiled once: op by op, each leaf's shape would compile its own draw
        keys = iter(jax.random.split(jax.random.PRNGKey(seed + 1), 256))
        return jax.tree_util.tree_map_with_path(
            lambda path, v: jax.random.uniform(
                next(keys), v.shape, minval=draws[path[-1].key][0], maxval=draws[path[-1].key][1]
            ),
            batch_stats,
        )

    return {"params": variables["params"], "batch_stats": jax.jit(draw)(variables["batch_stats"])}


def read_events(workdir) -> list[tuple[str, int, object]]:
    """(tag, step, value) of every summary in the TensorBoard event files of `workdir`, in file order:
    scalars as floats, images as their PNG bytes. A record cut short at the end of a file is left out.

    Reads the files' TFRecord framing (length, its CRC, the Event, its CRC) without checking CRCs.
    """
    from tensorboardX.proto import event_pb2

    found = []
    for name in sorted(n for n in os.listdir(workdir) if n.startswith("events.out.tfevents.")):
        data = Path(workdir, name).read_bytes()
        at = 0
        while at + 12 <= len(data):
            (length,) = struct.unpack("<Q", data[at : at + 8])
            if at + 12 + length + 4 > len(data):
                break
            event = event_pb2.Event.FromString(data[at + 12 : at + 12 + length])
            at += 12 + length + 4
            for value in event.summary.value:
                found.append(
                    (
                        value.tag,
                        event.step,
                        value.image.encoded_image_string if value.HasField("image") else value.simple_value,
                    )
                )
    return found


def as_in_this_process(script, arguments, monkeypatch, capsys) -> subprocess.CompletedProcess:
    """`python <script> *arguments` run in this process: the script's own flag definitions (on flags
    of their own) and `main`, through `cli.run`, from the repository root; its exit status, stdout and
    stderr as `subprocess.run` gives them. An exception that `cli.run` lets through (a traceback in the
    real command) fails the test."""
    from snnseg_jax import cli, formulations

    own_flags = flags.FlagValues()
    with pytest.MonkeyPatch.context() as defining:
        for module, name in [(flags, n) for n in ("DEFINE_string", "DEFINE_list", "mark_flags_as_required")] + [
            (config_flags, "DEFINE_config_file")
        ]:
            defining.setattr(module, name, functools.partial(getattr(module, name), flag_values=own_flags))
        main = runpy.run_path(str(REPO / script))["main"]
    argv = [script, *arguments]
    monkeypatch.setattr(flags, "FLAGS", own_flags)
    monkeypatch.setattr(sys, "argv", argv)  # where ml_collections reads the --config.<field> overrides
    monkeypatch.chdir(REPO)
    # Settings of the process (malloc, XLA_FLAGS) that the commands make: not this one's to change.
    monkeypatch.setattr(formulations, "keep_freed_memory", lambda: False)
    monkeypatch.setattr(formulations, "deterministic_gpu_ops", lambda: False)
    # ml_collections loads the config file as module "config_config" into the module it finds there, if any:
    # a fresh one, as in a new process (else a file without get_config() would keep the last one's).
    monkeypatch.delitem(sys.modules, "config_config", raising=False)
    capsys.readouterr()
    try:
        cli.run(main, argv)
        status = 0
    except SystemExit as stop:
        status = stop.code
    finally:
        sys.modules.pop("config_config", None)
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess([script, *arguments], status, out, err)


def saved_state(workdir, step) -> dict:
    """The train state checkpointed at `step` in `workdir`, flat, read onto this process's first device
    whatever devices or processes saved it."""
    path, checkpointer = os.path.join(workdir, "checkpoints", str(step), "state"), ocp.StandardCheckpointer()
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device),
        checkpointer.metadata(path).item_metadata,
    )
    return ocp.tree.to_flat_dict(checkpointer.restore(path, target))
