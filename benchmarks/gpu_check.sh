#!/usr/bin/env bash
# GPU check (issue 7, part 5): our train-step benchmark at the paper config with batch 16, then the
# PyTorch reference (the authors' loop style) on the same GPU, one after the other, in under 5 minutes.
#
#   benchmarks/gpu_check.sh [path/to/torch_reference.py]      (default: $TORCH_REFERENCE or bench/torch_reference.py)
#
# Results go to $OUT/gpu_check/ when OUT is set (else ./gpu_check_results/): the logs, one JSON per
# run and summary.json; the last stdout line is the summary. ml_collections is installed from the
# wheels in .whl/ when that folder exists. Rehearsal without a GPU, with tiny settings:
#   GPU_CHECK_DEVICE=cpu GPU_CHECK_BATCH=1 GPU_CHECK_TIMESTEPS=2 GPU_CHECK_SIZE=32 GPU_CHECK_WIDTH=0.125 benchmarks/gpu_check.sh ...
set -uo pipefail
cd "$(dirname "$0")/.."

REFERENCE=${1:-${TORCH_REFERENCE:-bench/torch_reference.py}}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
BATCH=${GPU_CHECK_BATCH:-16}
TIMESTEPS=${GPU_CHECK_TIMESTEPS:-20}
SIZE=${GPU_CHECK_SIZE:-64}
WIDTH=${GPU_CHECK_WIDTH:-1.0}
BUDGET=${GPU_CHECK_BUDGET_SECONDS:-280}  # all runs together; each gets at most what is left
RESULTS=${OUT:+$OUT/gpu_check}
RESULTS=${RESULTS:-gpu_check_results}
START=$SECONDS
mkdir -p "$RESULTS"
log() { echo "[gpu_check +$((SECONDS - START))s] $*" | tee -a "$RESULTS/log.txt" >&2; }
left() { echo $((BUDGET - (SECONDS - START))); }

if [ ! -f "$REFERENCE" ]; then
  log "no torch reference at $REFERENCE (pass its path as the first argument or TORCH_REFERENCE)"; exit 2
fi
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
if [ "$DEVICE" = cpu ]; then export JAX_PLATFORMS=cpu; fi
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

OURS=(python3 -m snnseg_jax.benchmark --config configs/voc_deeplab.py --config.batch_size="$BATCH"
      --config.model.timesteps="$TIMESTEPS" --config.dataset.image_size="$SIZE" --config.model.width="$WIDTH")
run jax_float32 $(( $(left) > 150 ? 150 : $(left) )) "${OURS[@]}"
run torch_loop $(( $(left) > 100 ? 100 : $(left) )) python3 benchmarks/torch_on_cuda.py "$REFERENCE" --device "$DEVICE" \
    --styles loop --batch "$BATCH" --timesteps "$TIMESTEPS" --size "$SIZE" --width "$WIDTH" --steps 3
run jax_bfloat16 $(( $(left) - 10 )) "${OURS[@]}" --config.model.dtype=bfloat16  # only if time is left

python3 - "$RESULTS" <<'PY' | tee "$RESULTS/summary.json"
import json, sys
results = sys.argv[1]
def load(name):
    try:
        return json.loads(open(f"{results}/{name}.json").read())
    except (OSError, ValueError):
        return None
ours, bf16, torch = load("jax_float32"), load("jax_bfloat16"), load("torch_loop")
summary = {"device": open(f"{results}/device.txt").read().strip(), "jax_float32": ours, "jax_bfloat16": bf16, "torch_loop": torch}
if ours and torch:
    summary["train_step_ratio_float32_vs_torch_loop"] = ours["train_step_seconds"] / torch["train_step_seconds"]
if bf16 and torch:
    summary["train_step_ratio_bfloat16_vs_torch_loop"] = bf16["train_step_seconds"] / torch["train_step_seconds"]
print(json.dumps(summary))
PY
log "done in $((SECONDS - START))s; results in $RESULTS"
