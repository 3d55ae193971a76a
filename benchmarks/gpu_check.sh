#!/usr/bin/env bash
# GPU check: our train step on one GPU (refusing to run on anything else), in float32, with the
# dilation-12 fc6 convolution both ways (XLA's, and summing only its in-bounds taps), and in
# bfloat16; then the PyTorch reference (the authors' loop style) on the same GPU.
#
#   benchmarks/gpu_check.sh [path/to/torch_reference.py]      (default: $TORCH_REFERENCE or reproduce/torch_reference.py)
#
# Settings (interpreter, device, sizes, compilation cache): reproduce/accelerator_env.sh. Results go to
# $OUT/gpu_check/ when OUT is set (else runs/gpu_check/): devices.txt (jax.devices()), the
# logs, one JSON per run and summary.json; the last stdout line is the summary. It stops with
# status 3 before measuring anything when JAX sees no GPU. Rehearsal without a GPU, tiny sizes:
#   GPU_CHECK_DEVICE=cpu GPU_CHECK_BATCH=1 GPU_CHECK_TIMESTEPS=2 GPU_CHECK_SIZE=32 GPU_CHECK_WIDTH=0.125 benchmarks/gpu_check.sh ...
set -uo pipefail
cd "$(dirname "$0")/.."
source reproduce/accelerator_env.sh

REFERENCE=${1:-${TORCH_REFERENCE:-reproduce/torch_reference.py}}
BUDGET=${GPU_CHECK_BUDGET_SECONDS:-420}  # all runs together; each gets at most what is left
RESULTS=${OUT:+$OUT/gpu_check}
RESULTS=${RESULTS:-runs/gpu_check}
START=$SECONDS
mkdir -p "$RESULTS"
log() { echo "[gpu_check +$((SECONDS - START))s] $*" | tee -a "$RESULTS/log.txt" >&2; }
left() { echo $((BUDGET - (SECONDS - START))); }

devices=$(check_devices "$RESULTS/devices.txt" 2>&1); found=$?
log "devices: $devices"
if [ $found -ne 0 ]; then log "not one $DEVICE device: stopping before measuring anything"; exit 3; fi
if [ ! -f "$REFERENCE" ]; then
  log "no torch reference at $REFERENCE (pass its path as the first argument or TORCH_REFERENCE)"; exit 2
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"; } > "$RESULTS/device.txt"
log "device: $(cat "$RESULTS/device.txt"); batch $BATCH, T=$TIMESTEPS, ${SIZE}x${SIZE}, width $WIDTH"

# run NAME SECONDS COMMAND...: runs with a time limit, keeps its output, its last line as NAME.json.
run() {
  local name=$1 limit=$2; shift 2
  if [ "$limit" -lt 30 ]; then log "$name skipped: ${limit}s left"; return 1; fi
  log "$name (at most ${limit}s): $*"
  timeout "$limit" "$@" > "$RESULTS/$name.log" 2>&1
  local status=$?
  tail -n 1 "$RESULTS/$name.log" > "$RESULTS/$name.json"
  log "$name exit $status: $(cat "$RESULTS/$name.json")"
  return $status
}

TORCH_DEVICE=$([ "$DEVICE" = cpu ] && echo cpu || echo cuda)
run jax_float32 $(( $(left) > 150 ? 150 : $(left) )) "${OURS[@]}"
run torch_loop $(( $(left) > 90 ? 90 : $(left) )) "$PYTHON" -m reproduce.torch_on_cuda "$REFERENCE" --device "$TORCH_DEVICE" \
    --styles loop --batch "$BATCH" --timesteps "$TIMESTEPS" --size "$SIZE" --width "$WIDTH" --steps 3
# fc6 both ways: the step as it is ("all", compiled above, from the cache) and with conv_in_bounds_taps.
run jax_fc6_in_bounds $(( $(left) > 120 ? 120 : $(left) )) "${OURS[@]}" --ablate_tuning --ablate=conv_in_bounds_taps \
    --repeats=5 ${GPU_CHECK_TUNING_BACKEND:+--tuning_backend=$GPU_CHECK_TUNING_BACKEND}
run jax_bfloat16 $(( $(left) - 10 )) "${OURS[@]}" --config.model.dtype=bfloat16  # only if time is left

"$PYTHON" - "$RESULTS" <<'PY' | tee "$RESULTS/summary.json"
import json, sys
results = sys.argv[1]
def load(name):
    try:
        return json.loads(open(f"{results}/{name}.json").read())
    except (OSError, ValueError):
        return None
ours, bf16, torch, fc6 = load("jax_float32"), load("jax_bfloat16"), load("torch_loop"), load("jax_fc6_in_bounds")
summary = {"devices": open(f"{results}/devices.txt").read().strip(), "device": open(f"{results}/device.txt").read().strip(),
           "jax_float32": ours, "jax_bfloat16": bf16, "torch_loop": torch, "jax_fc6_in_bounds": fc6}
if ours and torch:
    summary["train_step_ratio_float32_vs_torch_loop"] = ours["train_step_seconds"] / torch["train_step_seconds"]
if bf16 and torch:
    summary["train_step_ratio_bfloat16_vs_torch_loop"] = bf16["train_step_seconds"] / torch["train_step_seconds"]
if fc6:  # > 1: summing fc6's in-bounds taps is slower here than XLA's convolution
    summary["train_step_ratio_fc6_in_bounds_vs_xla"] = {row["variant"]: row["ratio_best"] for row in fc6}
print(json.dumps(summary))
PY
log "done in $((SECONDS - START))s; results in $RESULTS"
