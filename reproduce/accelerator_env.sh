# Sourced by benchmarks/gpu_check.sh and reproduce/gpu_first_look.sh (from the repository root): which device JAX uses,
# exactly one of them, a persistent compilation cache, and the sizes of the benchmarked step.
#
#   GPU_CHECK_DEVICE   cuda (default), tpu, or cpu to rehearse on a machine without an accelerator
#   GPU_CHECK_BATCH, GPU_CHECK_TIMESTEPS, GPU_CHECK_SIZE, GPU_CHECK_WIDTH   the step's sizes
#                      (default: the paper's network at batch 16: 16, 20, 64, 1.0)
#   PYTHON             the interpreter that runs everything (default: python3 from PATH), e.g. a
#                      virtual environment's bin/python, which then needs no activating
#
# JAX_PLATFORMS makes JAX fail instead of falling back to the CPU when it finds no such device;
# `check_devices` prints `jax.devices()` and fails unless they are of the platform asked for. One
# device (CUDA_VISIBLE_DEVICES=0, or one TPU chip): the PyTorch reference runs on one, and the
# benchmark would otherwise split its batch over all of them. XLA's compilation cache persists in
# JAX_COMPILATION_CACHE_DIR (default ~/.cache/snnseg_jax/xla), so that a rerun compiles nothing.

PYTHON=${PYTHON:-python3}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
BATCH=${GPU_CHECK_BATCH:-16}
TIMESTEPS=${GPU_CHECK_TIMESTEPS:-20}
SIZE=${GPU_CHECK_SIZE:-64}
WIDTH=${GPU_CHECK_WIDTH:-1.0}
export JAX_PLATFORMS=$DEVICE
export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}
if [ "$DEVICE" = tpu ]; then
  export TPU_VISIBLE_CHIPS=${TPU_VISIBLE_CHIPS:-0} TPU_CHIPS_PER_PROCESS_BOUNDS=${TPU_CHIPS_PER_PROCESS_BOUNDS:-1,1,1}
  export TPU_PROCESS_BOUNDS=${TPU_PROCESS_BOUNDS:-1,1,1}
fi
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$HOME/.cache/snnseg_jax/xla}
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=${JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS:-0}
export PYTHONPATH=$PWD:${PYTHONPATH:-}
OURS=("$PYTHON" -m snnseg_jax.benchmark --config configs/voc_deeplab.py --config.batch_size="$BATCH"
      --config.model.timesteps="$TIMESTEPS" --config.dataset.image_size="$SIZE" --config.model.width="$WIDTH")

# check_devices FILE: prints jax.devices() (also into FILE); fails unless they are $DEVICE devices.
check_devices() {
  "$PYTHON" - "$DEVICE" "$1" <<'PY'
import sys
expected, path = sys.argv[1], sys.argv[2]
try:
    import jax
    devices = jax.devices()
except Exception as error:  # JAX_PLATFORMS names a platform this JAX cannot start
    sys.exit(f"JAX found no {expected} device: {error}")
line = f"jax {jax.__version__}, backend {jax.default_backend()}: {devices}"
print(line)
open(path, "w").write(line + "\n")
platform = {"cuda": "gpu"}.get(expected, expected)
if jax.default_backend() != platform or len(devices) != 1:
    sys.exit(f"expected one {expected} device, JAX sees {devices}: refusing to measure anything else "
             f"(install jax[cuda12], jax[cuda13] or jax[tpu]; GPU_CHECK_DEVICE=cpu rehearses on the CPU)")
PY
}
